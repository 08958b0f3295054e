// The profile form (templates/servers/form.html): shows only the options the chosen engine takes,
// and picking a model picks the engine that fits it (the #model-engines map of the models on this
// machine's disk, servers/forms.py). A chat server (text, vision) takes the options marked
// data-chat-only (CHAT_ONLY_FIELDS); of those, the ones marked data-text-only (TEXT_ONLY_FIELDS)
// only the text engine's mlx_lm.server takes. An embeddings or speech-to-text server takes none.
// The engine left blank ("the model's own") is the one that fits the chosen model, else text.
(function () {
  "use strict";

  var CHAT_ENGINES = ["text", "vision"];

  function setUp() {
    var select = document.getElementById("id_engine");
    if (!select) return;
    var model = document.getElementById("id_model_id");
    var mapNode = document.getElementById("model-engines");
    var fits = mapNode ? JSON.parse(mapNode.textContent) : {};

    function shown() {
      return select.value || (model && fits[model.value]) || "text";
    }

    function update(keepErrors) {
      var engine = shown();
      var chats = CHAT_ENGINES.indexOf(engine) !== -1;
      document.querySelectorAll("[data-chat-only]").forEach(function (node) {
        var hide = !chats || (node.hasAttribute("data-text-only") && engine !== "text");
        // On load, a field the server refused stays in view (a vision profile's draft model).
        if (hide && keepErrors && node.querySelector(".field-error")) return;
        node.hidden = hide;
      });
    }

    select.addEventListener("change", function () { update(false); });
    if (model) {
      model.addEventListener("change", function () {
        var engine = fits[model.value];
        if (engine && select.value && select.querySelector('option[value="' + engine + '"]')) {
          select.value = engine;
        }
        update(false);
      });
    }
    update(true);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
})();

// The profile form (templates/servers/form.html): shows only the fields the chosen engine takes
// (inputs marked data-engines="text …", servers/forms.py ENGINE_ONLY_FIELDS), and picking a model
// picks the engine that fits it (the #model-engines map, read from the models on disk).
(function () {
  "use strict";
  function setUp() {
    var engine = document.getElementById("id_engine");
    var model = document.getElementById("id_model_id");
    if (!engine) return;
    var mapNode = document.getElementById("model-engines");
    var engines = mapNode ? JSON.parse(mapNode.textContent) : {};
    function show() {
      document.querySelectorAll("[data-engines]").forEach(function (input) {
        var field = input.closest(".field");
        if (!field) return;
        field.hidden = input.dataset.engines.split(" ").indexOf(engine.value) === -1;
      });
    }
    engine.addEventListener("change", show);
    if (model) {
      model.addEventListener("change", function () {
        var fits = engines[model.value];
        if (fits && engine.querySelector('option[value="' + fits + '"]')) {
          engine.value = fits;
          show();
        }
      });
    }
    show();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
})();

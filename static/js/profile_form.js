// Profile form: show only the options the chosen engine takes. A chat server (text, vision)
// takes mlx_lm.server's options; an embeddings or speech-to-text server takes none of them
// (servers/forms.py CHAT_ONLY_FIELDS, marked data-chat-only).
(function () {
  "use strict";

  var CHAT_ENGINES = ["text", "vision"];

  function update(select) {
    var chats = CHAT_ENGINES.indexOf(select.value) !== -1;
    document.querySelectorAll("[data-chat-only]").forEach(function (field) {
      field.hidden = !chats;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var select = document.getElementById("id_engine");
    if (!select) return;
    select.addEventListener("change", function () { update(select); });
    update(select);
  });
})();

// Servers pages: copy a failure's log tail; keep the live log scrolled to its end.
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
      done();
    }
  });

  // Autoscroll: follow the end of the log unless the reader scrolled up.
  var follow = new WeakMap();
  document.addEventListener("htmx:beforeSwap", function (event) {
    var el = event.detail.target;
    if (!el || !el.hasAttribute("data-autoscroll")) return;
    follow.set(el, el.scrollHeight - el.scrollTop - el.clientHeight < 40);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var el = event.detail.target;
    if (!el || !el.hasAttribute("data-autoscroll")) return;
    if (follow.get(el) !== false) el.scrollTop = el.scrollHeight;
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-autoscroll]").forEach(function (el) {
      el.scrollTop = el.scrollHeight;
    });
  });
})();

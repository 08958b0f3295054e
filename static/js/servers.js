// Servers pages: copy a failure's log tail; keep the live log scrolled to its end; tell the
// tiles poll which version of the tiles the page shows.
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

  // The tiles poll (and the filter) send the version of the tiles on the page; the server
  // answers 204 No Content, which htmx does not swap, while that is still the version
  // (servers/tiles.py). A tile that a button replaced on its own is newer than that version:
  // forget it, so the next poll brings the whole set again.
  document.addEventListener("htmx:configRequest", function (event) {
    var tiles = document.getElementById("server-tiles");
    if (!tiles) return;
    var shown = tiles.querySelector("[data-tiles-version]");
    if (!shown) return;
    if (event.detail.target === tiles) {
      var version = shown.getAttribute("data-tiles-version");
      if (version) event.detail.headers["X-Tiles-Version"] = version;
    } else if (tiles.contains(event.detail.elt)) {
      shown.setAttribute("data-tiles-version", "");
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

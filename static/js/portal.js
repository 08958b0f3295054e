// What every page does that the Content-Security-Policy keeps out of the markup (no inline
// handlers, no htmx filter evaluated as JavaScript):
// - a form with data-confirm="Question?" asks before it is sent;
// - an element with data-poll-visible skips its htmx poll while the tab is hidden.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
  });

  document.addEventListener("htmx:confirm", function (event) {
    var elt = event.detail.elt;
    if (document.hidden && elt && elt.hasAttribute("data-poll-visible")) event.preventDefault();
  });
})();

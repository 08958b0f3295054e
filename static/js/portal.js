// What every page does that the Content-Security-Policy keeps out of the markup (no inline
// handlers, no htmx filter evaluated as JavaScript):
// - a form with data-confirm="Question?" asks before it is sent;
// - an element with data-poll-visible skips its htmx poll while the tab is hidden;
// - a link with data-clear-filters resets its form's `.filters` (boxes unticked, radios back
//   to their empty choice) and tells htmx with one change event: the search runs again with
//   its text kept. Without JavaScript it is a plain link to the unfiltered page.
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

  document.addEventListener("click", function (event) {
    var link = event.target.closest("[data-clear-filters]");
    var filters = link && link.closest("form") && link.closest("form").querySelector(".filters");
    if (!filters) return;
    event.preventDefault();
    var changed = null;
    filters.querySelectorAll("input[type=checkbox]:checked").forEach(function (box) {
      box.checked = false;
      changed = box;
    });
    filters.querySelectorAll('input[type=radio][value=""]:not(:checked)').forEach(function (radio) {
      radio.checked = true;
      changed = radio;
    });
    if (changed) changed.dispatchEvent(new Event("change", { bubbles: true }));
  });
})();

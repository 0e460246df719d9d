// Small form behaviours, declared with attributes instead of inline handlers (the pages'
// Content-Security-Policy runs no inline script): data-autosubmit submits a field's form when it
// changes; data-select-on-focus selects a read-only field's text (a key or link to copy).
// Delegated from `document`, so fragments htmx swaps in behave the same.
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    const field = event.target.closest && event.target.closest("[data-autosubmit]");
    if (field && field.form) field.form.requestSubmit();
  });
  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("[data-select-on-focus]")) event.target.select();
  });
})();

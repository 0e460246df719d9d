// Task pages (demonstration and ranking): time spent, Ctrl+Enter, no double submit.
// Time is counted while the page is open and kept per lease in sessionStorage, so a reload
// does not reset it; it is sent as time_spent_ms with the form.
(function () {
  "use strict";
  const form = document.getElementById("task-form");
  if (!form) return;
  const key = "instructloop-time-" + form.dataset.lease;
  const earlier = Number(sessionStorage.getItem(key) || 0);
  const openedAt = performance.now();
  const spent = () => Math.max(1, Math.round(earlier + performance.now() - openedAt));

  window.addEventListener("pagehide", function () {
    sessionStorage.setItem(key, String(spent()));
  });

  let sent = false;
  // On `document`, so that it runs after the page's own check on the form (ranking.js,
  // comparison.js): a submit that check refused must not count as sent, or the next try is
  // swallowed.
  document.addEventListener("submit", function (event) {
    if (event.target !== form || event.defaultPrevented) return;
    if (sent) {
      event.preventDefault(); // the server is idempotent too; this only spares a request
      return;
    }
    sent = true;
    form.elements.time_spent_ms.value = String(spent());
    sessionStorage.removeItem(key);
    const button = form.querySelector("[type=submit]");
    if (button) button.setAttribute("aria-busy", "true");
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
})();

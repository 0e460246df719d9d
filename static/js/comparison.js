// The blind A/B page: 1 and 2 choose side A or B (a, b, t and x are data-key labels); Enter
// submits once a verdict is chosen, and says what to press when none is (our message, not the
// browser's bubble on the required radio).
(function () {
  "use strict";
  const form = document.getElementById("task-form");
  if (!form) return;
  form.noValidate = true;
  const message = document.getElementById("verdict-message");
  const sides = { 1: "a", 2: "b" };
  const chosen = () => form.querySelector("input[name=winner]:checked");
  form.addEventListener("submit", function (event) {
    if (chosen()) return;
    event.preventDefault();
    message.textContent = "Choose a verdict first: 1 or a (A is better), 2 or b, t (about the same) or x (both bad).";
    message.hidden = false;
  });
  form.addEventListener("change", function () {
    message.hidden = true;
  });
  document.addEventListener("keydown", function (event) {
    if (event.target.closest("input[type=text], textarea, details.skip, dialog")) return;
    const side = sides[event.key];
    if (side) {
      form.querySelector(`input[name=winner][value=${side}]`).checked = true;
      message.hidden = true;
    }
    if (event.key === "Enter" && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
})();

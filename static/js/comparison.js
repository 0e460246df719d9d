// The blind A/B page: 1 and 2 choose side A or B; Enter submits once a side is chosen.
(function () {
  "use strict";
  const form = document.getElementById("task-form");
  if (!form) return;
  const sides = { 1: "a", 2: "b" };
  document.addEventListener("keydown", function (event) {
    if (event.target.closest("input[type=text], textarea")) return;
    const side = sides[event.key];
    if (side) form.querySelector(`input[name=winner][value=${side}]`).checked = true;
    if (event.key === "Enter" && form.querySelector("input[name=winner]:checked")) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
})();

// Site-wide keyboard shortcuts. An element with data-key="x" is clicked when x is pressed
// (a <summary> opens its <details>); data-key-focus="x" focuses the element (a form: its first
// field) instead; in a list marked data-rows, j/k select a row and data-row-key="x" acts inside
// the selected row.
// Page scripts listen on `document` and call preventDefault() for keys they own; this one
// listens on `window`, so it runs after them and leaves those keys alone.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function typing(el) {
    if (!el) return false;
    // A dropdown inside [data-keys-through] (a ranking card's rating) leaves the page's keys on.
    if (el.tagName === "SELECT") return !el.closest("[data-keys-through]");
    if (el.isContentEditable || el.tagName === "TEXTAREA") return true;
    return el.tagName === "INPUT" && !["checkbox", "radio", "button", "submit"].includes(el.type);
  }

  function visible(el) {
    return !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  }

  function activate(el) {
    if (el.hasAttribute("data-key-focus")) {
      // On a form, its first field.
      const field =
        el.tagName === "FORM" ? el.querySelector("select, textarea, input:not([type=hidden])") : el;
      if (field) field.focus();
      return;
    }
    if (el.tagName === "SUMMARY") {
      const details = el.parentElement;
      details.open = !details.open;
      if (details.open) {
        const first = details.querySelector("input, select, textarea, button");
        if (first) first.focus();
      }
      return;
    }
    el.click();
  }

  function selectRow(step) {
    const rows = Array.from(document.querySelectorAll("[data-rows] [data-row]"));
    if (!rows.length) return false;
    let i = rows.findIndex((r) => r.classList.contains("selected"));
    rows.forEach((r) => r.classList.remove("selected"));
    i = Math.max(0, Math.min(rows.length - 1, (i < 0 ? 0 : i) + step));
    rows[i].classList.add("selected");
    rows[i].scrollIntoView({ block: "nearest" });
    return true;
  }

  function toggleHelp() {
    const help = document.getElementById("help");
    if (!help) return;
    if (help.open) help.close();
    else help.showModal();
  }

  window.addEventListener("keydown", function (event) {
    const ctrlForm = event.target.closest && event.target.closest("form[data-ctrl-enter]");
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && ctrlForm) {
      event.preventDefault();
      ctrlForm.requestSubmit();
      return;
    }
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (event.key === "Escape" && typing(target)) {
      target.blur();
      return;
    }
    if (typing(target)) return;
    if (event.key === "?") {
      event.preventDefault();
      toggleHelp();
      return;
    }
    if ((event.key === "j" || event.key === "k") && selectRow(event.key === "j" ? 1 : -1)) {
      event.preventDefault();
      return;
    }
    const selected = document.querySelector("[data-rows] [data-row].selected");
    const scoped = selected && selected.querySelector(`[data-row-key="${CSS.escape(event.key)}"]`);
    const el =
      scoped ||
      Array.from(
        document.querySelectorAll(
          `[data-key="${CSS.escape(event.key)}"], [data-key-focus="${CSS.escape(event.key)}"]`
        )
      ).find((candidate) => candidate.tagName === "SUMMARY" || visible(candidate));
    if (el && !(el.closest("dialog") && !el.closest("dialog").open)) {
      event.preventDefault();
      activate(el);
    }
  });

  document.addEventListener("click", function (event) {
    if (event.target.closest(".help-button")) toggleHelp();
  });
})();

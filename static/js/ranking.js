// The ranking form, driven by keyboard or drag and drop. The <form> itself is plain: one rank
// select, one Likert select and flag checkboxes per output. This script keeps the cards in
// best-to-worst order on screen and writes the ranks into the selects; equal ranks are ties
// (data-tied on a card = "same rank as the card above").
(function () {
  "use strict";
  const form = document.getElementById("task-form");
  const list = document.getElementById("rank-list");
  if (!form || !list) return;
  const message = document.getElementById("rank-message");
  const cards = () => Array.from(list.querySelectorAll(".rank-card"));
  const select = (card, what) => form.elements[what + "-" + card.dataset.cid];
  let flagMode = null;

  function ordinal(n) {
    return n + (n === 1 ? "st" : n === 2 ? "nd" : n === 3 ? "rd" : "th");
  }

  // Cards start in the order of their rank selects (shown order unless a form came back).
  cards()
    .map((card, i) => ({ card, rank: Number(select(card, "rank").value) || i + 1, i }))
    .sort((a, b) => a.rank - b.rank || a.i - b.i)
    .forEach((item, i, all) => {
      list.appendChild(item.card);
      if (i > 0 && all[i - 1].rank === item.rank) item.card.dataset.tied = "1";
    });

  function sync() {
    let rank = 0;
    cards().forEach((card, i) => {
      if (i === 0) delete card.dataset.tied;
      if (!card.dataset.tied) rank += 1;
      select(card, "rank").value = String(rank);
      const tied = card.dataset.tied || (card.nextElementSibling || {}).dataset?.tied;
      card.querySelector(".place").textContent = (tied ? "tied " : "") + ordinal(rank);
      card.classList.toggle("tied", !!card.dataset.tied);
    });
  }

  function focused() {
    return document.activeElement && document.activeElement.closest(".rank-card");
  }

  function focusCard(card) {
    if (!card) return;
    card.focus();
    card.scrollIntoView({ block: "nearest" });
  }

  function move(card, step) {
    const all = cards();
    const i = all.indexOf(card);
    const j = i + step;
    if (j < 0 || j >= all.length) return;
    const other = all[j];
    if (step < 0) list.insertBefore(card, other);
    else list.insertBefore(other, card);
    delete card.dataset.tied; // a moved output leaves any tie it was in
    delete other.dataset.tied;
    sync();
    focusCard(card);
  }

  function say(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  function validate() {
    const missing = cards().find((card) => !select(card, "likert").value);
    if (missing) {
      say("Rate output " + missing.dataset.label + " from 1 to 7 before submitting.");
      focusCard(missing);
      return false;
    }
    say("");
    return true;
  }

  form.addEventListener("submit", function (event) {
    sync();
    if (!validate()) event.preventDefault();
  });

  document.addEventListener("keydown", function (event) {
    const target = event.target;
    if (target.tagName === "TEXTAREA" || target.tagName === "SELECT") return;
    if (target.tagName === "INPUT" && !["checkbox", "radio"].includes(target.type)) return;
    if (target.closest("dialog, details.skip")) return;
    if (event.ctrlKey || event.metaKey) return;
    const card = focused();
    const key = event.key;
    const moving = event.altKey || event.shiftKey;
    let handled = true;
    if (flagMode && /^[1-9]$/.test(key)) {
      const box = flagMode.querySelectorAll(".flags input[type=checkbox]")[Number(key) - 1];
      if (box) box.checked = !box.checked;
      flagMode.classList.remove("flag-mode");
      flagMode = null;
    } else if ((key === "ArrowDown" || key === "ArrowUp") && moving && card) {
      move(card, key === "ArrowDown" ? 1 : -1);
    } else if ((key === "J" || key === "K") && card) {
      move(card, key === "J" ? 1 : -1);
    } else if (key === "ArrowDown" || key === "j") {
      focusCard(card ? card.nextElementSibling : cards()[0]);
    } else if (key === "ArrowUp" || key === "k") {
      focusCard(card ? card.previousElementSibling : cards()[0]);
    } else if (/^[1-7]$/.test(key) && card && !event.altKey) {
      select(card, "likert").value = key;
      card.classList.add("rated");
      say("");
    } else if (key === "t" && card) {
      if (card.previousElementSibling) {
        if (card.dataset.tied) delete card.dataset.tied;
        else card.dataset.tied = "1";
        sync();
      }
    } else if (key === "f" && card) {
      if (flagMode) flagMode.classList.remove("flag-mode");
      flagMode = card;
      card.classList.add("flag-mode");
    } else if (key === " " && card && target === card) {
      card.querySelector(".completion-text").classList.toggle("collapsed");
    } else if (key === "x") {
      form.elements.none_acceptable.checked = !form.elements.none_acceptable.checked;
    } else if (key === "Enter" && !moving && (card || target === document.body)) {
      form.requestSubmit();
    } else {
      handled = false;
    }
    if (handled) event.preventDefault();
    if (key !== "f" && flagMode && !/^[1-9]$/.test(key)) {
      flagMode.classList.remove("flag-mode");
      flagMode = null;
    }
  });

  list.addEventListener("click", function (event) {
    const button = event.target.closest(".expand");
    if (button) button.closest(".rank-card").querySelector(".completion-text").classList.toggle("collapsed");
  });
  list.addEventListener("change", function (event) {
    const card = event.target.closest(".rank-card");
    if (card && event.target.name.startsWith("likert-")) card.classList.toggle("rated", !!event.target.value);
  });

  // Drag and drop: drop above or below the card under the pointer.
  let dragged = null;
  list.addEventListener("dragstart", function (event) {
    dragged = event.target.closest(".rank-card");
    if (!dragged) return;
    dragged.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", dragged.dataset.label);
  });
  list.addEventListener("dragover", function (event) {
    const over = event.target.closest(".rank-card");
    if (!dragged || !over || over === dragged) return;
    event.preventDefault();
    const box = over.getBoundingClientRect();
    const after = event.clientY > box.top + box.height / 2;
    list.insertBefore(dragged, after ? over.nextElementSibling : over);
  });
  list.addEventListener("dragend", function () {
    if (!dragged) return;
    dragged.classList.remove("dragging");
    delete dragged.dataset.tied;
    const next = dragged.nextElementSibling;
    if (next) delete next.dataset.tied;
    sync();
    focusCard(dragged);
    dragged = null;
  });

  cards().forEach((card) => card.classList.toggle("rated", !!select(card, "likert").value));
  sync();
})();

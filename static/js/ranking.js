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
  // Fields are named by the card's slot letter (rank-A, likert-A, flags-A), never a database id.
  const select = (card, what) => form.elements[what + "-" + card.dataset.label];
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

  // Ties as groups: a card with data-tied belongs to the group of the card above it.
  function groups() {
    const out = [];
    cards().forEach((card, i) => {
      if (i > 0 && card.dataset.tied) out[out.length - 1].push(card);
      else out.push([card]);
    });
    return out;
  }

  function render(order) {
    order.forEach((group) =>
      group.forEach((card, i) => {
        if (i > 0) card.dataset.tied = "1";
        else delete card.dataset.tied;
        list.appendChild(card);
      })
    );
    sync();
  }

  // Alt/Shift+arrow: a tied output first steps out of its tie; a lone one jumps a whole group.
  function move(card, step) {
    const order = groups();
    const gi = order.findIndex((group) => group.includes(card));
    const group = order[gi];
    if (group.length > 1) {
      group.splice(group.indexOf(card), 1);
      order.splice(step < 0 ? gi : gi + 1, 0, [card]);
    } else {
      const to = gi + step;
      if (to < 0 || to >= order.length) return;
      order.splice(gi, 1);
      order.splice(to, 0, group);
    }
    render(order);
    focusCard(card);
  }

  // t: join the group above; on a tied output, split the group there instead.
  function toggleTie(card) {
    const order = groups();
    const gi = order.findIndex((group) => group.includes(card));
    const ci = order[gi].indexOf(card);
    if (ci > 0) order.splice(gi, 1, order[gi].slice(0, ci), order[gi].slice(ci));
    else if (gi > 0) order.splice(gi - 1, 2, order[gi - 1].concat(order[gi]));
    render(order);
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
      toggleTie(card);
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

  cards().forEach((card) => {
    card.classList.toggle("rated", !!select(card, "likert").value);
    const text = card.querySelector(".completion-text");
    if (text.scrollHeight <= text.clientHeight + 2) {
      text.classList.remove("collapsed"); // short: nothing to expand
      card.querySelector(".expand").hidden = true;
    }
  });
  sync();
})();

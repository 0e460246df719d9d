// The ranking form, driven by keyboard or drag and drop. The <form> itself is plain: one rank
// select, one Likert select and flag checkboxes per output. This script keeps the cards in
// best-to-worst order on screen and writes the ranks into the selects; equal ranks are ties
// (data-tied on a card = "same rank as the card above").
//
// Rating and ordering are one job unless the labeler wants them apart: a digit rates the
// focused output and moves to the next unrated one; once every output is rated the cards are
// ordered by rating, equal ratings tied, and stay so as ratings change, until the labeler moves
// a card, drags it or changes a tie: from then on the order is theirs. An order that then
// contradicts the ratings is not submitted silently: the first Enter says where, the second
// sends it with confirm_order (the server asks the same without JavaScript).
(function () {
  "use strict";
  const form = document.getElementById("task-form");
  const list = document.getElementById("rank-list");
  if (!form || !list) return;
  // Our messages, not the browser's "Please select an item" bubble that also left focus in a
  // dropdown; the fields keep `required` for pages without JavaScript.
  form.noValidate = true;
  const message = document.getElementById("rank-message");
  const cards = () => Array.from(list.querySelectorAll(".rank-card"));
  // Fields are named by the card's slot letter (rank-A, likert-A, flags-A), never a database id.
  const select = (card, what) => form.elements[what + "-" + card.dataset.label];
  const rating = (card) => Number(select(card, "likert").value) || 0;
  const shownIndex = new Map(cards().map((card, i) => [card, i]));
  let flagMode = null;
  let manual = false; // the labeler set the order by hand: ratings no longer reorder it
  // The last Enter was told the order contradicts the ratings (or the server told it).
  let confirmArmed = form.elements.confirm_order.value === "on";

  function ordinal(n) {
    return n + (n === 1 ? "st" : n === 2 ? "nd" : n === 3 ? "rd" : "th");
  }

  // A form that came back from the server (an error) keeps the labeler's ranks and order.
  const given = cards().map((card) => Number(select(card, "rank").value) || 0);
  if (given.every((rank) => rank > 0)) {
    manual = true;
    cards()
      .map((card, i) => ({ card, rank: given[i], i }))
      .sort((a, b) => a.rank - b.rank || a.i - b.i)
      .forEach((item, i, all) => {
        list.appendChild(item.card);
        if (i > 0 && all[i - 1].rank === item.rank) item.card.dataset.tied = "1";
      });
  }

  function sync() {
    let rank = 0;
    // No place is shown until there is an order: every output rated, or one set by hand.
    const ordered = manual || cards().every(rating);
    cards().forEach((card, i) => {
      if (i === 0) delete card.dataset.tied;
      if (!card.dataset.tied) rank += 1;
      select(card, "rank").value = String(rank);
      const tied = card.dataset.tied || (card.nextElementSibling || {}).dataset?.tied;
      card.querySelector(".place").textContent = ordered ? (tied ? "tied " : "") + ordinal(rank) : "";
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

  // Best rating first, equal ratings tied, and within a tie the order they were shown in.
  function orderByRatings() {
    const sorted = cards().sort(
      (a, b) => rating(b) - rating(a) || shownIndex.get(a) - shownIndex.get(b)
    );
    const order = [];
    sorted.forEach((card, i) => {
      if (i > 0 && rating(card) === rating(sorted[i - 1])) order[order.length - 1].push(card);
      else order.push([card]);
    });
    render(order);
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
    manual = true;
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
    manual = true;
    render(order);
    focusCard(card);
  }

  function rate(card, value) {
    select(card, "likert").value = value;
    card.classList.add("rated");
    changed();
    const all = cards();
    if (!manual && all.every(rating)) orderByRatings();
    else sync();
    // On to the next unrated output (in the order on screen, wrapping), else stay.
    const after = cards();
    const i = after.indexOf(card);
    const next = after
      .slice(i + 1)
      .concat(after.slice(0, i))
      .find((other) => !rating(other));
    focusCard(next || card);
  }

  function say(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  function changed() {
    confirmArmed = false;
    form.elements.confirm_order.value = "";
    say("");
  }

  // Where the order contradicts the ratings: an output ranked below one it rated lower
  // (services.ranking_contradictions says the same on the server).
  function contradictions() {
    const found = [];
    cards().forEach((worse) =>
      cards().forEach((better) => {
        const rankOf = (card) => Number(select(card, "rank").value);
        if (rankOf(worse) > rankOf(better) && rating(worse) > rating(better)) {
          found.push(
            `${worse.dataset.label} (rated ${rating(worse)}) is below ${better.dataset.label} (rated ${rating(better)})`
          );
        }
      })
    );
    return found;
  }

  function validate() {
    const missing = cards().find((card) => !rating(card));
    if (missing) {
      say("Rate output " + missing.dataset.label + " from 1 to 7 before submitting.");
      focusCard(missing);
      return false;
    }
    const found = contradictions();
    if (found.length && !confirmArmed) {
      confirmArmed = true;
      say(
        "Your order contradicts your ratings: " +
          found.slice(0, 3).join("; ") +
          ". Press Enter again to submit it as it is, or reorder / re-rate."
      );
      return false;
    }
    if (found.length) form.elements.confirm_order.value = "on";
    say("");
    return true;
  }

  form.addEventListener("submit", function (event) {
    sync();
    if (!validate()) event.preventDefault();
  });

  function toggleFlag(card, n) {
    const box = card.querySelectorAll(".flags input[type=checkbox]")[n - 1];
    if (box) box.checked = !box.checked;
    showFlags(card);
  }

  function showFlags(card) {
    const names = Array.from(card.querySelectorAll(".flags input:checked")).map(
      (box) => box.closest(".flag").querySelector(".flag-label").textContent
    );
    card.querySelector(".flag-names").textContent = names.length ? "· " + names.join(", ") : "";
  }

  function endFlagMode() {
    if (!flagMode) return;
    flagMode.classList.remove("flag-mode");
    flagMode.querySelector(".flags-box").open = false;
    flagMode = null;
  }

  const OURS = /^([1-9jkJKtfx ?]|Enter|ArrowUp|ArrowDown)$/;

  document.addEventListener("keydown", function (event) {
    let target = event.target;
    if (target.tagName === "TEXTAREA") return;
    if (target.tagName === "INPUT" && !["checkbox", "radio"].includes(target.type)) return;
    if (target.tagName === "SELECT") {
      // A card's own dropdown (clicked, or focused by the browser) does not swallow the keys:
      // they act on its card, as on the card itself. Its value still changes by mouse.
      const owner = target.closest(".rank-card");
      if (!owner || !OURS.test(event.key) || event.key === "?") return;
      owner.focus();
      target = owner;
    }
    if (target.closest("dialog, details.skip")) return;
    if (event.ctrlKey || event.metaKey) return;
    const card = focused();
    const key = event.key;
    const moving = event.altKey || event.shiftKey;
    let handled = true;
    if (flagMode && /^[1-9]$/.test(key)) {
      toggleFlag(flagMode, Number(key));
      endFlagMode();
    } else if ((key === "ArrowDown" || key === "ArrowUp") && moving && card) {
      move(card, key === "ArrowDown" ? 1 : -1);
      changed();
    } else if ((key === "J" || key === "K") && card) {
      move(card, key === "J" ? 1 : -1);
      changed();
    } else if (key === "ArrowDown" || key === "j") {
      focusCard(card ? card.nextElementSibling : cards()[0]);
    } else if (key === "ArrowUp" || key === "k") {
      focusCard(card ? card.previousElementSibling : cards()[0]);
    } else if (/^[1-7]$/.test(key) && card && !event.altKey) {
      rate(card, key);
    } else if (key === "t" && card) {
      toggleTie(card);
      changed();
    } else if (key === "f" && card) {
      endFlagMode();
      flagMode = card;
      card.classList.add("flag-mode");
      card.querySelector(".flags-box").open = true;
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
    if (key !== "f" && flagMode && !/^[1-9]$/.test(key)) endFlagMode();
  });

  list.addEventListener("click", function (event) {
    const button = event.target.closest(".expand");
    if (button) button.closest(".rank-card").querySelector(".completion-text").classList.toggle("collapsed");
  });
  list.addEventListener("change", function (event) {
    const card = event.target.closest(".rank-card");
    if (!card) return;
    if (event.target.name.startsWith("likert-")) {
      card.classList.toggle("rated", !!event.target.value);
      changed();
      if (!manual && cards().every(rating)) orderByRatings();
    } else if (event.target.name.startsWith("flags-")) {
      showFlags(card);
    }
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
    manual = true;
    changed();
    sync();
    focusCard(dragged);
    dragged = null;
  });

  cards().forEach((card) => {
    card.classList.toggle("rated", !!rating(card));
    showFlags(card);
    const text = card.querySelector(".completion-text");
    if (text.scrollHeight <= text.clientHeight + 2) {
      text.classList.remove("collapsed"); // short: nothing to expand
      card.querySelector(".expand").hidden = true;
    }
  });
  sync();
  // Ready to rate at once: the first unrated output has the focus (no j needed).
  if (document.activeElement === document.body || !document.activeElement) {
    focusCard(cards().find((card) => !rating(card)) || cards()[0]);
  }
})();

"""A second task suite, "errands": seven instruction families unlike the demo's, with a gold judge.

Written on 2026-12-05, before any tuning of the loop, and never to be tuned on afterwards: it
measures transfer. Nothing in the loop (hyperparameters, reward shaping, the tiny base model's
pretraining corpus in base_model.py) may be chosen by looking at scores on this suite; if a change
is made to these families or their judge, it must be for a bug in the judge, said so in the commit.

The families (the demo's are in families.py: list, count, opposite, repeat, reverse, sentence,
compare, arithmetic):

- sort: "Sort these numbers from smallest to largest: 7, 2, 9." (3 to 5 numbers, either way)
- neighbour: "What day comes after Monday?" (weekdays, months, letters; after or before)
- plural: "What is the plural of mouse?" (regular and irregular nouns)
- uppercase: "Write the word table in capital letters." (case is judged)
- parity: "Is 14 an even number? Answer yes or no."
- hyphenate: "Spell garden with hyphens between the letters." ("g-a-r-d-e-n")
- in_words: "Write the number 42 in words." ("forty-two")

Each family has a gold answer, several kinds of flawed answer (wrong, partial, hedged, echoed,
off-task) and a graded judge with partial credit; like the demo's, the judge penalises words not
asked for and answers far longer than needed, and flags "fails_to_follow" (quality below 0.3) and
"hallucination". Same API and `Judgement` type as families.py, which it borrows its machinery
from; `suites.suite("errands")` hands it to the crowd and the benches.

Pure Python, no torch.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from difflib import SequenceMatcher
from typing import cast

from training.demo.families import (
    FLAG_HALLUCINATION,
    Catalogue,
    Judgement,
    Params,
    Score,
    _Family,
    _off_task_count,
    _tidiness,
    _wordlist,
    _words,
    filler_sentence,
    yes_no_score,
)

__all__ = [
    "FAMILIES",
    "Judgement",
    "all_prompts",
    "family_of",
    "filler_sentence",
    "flawed_response",
    "gold_response",
    "judge",
    "sample_prompts",
]


# --- sort: "Sort these numbers from smallest to largest: 7, 2, 9." -----------------------------

_ORDERS = ("smallest to largest", "largest to smallest")


def _number_lists() -> list[tuple[int, ...]]:
    # A fixed draw (seeded by the date the suite was written); lists already sorted either way
    # are left out, so echoing the question is never the right answer.
    rng = random.Random(20261205)
    out: dict[tuple[int, ...], None] = {}
    while len(out) < 300:
        numbers = tuple(rng.sample(range(1, 51), rng.randint(3, 5)))
        if list(numbers) not in (sorted(numbers), sorted(numbers, reverse=True)):
            out[numbers] = None
    return list(out)


_NUMBER_LISTS = _number_lists()


def _sort_params() -> Iterator[Params]:
    for numbers in _NUMBER_LISTS:
        for order in _ORDERS:
            yield {"numbers": ", ".join(str(n) for n in numbers), "order": order}


def _sort_coerce(g: dict[str, str]) -> Params | None:
    numbers, order = [int(n) for n in re.findall(r"\d+", g["numbers"])], g["order"].lower()
    if len(numbers) < 2 or len(set(numbers)) < len(numbers) or order not in _ORDERS:
        return None
    return {"numbers": numbers, "order": order}


def _sort_expected(p: Params) -> list[int]:
    return sorted(cast(list[int], p["numbers"]), reverse=p["order"] == _ORDERS[1])


def _sort_gold(p: Params, key: int) -> str:
    return ", ".join(str(n) for n in _sort_expected(p))


def _sort_score(p: Params, response: str) -> Score:
    expected = _sort_expected(p)
    words = _words(response)
    numbers = [int(w) for w in words if w.isdigit()]
    # 2*matches/total: the right numbers in the right order; missing, extra and misplaced all cost.
    core = SequenceMatcher(None, numbers, expected, autojunk=False).ratio() if numbers else 0.0
    allowed = {str(n) for n in expected} | {"smallest", "largest", "to", "from", "sorted"}
    invented = [n for n in numbers if n not in expected]
    flags = set()
    if invented or _off_task_count(words, allowed) >= 3:
        flags.add(FLAG_HALLUCINATION)
    return core * _tidiness(words, allowed, limit=len(expected) + 3), flags


def _sort_flawed(p: Params, rng: random.Random) -> str:
    numbers = _sort_expected(p)
    kind = rng.choice(["reversed", "unsorted", "swap", "drop", "extra"])
    if kind == "reversed":
        numbers = numbers[::-1]
    elif kind == "unsorted":
        numbers = list(cast(list[int], p["numbers"]))
    elif kind == "swap":
        i = rng.randrange(len(numbers) - 1)
        numbers[i], numbers[i + 1] = numbers[i + 1], numbers[i]
    elif kind == "drop":
        del numbers[rng.randrange(len(numbers))]
    else:
        numbers.insert(rng.randrange(len(numbers) + 1), rng.choice(range(51, 99)))
    return ", ".join(str(n) for n in numbers)


# --- neighbour: "What day comes after Monday?" -------------------------------------------------

_SEQUENCES: dict[str, tuple[str, ...]] = {
    "day": _wordlist("Monday Tuesday Wednesday Thursday Friday Saturday Sunday"),
    "month": _wordlist(
        "January February March April May June July August September October November December"
    ),
    # b..y only: "a" is a word of its own, and letters do not wrap round.
    "letter": tuple("bcdefghijklmnopqrstuvwxy"),
}


def _neighbour_params() -> Iterator[Params]:
    for unit, sequence in _SEQUENCES.items():
        items = sequence[1:-1] if unit == "letter" else sequence
        for item in items:
            for direction in ("after", "before"):
                yield {"unit": unit, "item": item, "direction": direction}


def _neighbour_coerce(g: dict[str, str]) -> Params | None:
    unit, direction, item = g["unit"].lower(), g["direction"].lower(), g["item"].lower()
    if unit not in _SEQUENCES or direction not in ("after", "before"):
        return None
    sequence = [s.lower() for s in _SEQUENCES[unit]]
    if item not in sequence or (unit == "letter" and item in (sequence[0], sequence[-1])):
        return None
    return {"unit": unit, "item": item, "direction": direction}


def _neighbour_at(p: Params, step: int) -> str:
    """The item `step` places after (or, asked "before", before) the prompt's item, lowercased."""
    sequence = [s.lower() for s in _SEQUENCES[str(p["unit"])]]
    sign = 1 if p["direction"] == "after" else -1
    return sequence[(sequence.index(str(p["item"])) + sign * step) % len(sequence)]


def _neighbour_gold(p: Params, key: int) -> str:
    answer = _neighbour_at(p, 1)
    return f"{answer}." if p["unit"] == "letter" else f"{answer.capitalize()}."


def _neighbour_score(p: Params, response: str) -> Score:
    item, target = str(p["item"]), _neighbour_at(p, 1)
    vocabulary = {s.lower() for s in _SEQUENCES[str(p["unit"])]}
    words = _words(response)
    named = {w for w in words if w in vocabulary and w != item}
    if target in named:
        core = 1.0 - 0.3 * (len(named) - 1)  # hedged with other candidates
    elif _neighbour_at(p, -1) in named:
        core = 0.2  # the neighbour on the other side
    elif named:
        core = 0.1
    elif item in words:
        core = 0.05  # only echoed the question
    else:
        core = 0.0
    allowed = {item, target, str(p["unit"]), str(p["direction"]), "comes", "right", "letter"}
    flags = set()
    if (target in named and len(named) > 1) or _off_task_count(words, allowed) >= 3:
        flags.add(FLAG_HALLUCINATION)
    return max(0.0, core) * _tidiness(words, allowed, limit=8), flags


def _neighbour_flawed(p: Params, rng: random.Random) -> str:
    def shown(word: str) -> str:
        return word if p["unit"] == "letter" else word.capitalize()

    right, other_side = shown(_neighbour_at(p, 1)), shown(_neighbour_at(p, -1))
    return rng.choice(
        [
            f"{other_side}.",
            f"{shown(_neighbour_at(p, 2))}.",
            f"{shown(str(p['item']))}.",
            f"{right} or {other_side}.",
        ]
    )


# --- plural: "What is the plural of mouse?" ----------------------------------------------------

PLURALS: dict[str, str] = {
    "mouse": "mice",
    "child": "children",
    "foot": "feet",
    "tooth": "teeth",
    "man": "men",
    "woman": "women",
    "goose": "geese",
    "person": "people",
    "ox": "oxen",
    "cactus": "cacti",
    "knife": "knives",
    "leaf": "leaves",
    "wolf": "wolves",
    "wife": "wives",
    "half": "halves",
    "shelf": "shelves",
    "loaf": "loaves",
    "calf": "calves",
    "box": "boxes",
    "bus": "buses",
    "fox": "foxes",
    "dish": "dishes",
    "church": "churches",
    "glass": "glasses",
    "brush": "brushes",
    "watch": "watches",
    "potato": "potatoes",
    "tomato": "tomatoes",
    "hero": "heroes",
    "city": "cities",
    "baby": "babies",
    "lady": "ladies",
    "party": "parties",
    "story": "stories",
    "cherry": "cherries",
    "day": "days",
    "toy": "toys",
    "key": "keys",
    "boy": "boys",
    "cat": "cats",
    "book": "books",
    "tree": "trees",
    "house": "houses",
    "horse": "horses",
}


def _naive_plural(noun: str) -> str:
    """The plural a careless rule would give, never the right one ("mouses", "boxs", "cates")."""
    return next(w for w in (noun + "s", noun + "es", noun + "ses") if w != PLURALS[noun])


def _plural_params() -> Iterator[Params]:
    for noun in PLURALS:
        yield {"noun": noun}


def _plural_coerce(g: dict[str, str]) -> Params | None:
    noun = g["noun"].lower()
    return {"noun": noun} if noun in PLURALS else None


def _plural_gold(p: Params, key: int) -> str:
    return f"{PLURALS[str(p['noun'])]}."


def _plural_score(p: Params, response: str) -> Score:
    noun = str(p["noun"])
    target = PLURALS[noun]
    words = _words(response)
    allowed = {noun, target, "plural", "of", "form"}
    others = [w for w in words if w not in allowed and w != _naive_plural(noun)]
    if target in words:
        core = 0.5 if _naive_plural(noun) in words else 1.0  # hedged with the naive form
    elif _naive_plural(noun) in words:
        core = 0.3  # the right noun, the wrong rule ("mouses", "knifes")
    else:
        # A misspelt plural ("mices", "childs") is nearer than an echo of the noun.
        tries = [w for w in words if w not in ("plural", "of", "form", noun)]
        best = max((SequenceMatcher(None, w, target).ratio() for w in tries), default=0.0)
        core = 0.6 * best if best >= 0.5 else (0.1 if noun in words else 0.0)
    flags = set()
    if target in words and any(w in PLURALS.values() for w in others):
        flags.add(FLAG_HALLUCINATION)
    if _off_task_count(words, allowed) >= 3:
        flags.add(FLAG_HALLUCINATION)
    return core * _tidiness(words, allowed | {_naive_plural(noun)}, limit=8), flags


def _plural_flawed(p: Params, rng: random.Random) -> str:
    noun = str(p["noun"])
    target = PLURALS[noun]
    other = PLURALS[rng.choice([n for n in PLURALS if n != noun])]
    return rng.choice(
        [
            f"{_naive_plural(noun)}.",
            f"{noun}.",
            f"{other}.",
            f"{target} or {_naive_plural(noun)}.",
            f"{target[:-1]}.",
        ]
    )


# --- uppercase: "Write the word table in capital letters." -------------------------------------

UPPERCASE_WORDS = _wordlist(
    "table garden window yellow river pencil orange summer winter basket candle butter "
    "rabbit silver planet button jacket forest doctor market pocket castle bridge kitten "
    "ladder monkey bottle tiger violin dragon pepper cookie hammer island jungle lizard "
    "mirror needle parrot puzzle saddle thunder tunnel velvet wallet anchor blanket "
    "cabbage feather helmet"
)


def _uppercase_params() -> Iterator[Params]:
    for word in UPPERCASE_WORDS:
        yield {"word": word}


def _uppercase_coerce(g: dict[str, str]) -> Params | None:
    word = g["word"].lower()
    return {"word": word} if word.isalpha() and len(word) > 1 else None


def _uppercase_gold(p: Params, key: int) -> str:
    return str(p["word"]).upper()


def _uppercase_score(p: Params, response: str) -> Score:
    word = str(p["word"])
    tokens = re.findall(r"[A-Za-z]+", response)
    same = [t for t in tokens if t.lower() == word]
    if same:
        # The right letters; credit grows with the share of them in capitals.
        upper = max(sum(c.isupper() for c in t) / len(t) for t in same)
        core = 1.0 if upper == 1.0 else 0.15 + 0.5 * upper
    else:
        # Capitals, but a misspelt word ("TABE") is nearer than a lowercase or unrelated one.
        best = max((SequenceMatcher(None, t, word.upper()).ratio() for t in tokens), default=0.0)
        core = 0.5 * best if best >= 0.6 else 0.0
    words = _words(response)
    allowed = {word, "uppercase", "capital", "capitals", "letters", "in"}
    flags = {FLAG_HALLUCINATION} if _off_task_count(words, allowed) >= 3 else set()
    return core * _tidiness(words, allowed, limit=4), flags


def _uppercase_flawed(p: Params, rng: random.Random) -> str:
    word = str(p["word"])
    other = rng.choice([w for w in UPPERCASE_WORDS if w != word])
    half = len(word) // 2
    dropped = rng.randrange(len(word))
    return rng.choice(
        [
            word,
            word.capitalize(),
            word[:half].upper() + word[half:],
            (word[:dropped] + word[dropped + 1 :]).upper(),
            other.upper(),
        ]
    )


# --- parity: "Is 14 an even number? Answer yes or no." -----------------------------------------


def _parity_params() -> Iterator[Params]:
    for n in range(0, 100):
        for parity in ("even", "odd"):
            yield {"n": n, "parity": parity}


def _parity_coerce(g: dict[str, str]) -> Params | None:
    n, parity = g["n"], g["parity"].lower()
    if not n.isdigit() or parity not in ("even", "odd"):
        return None
    return {"n": int(n), "parity": parity}


def _parity_truth(p: Params) -> bool:
    return (int(p["n"]) % 2 == 0) == (p["parity"] == "even")


def _parity_gold(p: Params, key: int) -> str:
    return "Yes." if _parity_truth(p) else "No."


def _parity_score(p: Params, response: str) -> Score:
    return yes_no_score(_parity_truth(p), response, {str(p["n"]), "even", "odd", "number"})


def _parity_flawed(p: Params, rng: random.Random) -> str:
    wrong = "No." if _parity_truth(p) else "Yes."
    return rng.choice([wrong, wrong, "Yes and no.", "Maybe.", f"{p['n']}."])


# --- hyphenate: "Spell garden with hyphens between the letters." -------------------------------

HYPHENATE_WORDS = _wordlist(
    "cat sun lamp frog apple bread chair cloud dream grass heart lemon music night ocean "
    "paper queen smile train water garden flower pillow rocket spider turtle wizard "
    "bottle butter candle carrot cotton finger ginger honey kettle ladder mitten orange "
    "pepper planet rabbit saddle tomato tunnel violet window"
)


def _hyphenate_params() -> Iterator[Params]:
    for word in HYPHENATE_WORDS:
        yield {"word": word}


def _hyphenate_coerce(g: dict[str, str]) -> Params | None:
    word = g["word"].lower()
    return {"word": word} if word.isalpha() and len(word) > 1 else None


def _hyphenate_gold(p: Params, key: int) -> str:
    return "-".join(str(p["word"]))


def _hyphenate_score(p: Params, response: str) -> Score:
    word = str(p["word"])
    text = response.lower()
    hyphenated = ["".join(m.split("-")) for m in re.findall(r"[a-z](?:-[a-z])+", text)]
    # Letters apart but without hyphens ("g a r d e n") is half the instruction followed.
    spaced = "".join(t for t in re.findall(r"[a-z]+", text) if len(t) == 1)
    if hyphenated:
        best = max(hyphenated, key=lambda c: SequenceMatcher(None, c, word).ratio())
        core = 1.0 if best == word else 0.8 * SequenceMatcher(None, best, word).ratio()
    elif len(spaced) > 1:
        core = 0.5 * SequenceMatcher(None, spaced, word).ratio()
    elif word in _words(text):
        core = 0.15  # wrote the word, unspelled
    else:
        core = 0.0
    words = _words(text)
    allowed = {word, "hyphens", "letters", "spelled", *word}
    flags = {FLAG_HALLUCINATION} if _off_task_count(words, allowed) >= 3 else set()
    return core * _tidiness(words, allowed, limit=len(word) + 4), flags


def _hyphenate_flawed(p: Params, rng: random.Random) -> str:
    word = str(p["word"])
    letters = list(word)
    kind = rng.choice(["unspelled", "spaces", "drop", "swap", "reversed"])
    if kind == "unspelled":
        return word
    if kind == "spaces":
        return " ".join(letters)
    # Swapping two equal letters ("q-u-e-e-n") or reversing a palindrome would be the gold.
    swappable = [i for i in range(len(letters) - 1) if letters[i] != letters[i + 1]]
    if kind == "swap" and swappable:
        i = rng.choice(swappable)
        letters[i], letters[i + 1] = letters[i + 1], letters[i]
    elif kind == "reversed" and word != word[::-1]:
        letters.reverse()
    else:
        del letters[rng.randrange(len(letters))]
    return "-".join(letters)


# --- in_words: "Write the number 42 in words." -------------------------------------------------

_UNDER_20 = _wordlist(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
)
_TENS = _wordlist("twenty thirty forty fifty sixty seventy eighty ninety")


def _spelled(n: int) -> str:
    if n < 20:
        return _UNDER_20[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens - 2] + ("" if ones == 0 else f"-{_UNDER_20[ones]}")


_SPELLED = {tuple(_spelled(n).split("-")): n for n in range(100)}


def _numbers_in_words(words: list[str]) -> list[int]:
    """The numbers 0..99 spelled out in `words`, in order ("forty two" and "forty-two" alike)."""
    found, i = [], 0
    while i < len(words):
        pair = tuple(words[i : i + 2])
        if len(pair) == 2 and pair in _SPELLED:
            found.append(_SPELLED[pair])
            i += 2
        elif (words[i],) in _SPELLED:
            found.append(_SPELLED[(words[i],)])
            i += 1
        else:
            i += 1
    return found


def _in_words_params() -> Iterator[Params]:
    for n in range(100):
        yield {"n": n}


def _in_words_coerce(g: dict[str, str]) -> Params | None:
    return {"n": int(g["n"])} if g["n"].isdigit() and int(g["n"]) < 100 else None


def _in_words_gold(p: Params, key: int) -> str:
    return f"{_spelled(int(p['n'])).capitalize()}."


def _in_words_score(p: Params, response: str) -> Score:
    n = int(p["n"])
    words = _words(response)
    found = _numbers_in_words(words)
    if n in found:
        core = 1.0 - 0.3 * len(set(found) - {n})  # hedged with other numbers
    elif found:
        # Right tens or right units ("forty-three" for 42) is nearer than a number far off.
        wrong = found[-1]
        core = 0.3 if wrong // 10 == n // 10 or wrong % 10 == n % 10 else 0.1
    elif str(n) in words:
        core = 0.2  # the right number, in digits: not what was asked
    else:
        core = 0.0
    allowed = {str(n), "in", "words", *_spelled(n).split("-")}
    flags = set()
    if (n in found and len(set(found)) > 1) or _off_task_count(words, allowed) >= 3:
        flags.add(FLAG_HALLUCINATION)
    return max(0.0, core) * _tidiness(words, allowed, limit=6), flags


def _in_words_flawed(p: Params, rng: random.Random) -> str:
    n = int(p["n"])
    near = rng.choice([m for m in (n - 10, n - 1, n + 1, n + 10) if 0 <= m < 100])
    far = rng.choice([m for m in range(100) if abs(m - n) > 11])
    return rng.choice(
        [
            f"{n}.",
            f"{_spelled(near).capitalize()}.",
            f"{_spelled(far).capitalize()}.",
            f"{_spelled(n).capitalize()} or {_spelled(near)}.",
        ]
    )


# --- the families ------------------------------------------------------------------------------

_FAMILIES: tuple[_Family, ...] = (
    _Family(
        name="sort",
        templates=(
            "Sort these numbers from {order}: {numbers}.",
            "Order the numbers {numbers} from {order}.",
        ),
        params=_sort_params,
        coerce=_sort_coerce,
        gold=_sort_gold,
        score=_sort_score,
        flawed=_sort_flawed,
    ),
    _Family(
        name="neighbour",
        templates=(
            "What {unit} comes {direction} {item}?",
            "Which {unit} comes right {direction} {item}?",
            "Name the {unit} that comes {direction} {item}.",
        ),
        params=_neighbour_params,
        coerce=_neighbour_coerce,
        gold=_neighbour_gold,
        score=_neighbour_score,
        flawed=_neighbour_flawed,
    ),
    _Family(
        name="plural",
        templates=(
            "What is the plural of {noun}?",
            "Write the plural of the word {noun}.",
            "Give the plural form of {noun}.",
        ),
        params=_plural_params,
        coerce=_plural_coerce,
        gold=_plural_gold,
        score=_plural_score,
        flawed=_plural_flawed,
    ),
    _Family(
        name="uppercase",
        templates=(
            "Write the word {word} in capital letters.",
            "Write {word} in uppercase.",
            "Change {word} to all capital letters.",
        ),
        params=_uppercase_params,
        coerce=_uppercase_coerce,
        gold=_uppercase_gold,
        score=_uppercase_score,
        flawed=_uppercase_flawed,
    ),
    _Family(
        name="parity",
        templates=(
            "Is {n} an {parity} number? Answer yes or no.",
            "Is the number {n} {parity}? Answer yes or no.",
        ),
        params=_parity_params,
        coerce=_parity_coerce,
        gold=_parity_gold,
        score=_parity_score,
        flawed=_parity_flawed,
    ),
    _Family(
        name="hyphenate",
        templates=(
            "Spell {word} with hyphens between the letters.",
            "Spell the word {word} letter by letter, with hyphens.",
            "Write {word} with a hyphen between each letter.",
        ),
        params=_hyphenate_params,
        coerce=_hyphenate_coerce,
        gold=_hyphenate_gold,
        score=_hyphenate_score,
        flawed=_hyphenate_flawed,
    ),
    _Family(
        name="in_words",
        templates=(
            "Write the number {n} in words.",
            "How do you write {n} in words?",
            "Spell out the number {n} in words.",
        ),
        params=_in_words_params,
        coerce=_in_words_coerce,
        gold=_in_words_gold,
        score=_in_words_score,
        flawed=_in_words_flawed,
    ),
)

# --- public API: the same as families.py's, over these families --------------------------------

_CATALOGUE = Catalogue(_FAMILIES, "an errands prompt")
FAMILIES: tuple[str, ...] = _CATALOGUE.names
family_of = _CATALOGUE.family_of
all_prompts = _CATALOGUE.all_prompts
sample_prompts = _CATALOGUE.sample_prompts
gold_response = _CATALOGUE.gold_response
flawed_response = _CATALOGUE.flawed_response
judge = _CATALOGUE.judge

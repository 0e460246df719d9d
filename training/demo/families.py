"""Demo instruction families with a programmatic notion of quality.

The offline demo has no human labelers and no hub model, so these eight families stand in for
the InstructGPT prompt distribution: each one can produce prompts, an ideal answer, and a graded
judgement of any answer. `judge` works from the prompt *text* alone (prompts come back from the
database), by matching it against the same templates that generated it.

Pure Python on purpose: seed_demo and the simulated labelers import this without torch.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher

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

FLAG_FAILS_TO_FOLLOW = "fails_to_follow"
FLAG_HALLUCINATION = "hallucination"


@dataclass(frozen=True)
class Judgement:
    quality: float  # graded score in [0, 1]; 1 is as good as the gold answer
    likert: int  # 1..7, the labeler-facing overall rating derived from quality
    flags: frozenset[str]  # InstructGPT-style metadata codes that apply to the response


def _wordlist(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# --- vocabulary --------------------------------------------------------------------------------

_WORD_OF = dict(enumerate(_wordlist("one two three four five six seven eight nine ten"), 1))
NUMBER_WORDS = {w: i for i, w in _WORD_OF.items()}

CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruits": _wordlist("apple banana cherry grape lemon mango orange peach pear plum"),
    "animals": _wordlist("cat dog horse cow lion tiger rabbit sheep goat bear"),
    "colors": _wordlist("red blue green yellow black white purple pink brown"),
    "vegetables": _wordlist("carrot potato onion bean tomato cabbage corn pepper"),
    "birds": _wordlist("robin crow owl eagle duck swan parrot sparrow hawk"),
    "drinks": _wordlist("water milk tea coffee juice soda lemonade cocoa"),
    "shapes": _wordlist("circle square triangle star oval rectangle diamond"),
    "vehicles": _wordlist("car bus bike train truck boat plane ship van taxi"),
}

# Each word has exactly one opposite, so the judge never has two right answers to choose from.
OPPOSITE_PAIRS: tuple[tuple[str, str], ...] = (
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("day", "night"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("light", "dark"),
    ("open", "closed"),
    ("old", "new"),
    ("wet", "dry"),
    ("hard", "soft"),
    ("full", "empty"),
    ("tall", "short"),
    ("early", "late"),
    ("left", "right"),
    ("loud", "quiet"),
    ("rich", "poor"),
    ("strong", "weak"),
    ("thick", "thin"),
    ("clean", "dirty"),
    ("high", "low"),
    ("good", "bad"),
    ("win", "lose"),
    ("push", "pull"),
    ("first", "last"),
    ("black", "white"),
    ("true", "false"),
    ("top", "bottom"),
    ("near", "far"),
    ("inside", "outside"),
)
_OPPOSITE = dict(OPPOSITE_PAIRS) | {b: a for a, b in OPPOSITE_PAIRS}

REPEAT_WORDS = _wordlist(
    "moon sun star tree book cat dog blue red hello rain fish bird cake ball hat door "
    "milk song boat apple house cloud snow wind rock leaf bell happy green"
)

# No palindromes: a reversed palindrome is indistinguishable from echoing the word.
REVERSE_WORDS = _wordlist(
    "cat dog sun pen cup map hat bus red box fish milk bird frog lamp tree star moon book "
    "cake rain ship door ball home ring bell nest leaf rose gold wolf duck coat king hand "
    "lion desk drum kite"
)

# topic as written in the prompt -> (noun the answer must mention, an ideal sentence)
SENTENCE_TOPICS: dict[str, tuple[str, str]] = {
    "a dog": ("dog", "The dog runs across the park."),
    "a cat": ("cat", "The cat sleeps in the warm sun."),
    "the sea": ("sea", "The sea is blue and calm today."),
    "the sun": ("sun", "The sun rises in the morning."),
    "a tree": ("tree", "A tall tree grows near the river."),
    "rain": ("rain", "The rain falls on the roof."),
    "a bird": ("bird", "A small bird sings in the garden."),
    "the moon": ("moon", "The moon shines at night."),
    "a car": ("car", "The red car drives down the road."),
    "a book": ("book", "She reads a good book every week."),
    "the city": ("city", "The city is busy in the morning."),
    "a river": ("river", "The river flows to the sea."),
    "a horse": ("horse", "The horse eats green grass."),
    "snow": ("snow", "The snow is white and cold."),
    "a garden": ("garden", "The garden is full of flowers."),
    "a school": ("school", "The children walk to school."),
    "a teacher": ("teacher", "The teacher helps the children read."),
    "a farmer": ("farmer", "The farmer works in the field."),
    "a ship": ("ship", "The ship sails across the sea."),
    "a cake": ("cake", "My mother bakes a sweet cake."),
    "the night": ("night", "The night is dark and quiet."),
    "a friend": ("friend", "My friend helps me every day."),
    "a flower": ("flower", "The flower smells sweet."),
    "the wind": ("wind", "The wind blows through the trees."),
    "a train": ("train", "The train leaves the station at noon."),
    "a mountain": ("mountain", "The mountain is tall and cold."),
    "a baby": ("baby", "The baby smiles at her mother."),
    "the park": ("park", "We play in the park after school."),
    "a fish": ("fish", "A little fish swims in the pond."),
    "music": ("music", "I like to listen to music."),
}

_FILLER_SUBJECTS = ("The cat", "My friend", "The old man", "A little girl", "The teacher", "We")
_FILLER_PREDICATES = (
    "went to the market",
    "likes green apples",
    "sat by the window",
    "read a long book",
    "walked in the rain",
    "saw a big boat",
    "played in the park",
    "made a warm cake",
)

# Words any answer may use without being "off task".
_GLUE = frozenset({"the", "a", "an", "is", "and", "are", "it", "answer"})


# --- helpers -----------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+|\d+", text.lower())


def _singular(word: str, vocabulary: set[str] | frozenset[str]) -> str:
    """`word`, or the singular of it that `vocabulary` knows ("peaches" -> "peach")."""
    candidates = (word, word[:-1], word[:-2], word[:-3] + "y")
    suffixes = ("", "s", "es", "ies")
    for candidate, suffix in zip(candidates, suffixes, strict=True):
        if word.endswith(suffix) and candidate in vocabulary:
            return candidate
    return word


def _to_int(token: str) -> int | None:
    token = token.lower()
    if token.isdigit():
        return int(token)
    return NUMBER_WORDS.get(token)


def _tidiness(words: list[str], allowed: set[str] | frozenset[str], limit: int) -> float:
    """Multiplier in (0, 1] penalising words not asked for and answers far longer than needed."""
    off_task = _off_task_count(words, allowed)
    brevity = 1.0 if len(words) <= limit else limit / len(words)
    return brevity / (1.0 + 0.15 * off_task)


def _off_task_count(words: list[str], allowed: set[str] | frozenset[str]) -> int:
    return sum(1 for w in words if w not in allowed and w not in _GLUE)


def _filler(rng: random.Random) -> str:
    return f"{rng.choice(_FILLER_SUBJECTS)} {rng.choice(_FILLER_PREDICATES)}."


Params = dict[str, object]
Score = tuple[float, set[str]]


@dataclass(frozen=True)
class _Family:
    name: str
    templates: tuple[str, ...]  # str.format templates; placeholders become regex groups
    params: Callable[[], Iterator[Params]]  # every parameter combination the family uses
    coerce: Callable[[dict[str, str]], Params | None]  # regex groups -> params, None if invalid
    gold: Callable[[Params, int], str]  # (params, stable prompt key) -> ideal answer
    score: Callable[[Params, str], Score]  # (params, response) -> (quality, flags)
    flawed: Callable[[Params, random.Random], str]  # a plausible wrong or partial answer

    def prompts(self) -> Iterator[str]:
        for template in self.templates:
            for params in self.params():
                yield template.format(**params)

    def patterns(self) -> list[re.Pattern[str]]:
        out = []
        for template in self.templates:
            regex = re.escape(template)
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>.+?)", regex)
            out.append(re.compile(f"^{regex}$", re.IGNORECASE))
        return out


# --- list: "List three fruits." ----------------------------------------------------------------


def _list_params() -> Iterator[Params]:
    for category in CATEGORIES:
        for n in range(2, 6):
            yield {"n": _WORD_OF[n], "category": category}


def _list_coerce(g: dict[str, str]) -> Params | None:
    n, category = _to_int(g["n"]), g["category"].lower()
    if n is None or category not in CATEGORIES:
        return None
    return {"n": n, "category": category}


def _list_gold(p: Params, key: int) -> str:
    members = CATEGORIES[str(p["category"])]
    start = key % len(members)
    items = [members[(start + i) % len(members)] for i in range(int(p["n"]))]
    return ", ".join(items)


def _list_score(p: Params, response: str) -> Score:
    n, members = int(p["n"]), set(CATEGORIES[str(p["category"])])
    other_categories = {m for c, ms in CATEGORIES.items() if c != p["category"] for m in ms}
    words = [_singular(w, members | other_categories) for w in _words(response)]
    hits = {w for w in words if w in members}
    wrong = {w for w in words if w in other_categories and w not in members}
    core = min(len(hits), n) / n - 0.15 * max(0, len(hits) - n) - 0.2 * len(wrong)
    flags = set()
    if wrong or _off_task_count(words, members) >= 3:
        flags.add(FLAG_HALLUCINATION)
    return max(0.0, core) * _tidiness(words, members, limit=2 * n + 2), flags


def _list_flawed(p: Params, rng: random.Random) -> str:
    n, members = int(p["n"]), list(CATEGORIES[str(p["category"])])
    other = list(CATEGORIES[rng.choice([c for c in CATEGORIES if c != p["category"]])])
    kind = rng.choice(["other", "short", "long", "mixed"])
    if kind == "other":
        items = rng.sample(other, n)
    elif kind == "short":
        items = rng.sample(members, max(1, n - rng.randint(1, 2)))
    elif kind == "long":
        items = rng.sample(members, min(len(members), n + rng.randint(1, 3)))
    else:
        items = rng.sample(members, n - 1) + rng.sample(other, 1)
    return ", ".join(items)


# --- count: "Count from 3 to 7." / "Count from 9 to 4." ----------------------------------------


def _count_params() -> Iterator[Params]:
    for start in range(1, 16):
        for length in range(3, 9):
            end = start + length - 1
            yield {"a": start, "b": end}
            yield {"a": end, "b": start}


def _two_numbers(g: dict[str, str]) -> Params | None:
    a, b = _to_int(g["a"]), _to_int(g["b"])
    return None if a is None or b is None else {"a": a, "b": b}


def _count_coerce(g: dict[str, str]) -> Params | None:
    p = _two_numbers(g)
    return None if p is None or p["a"] == p["b"] else p


def _count_expected(p: Params) -> list[int]:
    a, b = int(p["a"]), int(p["b"])
    step = 1 if b > a else -1
    return list(range(a, b + step, step))


def _count_gold(p: Params, key: int) -> str:
    return ", ".join(str(x) for x in _count_expected(p))


def _count_score(p: Params, response: str) -> Score:
    expected = _count_expected(p)
    words = _words(response)
    numbers = [int(w) for w in words if w.isdigit()]
    # 2*matches/total: the right numbers in the right order; missing and extra ones both cost.
    core = SequenceMatcher(None, numbers, expected, autojunk=False).ratio() if numbers else 0.0
    allowed = {str(x) for x in expected}
    flags = {FLAG_HALLUCINATION} if _off_task_count(words, allowed) >= 3 else set()
    return core * _tidiness(words, allowed, limit=len(expected) + 2), flags


def _count_flawed(p: Params, rng: random.Random) -> str:
    seq = _count_expected(p)
    kind = rng.choice(["stop_early", "overshoot", "skip", "wrong_start"])
    if kind == "stop_early":
        seq = seq[: rng.randint(1, len(seq) - 1)]
    elif kind == "overshoot":
        step = seq[1] - seq[0]
        seq = seq + [seq[-1] + step * (i + 1) for i in range(rng.randint(1, 4))]
    elif kind == "skip":
        del seq[rng.randrange(1, len(seq) - 1)]
    else:
        shift = rng.choice([-2, -1, 1, 2])
        seq = [x + shift for x in seq if x + shift >= 0]
    return ", ".join(str(x) for x in seq if x >= 0)


# --- opposite: "What is the opposite of hot?" --------------------------------------------------


def _opposite_params() -> Iterator[Params]:
    for word in _OPPOSITE:
        yield {"word": word}


def _opposite_coerce(g: dict[str, str]) -> Params | None:
    word = g["word"].lower()
    return {"word": word} if word in _OPPOSITE else None


def _opposite_gold(p: Params, key: int) -> str:
    word = str(p["word"])
    return f"The opposite of {word} is {_OPPOSITE[word]}."


def _opposite_score(p: Params, response: str) -> Score:
    word = str(p["word"])
    target = _OPPOSITE[word]
    words = _words(response)
    others = {w for w in words if w in _OPPOSITE and w not in (word, target)}
    if target in words:
        core = 1.0 - 0.3 * len(others)
    elif others:
        core = 0.2  # answered in the right form, with the wrong word
    elif word in words:
        core = 0.1  # only echoed the question
    else:
        core = 0.0
    allowed = {word, target, "opposite", "of"}
    flags = set()
    if (others and target in words) or _off_task_count(words, allowed) >= 3:
        flags.add(FLAG_HALLUCINATION)
    return max(0.0, core) * _tidiness(words, allowed, limit=8), flags


def _opposite_flawed(p: Params, rng: random.Random) -> str:
    word = str(p["word"])
    wrong = rng.choice([w for w in _OPPOSITE if w not in (word, _OPPOSITE[word])])
    return rng.choice(
        [
            f"The opposite of {word} is {wrong}.",
            f"The opposite of {word} is {word}.",
            f"{wrong.capitalize()}.",
            f"The opposite of {word} is {_OPPOSITE[word]} or {wrong}.",
        ]
    )


# --- repeat: "Repeat the word moon 3 times." ---------------------------------------------------


def _repeat_params() -> Iterator[Params]:
    for word in REPEAT_WORDS:
        for n in range(2, 6):
            yield {"word": word, "n": n}
            yield {"word": word, "n": _WORD_OF[n]}


def _repeat_coerce(g: dict[str, str]) -> Params | None:
    n, word = _to_int(g["n"]), g["word"].lower()
    return {"word": word, "n": n} if n and word.isalpha() else None


def _repeat_gold(p: Params, key: int) -> str:
    return " ".join([str(p["word"])] * int(p["n"]))


def _repeat_score(p: Params, response: str) -> Score:
    word, n = str(p["word"]), int(p["n"])
    words = _words(response)
    count = words.count(word)
    core = max(0.0, 1.0 - abs(count - n) / n) if count else 0.0
    flags = {FLAG_HALLUCINATION} if _off_task_count(words, {word}) >= 3 else set()
    return core * _tidiness(words, {word}, limit=n + 2), flags


def _repeat_flawed(p: Params, rng: random.Random) -> str:
    word, n = str(p["word"]), int(p["n"])
    other = rng.choice([w for w in REPEAT_WORDS if w != word])
    wrong_n = rng.choice([k for k in range(1, 8) if k != n])
    return rng.choice([" ".join([word] * wrong_n), " ".join([other] * n), word])


# --- reverse: "Spell cat backwards." -----------------------------------------------------------


def _reverse_params() -> Iterator[Params]:
    for word in REVERSE_WORDS:
        yield {"word": word}


def _reverse_coerce(g: dict[str, str]) -> Params | None:
    word = g["word"].lower()
    return {"word": word} if word.isalpha() and len(word) > 1 else None


def _reverse_gold(p: Params, key: int) -> str:
    return str(p["word"])[::-1]


def _reverse_score(p: Params, response: str) -> Score:
    word = str(p["word"])
    target = word[::-1]
    words = [w for w in _words(response) if w.isalpha()]
    candidates = set(words)
    letters = "".join(w for w in words if len(w) == 1)  # "t-a-c", spelled letter by letter
    if letters:
        candidates.add(letters)
    best = max(candidates, key=lambda c: SequenceMatcher(None, c, target).ratio(), default="")
    if best == target:
        core = 1.0
    elif best == word:
        core = 0.1  # echoed the word forwards
    else:
        core = 0.8 * SequenceMatcher(None, best, target).ratio()
    allowed = {word, target, "backwards", "spelled", "of", "word", "letters", *letters}
    flags = {FLAG_HALLUCINATION} if _off_task_count(words, allowed) >= 3 else set()
    return core * _tidiness(words, allowed, limit=6), flags


def _reverse_flawed(p: Params, rng: random.Random) -> str:
    word = str(p["word"])
    letters = list(word[::-1])
    kind = rng.choice(["forwards", "swap", "drop", "shuffle"])
    if kind == "forwards":
        return word
    if kind == "swap":
        i = rng.randrange(len(letters) - 1)
        letters[i], letters[i + 1] = letters[i + 1], letters[i]
    elif kind == "drop":
        del letters[rng.randrange(len(letters))]
    else:
        rng.shuffle(letters)
    return "".join(letters)


# --- sentence: "Write a sentence about a dog." -------------------------------------------------


def _sentence_params() -> Iterator[Params]:
    for topic in SENTENCE_TOPICS:
        yield {"topic": topic}


def _sentence_coerce(g: dict[str, str]) -> Params | None:
    topic = g["topic"].lower()
    return {"topic": topic} if topic in SENTENCE_TOPICS else None


def _sentence_gold(p: Params, key: int) -> str:
    return SENTENCE_TOPICS[str(p["topic"])][1]


def _sentence_score(p: Params, response: str) -> Score:
    noun = SENTENCE_TOPICS[str(p["topic"])][0]
    text = response.strip()
    words = _words(text)
    if not words:
        return 0.0, set()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if _words(s)]
    mentions = [noun in {_singular(w, {noun}) for w in _words(s)} for s in sentences]
    form = 0.15 * (4 <= len(words) <= 15) + 0.1 * text[0].isupper() + 0.15 * (text[-1] in ".!?")
    # Well-formed but off-topic earns half of the form points only.
    core = 0.6 + form if any(mentions) else 0.5 * form
    # One sentence was asked for; a "sentence" that mostly repeats itself is not readable English.
    core *= min(1.0, len(set(words)) / len(words) / 0.6) / len(sentences)
    flags = {FLAG_HALLUCINATION} if len(sentences) > 1 and not all(mentions) else set()
    return core * (1.0 if len(words) <= 20 else 20 / len(words)), flags


def _sentence_flawed(p: Params, rng: random.Random) -> str:
    noun, gold = SENTENCE_TOPICS[str(p["topic"])]
    other = rng.choice([s for n, s in SENTENCE_TOPICS.values() if n != noun])
    return rng.choice(
        [other, f"{noun} {noun} the {noun}", f"{gold} {_filler(rng)}", gold.lower().rstrip(".")]
    )


# --- compare: "Is 7 greater than 4? Answer yes or no." -----------------------------------------

_RELATIONS = {"greater": ">", "bigger": ">", "less": "<", "smaller": "<"}


def _compare_params() -> Iterator[Params]:
    for relation in _RELATIONS:
        for a in range(0, 21):
            for b in range(0, 21):
                if a != b:
                    yield {"a": a, "b": b, "relation": relation}


def _compare_coerce(g: dict[str, str]) -> Params | None:
    p, relation = _two_numbers(g), g["relation"].lower()
    return None if p is None or relation not in _RELATIONS else p | {"relation": relation}


def _compare_truth(p: Params) -> bool:
    a, b = int(p["a"]), int(p["b"])
    return a > b if _RELATIONS[str(p["relation"])] == ">" else a < b


def _compare_gold(p: Params, key: int) -> str:
    return "Yes." if _compare_truth(p) else "No."


def yes_no_score(truth: bool, response: str, allowed: set[str]) -> Score:
    """A yes/no question's score (shared with errands.py): the answer right, hedged with both,
    or wrong; off-task words beyond `allowed` cost tidiness and flag hallucination."""
    words = _words(response)
    said = [w for w in words if w in ("yes", "no")]
    right = "yes" if truth else "no"
    if not said:
        core = 0.0
    elif len(set(said)) > 1:
        core = 0.3  # hedged with both answers
    elif said[0] == right:
        core = 1.0
    else:
        core = 0.05  # right format, wrong answer
    allowed = allowed | {"yes", "no", "not"}
    flags = {FLAG_HALLUCINATION} if _off_task_count(words, allowed) >= 3 else set()
    return core * _tidiness(words, allowed, limit=8), flags


def _compare_score(p: Params, response: str) -> Score:
    allowed = {str(p["a"]), str(p["b"]), str(p["relation"]), "than"}
    return yes_no_score(_compare_truth(p), response, allowed)


def _compare_flawed(p: Params, rng: random.Random) -> str:
    wrong = "No." if _compare_truth(p) else "Yes."
    return rng.choice([wrong, wrong, "Yes and no.", "Maybe.", f"{p['a']} and {p['b']}."])


# --- arithmetic: "What is 3 plus 4?" -----------------------------------------------------------


def _arith_params() -> Iterator[Params]:
    for a in range(0, 13):
        for b in range(0, 13):
            yield {"a": a, "b": b, "op": "plus"}
            if a >= b:
                yield {"a": a, "b": b, "op": "minus"}


def _arith_coerce(g: dict[str, str]) -> Params | None:
    p, op = _two_numbers(g), g["op"].lower()
    return None if p is None or op not in ("plus", "minus") else p | {"op": op}


def _arith_result(p: Params) -> int:
    a, b = int(p["a"]), int(p["b"])
    return a + b if p["op"] == "plus" else a - b


def _arith_gold(p: Params, key: int) -> str:
    return f"{p['a']} {p['op']} {p['b']} is {_arith_result(p)}."


def _arith_score(p: Params, response: str) -> Score:
    words = _words(response)
    numbers = [int(w) for w in words if w.isdigit()]
    if numbers[:2] == [p["a"], p["b"]]:
        numbers = numbers[2:]  # "3 plus 4 is 7" restates the question before answering
    if numbers:
        # The last number is the answer; any other number is a misquoted operand.
        core = {0: 1.0, 1: 0.5, 2: 0.3}.get(abs(numbers[-1] - _arith_result(p)), 0.1)
        core *= 0.5 ** len([n for n in numbers[:-1] if n not in (p["a"], p["b"])])
    else:
        core = 0.0
    allowed = {str(p["a"]), str(p["b"]), str(_arith_result(p)), str(p["op"]), "equals", "makes"}
    flags = {FLAG_HALLUCINATION} if _off_task_count(words, allowed) >= 3 else set()
    return core * _tidiness(words, allowed, limit=8), flags


def _arith_flawed(p: Params, rng: random.Random) -> str:
    wrong = max(0, _arith_result(p) + rng.choice([-3, -2, -1, 1, 1, 2, 5]))
    a, op, b = p["a"], p["op"], p["b"]
    return rng.choice([f"{a} {op} {b} is {wrong}.", str(wrong), f"{a} {op} {b}."])


# --- the families ------------------------------------------------------------------------------

_FAMILIES: tuple[_Family, ...] = (
    _Family(
        name="list",
        templates=("List {n} {category}.", "Name {n} {category}.", "Give me {n} {category}."),
        params=_list_params,
        coerce=_list_coerce,
        gold=_list_gold,
        score=_list_score,
        flawed=_list_flawed,
    ),
    _Family(
        name="count",
        templates=("Count from {a} to {b}.", "Please count from {a} to {b}."),
        params=_count_params,
        coerce=_count_coerce,
        gold=_count_gold,
        score=_count_score,
        flawed=_count_flawed,
    ),
    _Family(
        name="opposite",
        templates=("What is the opposite of {word}?", "Give the opposite of the word {word}."),
        params=_opposite_params,
        coerce=_opposite_coerce,
        gold=_opposite_gold,
        score=_opposite_score,
        flawed=_opposite_flawed,
    ),
    _Family(
        name="repeat",
        templates=("Repeat the word {word} {n} times.", "Say {word} {n} times."),
        params=_repeat_params,
        coerce=_repeat_coerce,
        gold=_repeat_gold,
        score=_repeat_score,
        flawed=_repeat_flawed,
    ),
    _Family(
        name="reverse",
        templates=(
            "Spell {word} backwards.",
            "Write the word {word} backwards.",
            "Reverse the letters of {word}.",
        ),
        params=_reverse_params,
        coerce=_reverse_coerce,
        gold=_reverse_gold,
        score=_reverse_score,
        flawed=_reverse_flawed,
    ),
    _Family(
        name="sentence",
        templates=(
            "Write a sentence about {topic}.",
            "Write one short sentence about {topic}.",
            "Tell me one sentence about {topic}.",
        ),
        params=_sentence_params,
        coerce=_sentence_coerce,
        gold=_sentence_gold,
        score=_sentence_score,
        flawed=_sentence_flawed,
    ),
    _Family(
        name="compare",
        templates=("Is {a} {relation} than {b}? Answer yes or no.",),
        params=_compare_params,
        coerce=_compare_coerce,
        gold=_compare_gold,
        score=_compare_score,
        flawed=_compare_flawed,
    ),
    _Family(
        name="arithmetic",
        templates=("What is {a} {op} {b}?", "How much is {a} {op} {b}?"),
        params=_arith_params,
        coerce=_arith_coerce,
        gold=_arith_gold,
        score=_arith_score,
        flawed=_arith_flawed,
    ),
)


def _prompt_key(prompt: str) -> int:
    return zlib.crc32(" ".join(prompt.split()).lower().encode())


def _is_heldout(prompt: str) -> bool:
    # A stable 10% of every family never appears in the base model's corpus or in SFT/PPO prompts,
    # so evaluation measures generalisation rather than recall.
    return _prompt_key(prompt) % 10 == 0


class Catalogue:
    """A suite's families and what every suite offers over them: parse a prompt's text back to
    its family and parameters, list and sample prompts by split, the gold and flawed answers,
    and the judge. `noun` names the suite's prompts in errors ("a demo prompt")."""

    def __init__(self, families: tuple[_Family, ...], noun: str) -> None:
        self.families = families
        self.names: tuple[str, ...] = tuple(f.name for f in families)
        self.noun = noun
        self._patterns = [(f, pattern) for f in families for pattern in f.patterns()]

    def parse(self, prompt: str) -> tuple[_Family, Params] | None:
        text = " ".join(prompt.split())
        for family, pattern in self._patterns:
            match = pattern.match(text)
            if match and (params := family.coerce(match.groupdict())) is not None:
                return family, params
        return None

    def _parsed(self, prompt: str) -> tuple[_Family, Params]:
        parsed = self.parse(prompt)
        if parsed is None:
            raise ValueError(f"not {self.noun}: {prompt!r}")
        return parsed

    def family_of(self, prompt: str) -> str | None:
        """The family name of a prompt, or None when the text matches no family."""
        parsed = self.parse(prompt)
        return parsed[0].name if parsed else None

    @staticmethod
    def _family_prompts(family: _Family, split: str) -> list[str]:
        if split not in ("all", "train", "heldout"):
            raise ValueError(f"unknown split {split!r}")
        prompts = sorted(set(family.prompts()))
        if split == "all":
            return prompts
        return [p for p in prompts if _is_heldout(p) == (split == "heldout")]

    def all_prompts(self, *, split: str = "all") -> list[str]:
        """Every distinct prompt of `split` ("all", "train" or "heldout"), in a fixed order."""
        return [p for family in self.families for p in self._family_prompts(family, split)]

    def sample_prompts(self, n: int, *, seed: int, split: str = "all") -> list[str]:
        """`n` distinct prompts, balanced across families (round-robin), deterministic in `seed`.

        split: "all", "train" (never held out) or "heldout" (the stable 10% kept for evaluation).
        """
        rng = random.Random(seed)
        pools = []
        for family in self.families:
            prompts = self._family_prompts(family, split)
            rng.shuffle(prompts)
            pools.append(prompts)
        if n > sum(len(p) for p in pools):
            raise ValueError(
                f"only {sum(len(p) for p in pools)} distinct {split} prompts, asked {n}"
            )
        out: list[str] = []
        depth = 0
        while len(out) < n:
            out.extend(pool[depth] for pool in pools if depth < len(pool))
            depth += 1
        order = out[:n]
        rng.shuffle(order)
        return order

    def gold_response(self, prompt: str) -> str:
        """An ideal answer to a prompt; ValueError for text that matches no family."""
        family, params = self._parsed(prompt)
        return family.gold(params, _prompt_key(prompt))

    def flawed_response(self, prompt: str, *, seed: int) -> str:
        """A plausible but wrong or partial answer (wrong item, wrong count, echo, hedge, ...)."""
        family, params = self._parsed(prompt)
        return family.flawed(params, random.Random(seed))

    def judge(self, prompt: str, response: str) -> Judgement:
        """Grade `response` to `prompt` from the texts alone; deterministic."""
        parsed = self.parse(prompt)
        if parsed is None:
            quality, flags = _generic_score(prompt, response)
        elif not response.strip():
            quality, flags = 0.0, set()
        else:
            family, params = parsed
            quality, flags = family.score(params, response)
        return judgement_of(quality, flags)


# --- public API --------------------------------------------------------------------------------

_CATALOGUE = Catalogue(_FAMILIES, "a demo prompt")
FAMILIES: tuple[str, ...] = _CATALOGUE.names
family_of = _CATALOGUE.family_of
all_prompts = _CATALOGUE.all_prompts
sample_prompts = _CATALOGUE.sample_prompts
gold_response = _CATALOGUE.gold_response
flawed_response = _CATALOGUE.flawed_response
judge = _CATALOGUE.judge


def filler_sentence(*, seed: int) -> str:
    """An unrelated short sentence, for building rambling answers."""
    return _filler(random.Random(seed))


def judgement_of(quality: float, flags: set[str]) -> Judgement:
    """The Judgement of a family's raw score: quality clipped to [0, 1], its likert, and
    "fails_to_follow" added below 0.3 (shared with the other suites, see suites.py)."""
    quality = round(min(1.0, max(0.0, quality)), 4)
    if quality < 0.3:
        flags = flags | {FLAG_FAILS_TO_FOLLOW}
    return Judgement(quality=quality, likert=1 + round(6 * quality), flags=frozenset(flags))


def _generic_score(prompt: str, response: str) -> Score:
    """Crude readability score for prompts outside the demo families (capped below 0.8)."""
    text = response.strip()
    words = _words(text)
    if not words:
        return 0.0, set()
    quality = 0.3
    quality += 0.15 * (3 <= len(words) <= 60)
    quality += 0.1 * (text[-1] in ".!?")
    quality += 0.15 * min(1.0, len(set(words)) / len(words) / 0.6)
    quality += 0.1 * bool(set(words) & set(_words(prompt)) - _GLUE)
    return quality, set()

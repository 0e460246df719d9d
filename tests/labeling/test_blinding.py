"""The blinding test: nothing a labeler reads predicts which model wrote which output.

The hardening issue found completion ids in what labelers read (`next`, `data-cid`, the
`rank-<id>` form fields): ids follow creation order, imports create a task's outputs in file
order and a round samples the new policy first, so sorting a task's outputs by id gave the model
order in every claim tried. Labelers now see slot letters (labeling/blinding.py). These tests
lay both trails again and attack them:

- ranking tasks imported from JSONL through the API, each line's K outputs in model order (so
  ids, timestamps and positions in the task all follow the model order);
- A/B tasks as a round makes them: the new policy's answers stored first, then the previous
  policy's, then services.evaluation_tasks_create(model_a=new, model_b=previous).

Labelers claim every task through `next`, open its page, submit (half over the API, half with
the page's form) and list their own rankings. For every claim the test collects, per output,
every field a labeler can read: in the `next` payload the output's position, each of its keys
and each text's length; on the page the card's position, its text and length, and every
attribute of the card and of each element inside it; in their own rankings list each entry's
position and keys. Each field is then used as an attacker would: sort the outputs by it
(ascending, and descending) and take that as the guess. Guessed: the whole model order of a
ranking (chance 1/K!) and its first model (chance 1/K); the new policy's side of an A/B pair
(chance 1/2). No guess may beat chance by more than an exact binomial tail of ALPHA allows.
The same guess on the completion ids, which labelers used to read, is right in every claim
(checked: the trail is there), and no field a labeler reads may carry a claim's ids.

The accuracies are printed (`pytest -s`): they are the issue's closing figure.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from labeling import services
from labeling.imports import CompletionRow
from labeling.models import Comparison, Completion, Lease, RankingEntry, Role, Split
from tests.factories import (
    ModelVersionFactory,
    ProjectFactory,
    PromptFactory,
    api_key,
    member,
)

pytestmark = pytest.mark.django_db

K = 4
# One labeler per task, so that claims are independent trials: the outputs' texts are the same
# in every claim of a task, and fields drawn from them (a text's length, the labeler's own ranks)
# would otherwise count one task's luck several times. (Each labeler's own shuffle is
# tests/labeling/test_queue.py's.)
OVERLAP = 1
RANKING_TASKS = 240
AB_TASKS = 200
LABELERS = 4
# Per guess, the chance that a fair shuffle beats the bound anyway. About 150 guesses are made
# over both tests, so a false alarm is rarer than 1 in 5,000 runs; a field that leaks the model
# order (the ids did: right in 100% of claims) is far beyond the bound.
ALPHA = 1e-6
WORDS = [
    "the",
    "a",
    "cat",
    "moon",
    "sees",
    "tea",
    "quickly",
    "river",
    "under",
    "over",
    "bright",
    "seven",
    "paper",
    "runs",
]
LETTERS = "ABCDEFGHI"


def _text(rng: random.Random) -> str:
    """An output's text: the same distribution for every model, so that the text itself, its
    length or its sort order predicts nothing; unique (a token), so the test can tell which
    completion a labeler was shown."""
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
    token = "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(10))
    return f"{words} {token}."


@dataclass
class Claim:
    """What one labeler read about one task's outputs from one source, and the truth."""

    outputs: list[dict[str, Any]]  # per output: field -> value, in the order the source lists them
    models: list[int]  # per output: the model's place in the model order (0 = first created)
    completion_ids: list[int]  # per output: its completion id (the server's knowledge)


@dataclass
class Trail:
    """Every claim, by source: the `next` payload, the task page, the labeler's own list."""

    by_source: dict[str, list[Claim]] = field(default_factory=dict)

    def add(self, source: str, claim: Claim) -> None:
        self.by_source.setdefault(source, []).append(claim)


# --- what a labeler reads ------------------------------------------------------------------

VOID = {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class _Cards(HTMLParser):
    """Per output card of a task page (its element has `card_class`): the card's position, its
    text, and every attribute of the card and of each element inside it, keyed by tag, the tag's
    index within the card and the attribute's name."""

    def __init__(self, card_class: str) -> None:
        super().__init__(convert_charrefs=True)
        self.card_class = card_class
        self.cards: list[dict[str, Any]] = []
        self.depth = 0
        self.seen: Counter[str] = Counter()

    def _attributes(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        n = self.seen[tag]
        self.seen[tag] += 1
        for name, value in attrs:
            self.cards[-1][f"page:{tag}[{n}]@{name}"] = "" if value is None else value

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth == 0:
            if self.card_class not in (dict(attrs).get("class") or "").split():
                return
            self.cards.append({"page:position": len(self.cards), "page:text": ""})
            self.seen = Counter()
        self._attributes(tag, attrs)
        if tag not in VOID:
            self.depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            self._attributes(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in VOID:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.cards[-1]["page:text"] += data


def _page_cards(html: str, card_class: str) -> list[dict[str, Any]]:
    parser = _Cards(card_class)
    parser.feed(html)
    for card in parser.cards:
        card["page:text"] = " ".join(card["page:text"].split())
        card["page:len(text)"] = len(card["page:text"])
    return parser.cards


def _api_outputs(payload: dict[str, Any]) -> list[dict[str, Any]]:
    outputs = []
    for position, completion in enumerate(payload["completions"]):
        fields: dict[str, Any] = {"api:position": position}
        for key, value in completion.items():
            fields[f"api:{key}"] = value
            if isinstance(value, str):
                fields[f"api:len({key})"] = len(value)
        outputs.append(fields)
    return outputs


# --- the attack ------------------------------------------------------------------------------


def _natural(value: Any) -> list[tuple[int, Any]]:
    """A sort key that orders numbers inside text as numbers ("rank-9" < "rank-10")."""
    text = value if isinstance(value, str) else repr(value)
    return [(0, int(c)) if c.isdigit() else (1, c) for c in re.split(r"(\d+)", text) if c]


def _order(claim: Claim, name: str, *, descending: bool) -> list[int]:
    """Output indices sorted by the field (ties keep the source's order, itself shuffled)."""
    keys = [_natural(output.get(name, "")) for output in claim.outputs]
    return sorted(range(len(keys)), key=keys.__getitem__, reverse=descending)


def _informative(claims: list[Claim], name: str) -> bool:
    """The field differs between the outputs of some claim (a constant one can order nothing)."""
    return any(len({repr(o.get(name)) for o in claim.outputs}) > 1 for claim in claims)


def _carries_ids(claims: list[Claim], name: str) -> bool:
    """In every claim, every output's value holds that output's completion id as a number."""
    return all(
        all(
            re.search(rf"(?<!\d){cid}(?!\d)", str(output.get(name, "")))
            for output, cid in zip(claim.outputs, claim.completion_ids, strict=True)
        )
        for claim in claims
    )


def _tail(n: int, p: float, hits: int) -> float:
    """P(X >= hits) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(hits, n + 1))


def _bound(n: int, p: float) -> int:
    """The fewest hits whose binomial tail is below ALPHA: at or above it, chance is ruled out."""
    return next(hits for hits in range(n + 1) if _tail(n, p, hits) < ALPHA)


# What a sort of the outputs (output indices, first = guessed first) says, judged against the
# outputs' places in the model order.
GUESSES = {
    "full order": lambda order, models: [models[i] for i in order] == sorted(models),
    "first model": lambda order, models: models[order[0]] == min(models),
}


def _attack(trail: Trail, chances: dict[str, float], what: str) -> None:
    """Every guess (of `chances`, with its chance level) from every informative field of every
    source, in both directions; prints the accuracies, then asserts none beats chance."""
    print(f"\n[blinding] {what}: accuracy of a guess made by sorting on a field a labeler reads")
    failures = []
    for source, claims in sorted(trail.by_source.items()):
        n = len(claims)
        names = sorted({name for claim in claims for output in claim.outputs for name in output})
        failures += [
            f"{source} {name} carries the completion ids"
            for name in names
            if _carries_ids(claims, name)
        ]
        names = [name for name in names if _informative(claims, name)]
        for guess, chance in chances.items():
            bound = _bound(n, chance)
            accuracy = {}
            for name in names:
                for descending in (False, True):
                    hits = sum(
                        GUESSES[guess](_order(claim, name, descending=descending), claim.models)
                        for claim in claims
                    )
                    accuracy[(name, "desc" if descending else "asc")] = hits / n
                    if hits >= bound:
                        failures.append(
                            f"{source} {name} ({'desc' if descending else 'asc'}) guesses the"
                            f" {guess} in {hits}/{n} claims; chance {chance:.3f}, bound {bound}"
                        )
            mean = sum(accuracy.values()) / len(accuracy)
            (top_name, top_way), top = max(accuracy.items(), key=lambda item: item[1])
            print(
                f"  {guess:<11} from {source:<4} n={n}  chance {chance:.3f}"
                f"  bound {bound / n:.3f}  {len(names)} fields x 2 directions:"
                f" mean {mean:.3f}, highest {top:.3f} ({top_name} {top_way})"
            )
            for handle in (
                "api:id",
                "page:li[0]@data-label",
                "page:li[0]@data-cid",
                "page:article[0]@aria-label",
            ):
                if (handle, "asc") in accuracy:
                    print(f"      by the handle {handle}: {accuracy[(handle, 'asc')]:.3f}")
    assert not failures, "\n".join(failures)


def _ids_accuracy(claims: list[Claim], guess: str) -> float:
    """The old leak: sort the outputs a labeler was shown by completion id."""
    hits = sum(
        GUESSES[guess](
            sorted(range(len(c.completion_ids)), key=c.completion_ids.__getitem__), c.models
        )
        for c in claims
    )
    return hits / len(claims)


# --- the world --------------------------------------------------------------------------------


@pytest.fixture
def world(db):
    """A K=4 project with LABELERS labelers and an admin; the shuffle seeded on PostgreSQL, so a
    run there is reproducible (SQLite's random() takes no seed)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT setseed(0.20250101)")
    project = ProjectFactory(k=K, overlap=OVERLAP)
    admin = member(project, "ada_admin", Role.ADMIN)
    labelers = [member(project, f"labeler_{i}") for i in range(LABELERS)]
    return project, admin, labelers


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(user)}")
    return client


def _browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _work_through(
    project, labelers, *, kind: str, card_class: str, places: dict[str, int], submit
) -> Trail:
    """Every labeler claims, reads and submits in turn until the queue is empty. `places`: each
    model's place in the model order."""
    model_of, text_of = {}, {}
    for pk, name, text in Completion.objects.values_list("pk", "model_version__name", "text"):
        model_of[pk], text_of[pk] = places[name], text
    cid_of_text = {text: pk for pk, text in text_of.items()}
    trail = Trail()
    clients = [(_api(user), _browser(user)) for user in labelers]
    active = list(range(len(labelers)))
    claims = 0
    while active:
        for who in list(active):
            api, browser = clients[who]
            answer = api.post(f"/api/v1/projects/{project.pk}/next/", {"kind": kind}, format="json")
            if answer.status_code == 204:
                active.remove(who)
                continue
            assert answer.status_code == 200, answer.content
            payload = answer.json()
            api_outputs = _api_outputs(payload)
            api_cids = [cid_of_text[o["api:text"]] for o in api_outputs]
            trail.add("api", Claim(api_outputs, [model_of[c] for c in api_cids], api_cids))
            page = browser.get(f"/leases/{payload['lease_id']}/")
            assert page.status_code == 200
            cards = _page_cards(page.content.decode(), card_class)
            shown = Lease.objects.get(pk=payload["lease_id"]).shown_order
            page_cids = [
                next(c for c in shown if text_of[c] in card["page:text"]) for card in cards
            ]
            trail.add("page", Claim(cards, [model_of[c] for c in page_cids], page_cids))
            submit(claims, api, browser, payload, cards, text_of, page_cids)
            claims += 1
    return trail


# --- rankings -----------------------------------------------------------------------------------


def _judged_ranks(texts: list[str]) -> list[int]:
    """A simulated labeler's ranks: by the text itself (1 = first alphabetically), so that what
    they submit depends on what they read and on nothing else."""
    order = sorted(texts)
    return [order.index(t) + 1 for t in texts]


def test_nothing_a_labeler_reads_predicts_the_model_order_of_imported_ranking_tasks(world):
    project, admin, labelers = world
    rng = random.Random(1)
    records = [
        {
            "prompt": f"Question {i}: what does the cat see?",
            # File order is model order: the import creates them in this order.
            "completions": [{"text": _text(rng), "model": f"model-{m}"} for m in range(K)],
        }
        for i in range(RANKING_TASKS)
    ]
    imported = _api(admin).post(
        f"/api/v1/projects/{project.pk}/ranking-tasks/import/", {"records": records}, format="json"
    )
    assert imported.status_code == 201, imported.content

    def submit(n, api, browser, payload, cards, text_of, page_cids):
        if n % 2 == 0:  # over the API, each output by the handle `next` gave it
            texts = [c["text"] for c in payload["completions"]]
            entries = [
                {"completion": c["id"], "rank": rank, "likert": 1 + len(c["text"]) % 7}
                for c, rank in zip(payload["completions"], _judged_ranks(texts), strict=True)
            ]
            url = f"/api/v1/leases/{payload['lease_id']}/ranking/"
            assert api.post(url, {"entries": entries}, format="json").status_code == 201
        else:  # with the page's form, by the field names the page gave each card
            texts = [text_of[c] for c in page_cids]
            # Ratings here do not follow the ranks: the labeler confirms that order.
            data = {"notes": "", "time_spent_ms": "900", "confirm_order": "on"}
            for card, text, rank in zip(cards, texts, _judged_ranks(texts), strict=True):
                data[card["page:select[0]@name"]] = str(rank)
                data[card["page:select[1]@name"]] = str(1 + len(text) % 7)
            response = browser.post(f"/leases/{payload['lease_id']}/ranking/", data)
            assert response.status_code == 302, response.content.decode()[:2000]

    places = {f"model-{m}": m for m in range(K)}
    trail = _work_through(
        project, labelers, kind="ranking", card_class="rank-card", places=places, submit=submit
    )
    assert len(trail.by_source["api"]) == RANKING_TASKS * OVERLAP

    # What each labeler submitted is stored against the outputs they saw under each handle.
    task_texts: dict[int, list[str]] = {}
    entries = RankingEntry.objects.select_related("completion", "ranking")
    for entry in entries:
        task_texts.setdefault(entry.ranking.task_id, []).append(entry.completion.text)
    for entry in entries:
        texts = sorted(set(task_texts[entry.ranking.task_id]))
        assert entry.rank == texts.index(entry.completion.text) + 1
        assert entry.likert == 1 + len(entry.completion.text) % 7
    assert entries.count() == RANKING_TASKS * OVERLAP * K

    # Their own rankings, as they list them.
    shown_of = dict(Lease.objects.values_list("pk", "shown_order"))
    model_of = dict(Completion.objects.values_list("pk", "model_version__name"))
    for user in labelers:
        listed = _api(user).get(f"/api/v1/projects/{project.pk}/rankings/?limit=1000").json()
        for ranking in listed["results"]:
            shown = shown_of[ranking["lease_id"]]
            outputs, cids = [], []
            for position, entry in enumerate(ranking["entries"]):
                outputs.append(
                    {"list:position": position, **{f"list:{k}": v for k, v in entry.items()}}
                )
                handle = entry["completion"]
                cids.append(shown[LETTERS.index(handle)] if isinstance(handle, str) else handle)
            trail.add("list", Claim(outputs, [places[model_of[c]] for c in cids], cids))
    assert len(trail.by_source["list"]) == RANKING_TASKS * OVERLAP

    # The trail is there: the ids a labeler used to read give the model order every time.
    assert _ids_accuracy(trail.by_source["api"], "full order") == 1.0
    print(f"\n[blinding] rankings: sorting by completion id gives the model order in 100% of "
          f"{len(trail.by_source['api'])} claims")  # fmt: skip
    _attack(trail, {"full order": 1 / math.factorial(K), "first model": 1 / K}, "rankings, K=4")


# --- A/B ----------------------------------------------------------------------------------------


def test_nothing_a_labeler_reads_predicts_the_new_policys_side_of_an_ab_task(world):
    project, admin, labelers = world
    rng = random.Random(2)
    previous = ModelVersionFactory(project=project, name="policy-1", kind="policy")
    new = ModelVersionFactory(project=project, name="policy-2", kind="policy")
    prompts = [PromptFactory(project=project, split=Split.TEST) for _ in range(AB_TASKS)]
    # As a round samples them: the new policy over every held-out prompt first, then the
    # previous one; then one A/B task per prompt with the new policy's answer first.
    for model in (new, previous):
        for prompt in prompts:
            services.completions_create(
                prompt=prompt,
                model_version=model,
                rows=[CompletionRow(text=_text(rng), model=model.name)],
            )
    made = services.evaluation_tasks_create(project=project, model_a=new, model_b=previous)
    assert made == AB_TASKS

    def submit(n, api, browser, payload, cards, text_of, page_cids):
        # A simulated judge: the side whose text sorts first wins (what they read, nothing else).
        if n % 2 == 0:
            a, b = (c["text"] for c in payload["completions"])
            url = f"/api/v1/leases/{payload['lease_id']}/comparison/"
            body = {"winner": "a" if a < b else "b"}
            assert api.post(url, body, format="json").status_code == 201
        else:
            a, b = (text_of[c] for c in page_cids)
            data = {"winner": "a" if a < b else "b", "notes": "", "time_spent_ms": "900"}
            response = browser.post(f"/leases/{payload['lease_id']}/comparison/", data)
            assert response.status_code == 302

    places = {new.name: 0, previous.name: 1}
    trail = _work_through(
        project, labelers, kind="comparison", card_class="completion", places=places, submit=submit
    )
    assert len(trail.by_source["api"]) == AB_TASKS * OVERLAP
    for comparison in Comparison.objects.select_related("a_completion", "b_completion"):
        a, b = comparison.a_completion.text, comparison.b_completion.text
        assert comparison.winner == ("a" if a < b else "b")
        assert [comparison.a_completion_id, comparison.b_completion_id] == (
            comparison.lease.shown_order
        )

    assert _ids_accuracy(trail.by_source["api"], "first model") == 1.0
    print(f"\n[blinding] A/B: sorting by completion id finds the new policy's side in 100% of "
          f"{len(trail.by_source['api'])} claims")  # fmt: skip
    _attack(trail, {"first model": 1 / 2}, "A/B, which side is the new policy")

"""The simulated crowd at work: a labeler per thread, claiming and submitting over the HTTP API.

`run_crowd` lets a crowd (`training.demo.crowd.make_crowd`) claim and submit tasks over HTTP with
one thread and one keep-alive session per labeler, exactly as a script or the browser would:
nothing here touches the database. Plain Python + requests; no Django, no torch.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from training.demo.crowd import SimulatedLabeler, make_crowd

KINDS = ("demonstration", "ranking", "comparison")


@dataclass
class Summary:
    submitted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    skips: int = 0
    errors: int = 0
    requests: int = 0
    wall_s: float = 0.0
    error_samples: list[str] = field(default_factory=list)  # the first few, for the operator

    def lines(self) -> list[str]:
        done = sum(self.submitted.values())
        rate = done / self.wall_s if self.wall_s else 0.0
        return [
            *(f"{kind:>14}: {count} submitted" for kind, count in self.submitted.items()),
            f"{'skips':>14}: {self.skips}",
            f"{'errors':>14}: {self.errors}",
            f"{'wall time':>14}: {self.wall_s:.1f} s ({self.requests} requests, {rate:.1f} "
            "submits/s)",
            *(f"  error: {message}" for message in self.error_samples),
        ]


class _Crowd:
    """Shared state of the working threads: the task budget, the clock, and when all are done.

    A labeler told "nothing left" for every kind goes idle. The crowd is done when all are idle
    at once. A skip gives a task back, so it wakes the idle ones (bumping `generation`); a
    labeler whose empty round overlapped a skip looks again instead of going idle.
    """

    def __init__(self, n: int, *, max_tasks: int | None, deadline: float | None) -> None:
        self._cond = threading.Condition()
        self._n = n
        self._idle: set[int] = set()
        self._gone: set[int] = set()
        self._left = max_tasks
        self._deadline = deadline
        self._done = False
        self.generation = 0

    def over(self) -> bool:
        with self._cond:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._done = True
                self._cond.notify_all()
            return self._done

    def take_task(self) -> bool:
        """Reserve one task of the --max-tasks budget before claiming it."""
        with self._cond:
            if self._left is None:
                return True
            if self._left <= 0:
                self._done = True
                self._cond.notify_all()
                return False
            self._left -= 1
            return True

    def give_back_task(self) -> None:
        with self._cond:
            if self._left is not None:
                self._left += 1

    def task_freed(self) -> None:
        with self._cond:
            self.generation += 1
            self._idle.clear()
            self._cond.notify_all()

    def idle(self, who: int, seen_generation: int) -> bool:
        """Wait until work may be back (False) or the whole crowd is done (True)."""
        with self._cond:
            if self._done:
                return True
            if self.generation != seen_generation:
                return False
            self._idle.add(who)
            while who in self._idle and not self._finished():
                timeout = None if self._deadline is None else self._deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    self._done = True
                    break
                self._cond.wait(timeout)
            self._cond.notify_all()
            return self._done

    def leave(self, who: int) -> None:
        with self._cond:
            self._gone.add(who)
            self._finished()
            self._cond.notify_all()

    def _finished(self) -> bool:
        if len(self._idle | self._gone) >= self._n:
            self._done = True
        return self._done


class _Worker:
    """One simulated labeler's loop: next → decide → submit, over one keep-alive session."""

    MAX_ERRORS_IN_A_ROW = 5

    def __init__(
        self,
        *,
        who: int,
        labeler: SimulatedLabeler,
        token: str,
        base_url: str,
        project_id: int,
        kinds: Sequence[str],
        crowd: _Crowd,
        summary: Summary,
        lock: threading.Lock,
        rng: random.Random,
        timeout: float,
    ) -> None:
        self.who, self.labeler, self.crowd, self.summary = who, labeler, crowd, summary
        self.lock, self.rng, self.timeout = lock, rng, timeout
        self.api = f"{base_url.rstrip('/')}/api/v1"
        self.project_id = project_id
        # Each labeler starts the round at a different kind, so kinds are worked side by side.
        self.kinds = [kinds[(who + i) % len(kinds)] for i in range(len(kinds))]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.errors_in_a_row = 0

    def run(self) -> None:
        try:
            while not self.crowd.over() and self.errors_in_a_row < self.MAX_ERRORS_IN_A_ROW:
                generation = self.crowd.generation
                worked = False
                for kind in self.kinds:
                    if self.crowd.over() or not self.crowd.take_task():
                        return
                    lease = self._next(kind)
                    if lease is None:
                        self.crowd.give_back_task()
                        continue
                    self._work(lease)
                    worked = True
                if not worked and self.crowd.idle(self.who, generation):
                    return
        finally:
            self.session.close()
            self.crowd.leave(self.who)

    def _post(self, path: str, body: dict[str, Any]) -> requests.Response | None:
        with self.lock:
            self.summary.requests += 1
        try:
            response = self.session.post(f"{self.api}/{path}", json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            self._error(f"POST {path}: {exc}")
            return None
        if response.status_code >= 400:
            self._error(f"POST {path}: {response.status_code} {response.text[:200]}")
            return None
        self.errors_in_a_row = 0
        return response

    def _error(self, message: str) -> None:
        self.errors_in_a_row += 1
        with self.lock:
            self.summary.errors += 1
            if len(self.summary.error_samples) < 5:
                self.summary.error_samples.append(f"{self.labeler.name}: {message}")

    def _next(self, kind: str) -> dict[str, Any] | None:
        response = self._post(f"projects/{self.project_id}/next/", {"kind": kind})
        if response is None or response.status_code == 204:
            return None
        return response.json()

    def _work(self, lease: dict[str, Any]) -> None:
        kind, lease_id, rng = lease["kind"], lease["lease_id"], self.rng
        if self.labeler.skips(rng):
            if self._post(f"leases/{lease_id}/skip/", {"reason": "simulated skip"}) is not None:
                with self.lock:
                    self.summary.skips += 1
                self.crowd.task_freed()
            return
        prompt_text = next(
            (m["content"] for m in reversed(lease["prompt"]["messages"]) if m["role"] == "user"),
            lease["prompt"]["messages"][-1]["content"],
        )
        shown = lease["completions"]
        body: dict[str, Any] = {"time_spent_ms": self.labeler.time_spent_ms(kind, len(shown), rng)}
        if kind == "demonstration":
            body["text"] = self.labeler.write_demonstration(prompt_text, rng)
        elif kind == "ranking":
            asked = set(lease["flags"])
            entries = self.labeler.rank(prompt_text, [c["text"] for c in shown], rng)
            body["entries"] = [
                {
                    "completion": c["id"],
                    "rank": e.rank,
                    "likert": e.likert,
                    "flags": sorted(e.flags & asked),
                }
                for c, e in zip(shown, entries, strict=True)
            ]
        else:
            a, b = shown
            body["winner"] = self.labeler.compare(prompt_text, a["text"], b["text"], rng)
        response = self._post(f"leases/{lease_id}/{kind}/", body)
        if response is not None and response.status_code == 201:
            with self.lock:
                self.summary.submitted[kind] += 1


def run_crowd(
    base_url: str,
    tokens: Sequence[str],
    project_id: int,
    *,
    kinds: Sequence[str] = KINDS,
    crowd: Sequence[SimulatedLabeler] | None = None,
    agreement: float = 0.73,
    suite: str = "demo",
    seed: int = 0,
    max_tasks: int | None = None,
    seconds: float | None = None,
    timeout: float = 30.0,
) -> Summary:
    """Let one simulated labeler per API token work the project until its queue is empty.

    Stops when no labeler is offered anything of `kinds` any more, after `max_tasks` tasks
    claimed in all, or after `seconds`. `crowd` defaults to make_crowd(len(tokens), ...) of the
    task suite `suite` (a given crowd brings its own).
    """
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be among {', '.join(KINDS)}; got {', '.join(kinds)}")
    if crowd is None:
        crowd = make_crowd(len(tokens), agreement=agreement, seed=seed, suite=suite)
    if len(crowd) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens for {len(crowd)} simulated labelers")
    start = time.monotonic()
    state = _Crowd(
        len(tokens),
        max_tasks=max_tasks,
        deadline=None if seconds is None else start + seconds,
    )
    summary, lock = Summary(submitted=dict.fromkeys(kinds, 0)), threading.Lock()
    workers = [
        _Worker(
            who=i,
            labeler=labeler,
            token=token,
            base_url=base_url,
            project_id=project_id,
            kinds=list(kinds),
            crowd=state,
            summary=summary,
            lock=lock,
            rng=random.Random(f"{seed}/{i}"),
            timeout=timeout,
        )
        for i, (labeler, token) in enumerate(zip(crowd, tokens, strict=True))
    ]
    threads = [threading.Thread(target=w.run, name=w.labeler.name) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary.wall_s = time.monotonic() - start
    return summary

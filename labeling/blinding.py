"""What a labeler sees of a task's outputs: slot letters, never completion ids.

Completion ids follow creation order, and imports create a task's outputs in file order while a
round samples the new policy first, so an id (or anything ordered by ids) tells a labeler which
model wrote which output: sorting a task's outputs by id recovered the model order in every claim
tried. So a labeler never reads a completion id. The claim shuffles the task's outputs into the
lease's `shown_order` (statements.SHUFFLED_OUTPUTS); the labeler sees and submits each output by
its slot in that order, "A" for the first, "B" for the second, and so on. A slot is one letter
(no length to read) and carries nothing but its place in a shuffle drawn for this lease alone,
so it says nothing across leases or tasks either. The server maps slots back to completion ids
(`completion_ids`) under the submit's lock. Reviewers and exports keep completion ids and model
names: they are not blind.

tests/labeling/test_blinding.py sorts a labeler's view by every field it shows and checks that
none predicts the model order better than chance.
"""

from __future__ import annotations

from collections.abc import Sequence

from .models import MAX_K

SLOTS: tuple[str, ...] = tuple(chr(ord("A") + i) for i in range(MAX_K))


def slot_names(n: int) -> str:
    """The slots of n outputs as words: "A, B, C or D"."""
    letters = SLOTS[:n]
    return letters[0] if n == 1 else f"{', '.join(letters[:-1])} or {letters[-1]}"


def completion_ids(shown_order: Sequence[int]) -> dict[str, int]:
    """Slot letter → completion id, for the lease whose labeler order this is."""
    return dict(zip(SLOTS, shown_order, strict=False))


def slots(shown_order: Sequence[int]) -> dict[int, str]:
    """Completion id → slot letter (a stored ranking's shown_order, read back for its labeler)."""
    return dict(zip(shown_order, SLOTS, strict=False))

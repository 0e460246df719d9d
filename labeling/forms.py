"""HTML forms for the pages. They only parse and shape input; the rules live in services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import NON_FIELD_ERRORS

from . import blinding
from .models import DEFAULT_FLAGS, FLAG_CHOICES, MAX_K, MAX_RESPONSE_CHARS, Role, Winner
from .selectors import LeasePage
from .services import MAX_NOTES_CHARS, MAX_TIME_SPENT_MS, ranking_contradictions

LIKERT_CHOICES = [("", "—")] + [(str(i), str(i)) for i in range(1, 8)]
PER_OUTPUT_FIELDS = ("rank", "likert", "flags")  # RankingForm's `<field>-<slot letter>`
SKIP_REASONS = [
    ("unclear", "The prompt is unclear"),
    ("expertise", "Needs expertise I do not have"),
    ("sensitive", "Sensitive content I should not label"),
    ("broken", "The task looks broken"),
    ("other", "Other"),
]


class TimeSpentField(forms.IntegerField):
    """Milliseconds measured in the browser; without JavaScript it is simply 0."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            required=False, min_value=0, max_value=MAX_TIME_SPENT_MS, widget=forms.HiddenInput
        )

    def clean(self, value: Any) -> int:
        return super().clean(value) or 0


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=120)
    slug = forms.SlugField(max_length=60, help_text="Used in URLs: letters, digits, - and _.")
    k = forms.IntegerField(label="K (outputs per ranking)", min_value=2, max_value=MAX_K, initial=4)
    overlap = forms.IntegerField(label="Labelers per ranking", min_value=1, max_value=50, initial=1)
    demo_overlap = forms.IntegerField(
        label="Demonstrations per prompt", min_value=1, max_value=50, initial=1
    )
    flags = forms.MultipleChoiceField(
        choices=FLAG_CHOICES,
        initial=DEFAULT_FLAGS,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Flags asked per output",
    )
    guidelines = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 10}), required=False, max_length=100_000
    )


class GuidelinesForm(forms.Form):
    guidelines = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 20}), required=False, max_length=100_000
    )


class MarkdownPreviewForm(forms.Form):
    text = forms.CharField(required=False, max_length=100_000, strip=False)


ROLE_CHOICES = Role.choices


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Role.LABELER)


class MemberInviteForm(forms.Form):
    username = forms.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Role.LABELER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL (one object per line) or CSV with a header row.")


class SkipForm(forms.Form):
    # No reason is chosen in advance: a preselected one is what a hurried labeler sends.
    reason = forms.ChoiceField(
        choices=SKIP_REASONS,
        widget=forms.RadioSelect,
        error_messages={"required": "Choose why you skip this task."},
    )
    note = forms.CharField(required=False, max_length=400)

    def reason_text(self) -> str:
        label = dict(SKIP_REASONS)[self.cleaned_data["reason"]]
        note = self.cleaned_data["note"].strip()
        return f"{label}: {note}" if note else label


class DemonstrationForm(forms.Form):
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16}), max_length=MAX_RESPONSE_CHARS, strip=False
    )
    time_spent_ms = TimeSpentField()


class RankingForm(forms.Form):
    """One rank select, one Likert select and the asked flags per completion, as shown.

    Field names carry the output's slot letter (`rank-A`, `likert-A`, `flags-A`), never its id:
    labeling/blinding.py. Works as a plain <form>; the page's script only fills the same fields
    from the keyboard or drag and drop.
    """

    none_acceptable = forms.BooleanField(required=False, label="None of these is acceptable")
    notes = forms.CharField(
        required=False,
        max_length=MAX_NOTES_CHARS,
        widget=forms.Textarea(attrs={"rows": 1, "placeholder": "optional"}),
    )
    time_spent_ms = TimeSpentField()
    # Set when the labeler confirmed an order that contradicts their ratings (the page asks).
    confirm_order = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, page: LeasePage, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.page = page
        k = len(page.completions)
        # No rank is given in advance: a pre-filled shown order was stored as the labeler's.
        rank_choices = [("", "—")] + [(str(r), str(r)) for r in range(1, k + 1)]
        for shown in page.completions:
            slot = shown.label
            self.fields[f"rank-{slot}"] = forms.TypedChoiceField(
                choices=rank_choices,
                coerce=int,
                label=f"Rank of {slot}",
                error_messages={"required": f"Give output {slot} a rank."},
            )
            self.fields[f"likert-{slot}"] = forms.TypedChoiceField(
                choices=LIKERT_CHOICES,
                coerce=int,
                label=f"Rating of {slot} (1-7)",
                error_messages={"required": f"Rate output {slot} from 1 to 7."},
            )
            self.fields[f"flags-{slot}"] = forms.MultipleChoiceField(
                choices=page.flags,
                required=False,
                widget=forms.CheckboxSelectMultiple,
                label=f"Flags for {slot}",
            )

    def clean(self) -> dict[str, Any]:
        """Per-output fields for outputs this lease does not show (a completion id in place of a
        letter, as a page from before slot letters posts, or a letter beyond K), and a rank or
        rating sent twice for one output, are errors: never silently dropped."""
        cleaned = super().clean()
        slots = {shown.label for shown in self.page.completions}
        unknown, twice = set(), set()
        for key in self.data:
            what, _, slot = key.partition("-")
            if what not in PER_OUTPUT_FIELDS or not slot:
                continue
            if slot not in slots:
                unknown.add(slot)
            elif what != "flags" and len(self.data.getlist(key)) > 1:
                twice.add(key)
        if unknown:
            names = ", ".join(sorted(unknown)[:5]) + (", ..." if len(unknown) > 5 else "")
            raise forms.ValidationError(
                f"This form names outputs that are not in this task ({names}); outputs are named"
                f" by their letters, {blinding.slot_names(len(slots))}. Reload the page."
            )
        if twice:
            raise forms.ValidationError(f"Sent more than once: {', '.join(sorted(twice))}.")
        if not self.errors and not cleaned.get("confirm_order"):
            contradictions = ranking_contradictions(self.entries())
            if contradictions:
                raise forms.ValidationError(
                    "Your order contradicts your ratings: "
                    + "; ".join(contradictions[:3])
                    + ("; ..." if len(contradictions) > 3 else "")
                    + ". Reorder or re-rate, or submit again to keep it.",
                    code="contradiction",
                )
        return cleaned

    @property
    def asks_confirmation(self) -> bool:
        """The order contradicted the ratings: the page sends confirm_order with the next submit."""
        return self.is_bound and self.has_error(NON_FIELD_ERRORS, "contradiction")

    def cards(self) -> list[dict[str, Any]]:
        """Per shown completion: its letter, text and bound fields, for the template."""
        return [
            {
                "label": shown.label,
                "text": shown.text,
                "rank": self[f"rank-{shown.label}"],
                "likert": self[f"likert-{shown.label}"],
                "flags": self[f"flags-{shown.label}"],
            }
            for shown in self.page.completions
        ]

    def entries(self) -> list[dict[str, Any]]:
        """The ranking as services.ranking_submit takes it: each output by its slot letter."""
        return [
            {
                "completion": shown.label,
                "rank": self.cleaned_data[f"rank-{shown.label}"],
                "likert": self.cleaned_data[f"likert-{shown.label}"],
                "flags": list(self.cleaned_data[f"flags-{shown.label}"]),
            }
            for shown in self.page.completions
        ]


class ComparisonForm(forms.Form):
    """Blind A/B: which output is better (or a tie, or both bad). Works without JavaScript."""

    winner = forms.ChoiceField(choices=Winner.choices, widget=forms.RadioSelect)
    notes = forms.CharField(
        required=False, max_length=MAX_NOTES_CHARS, widget=forms.Textarea(attrs={"rows": 2})
    )
    time_spent_ms = TimeSpentField()


class RankingFilterForm(forms.Form):
    """The reviewers' rankings list, narrowed to a labeler, a model version or a flag."""

    labeler = forms.ChoiceField(required=False)
    model = forms.ChoiceField(required=False, label="Model")
    flag = forms.ChoiceField(required=False)

    def __init__(self, *args: Any, labelers: list[str], models: list[str], flags: list[str],
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        labels = dict(FLAG_CHOICES)
        self.fields["labeler"].choices = [("", "every labeler"), *((n, n) for n in labelers)]
        self.fields["model"].choices = [("", "every model"), *((n, n) for n in models)]
        self.fields["flag"].choices = [("", "any flags"), *((f, labels.get(f, f)) for f in flags)]
        for field in self.fields.values():
            field.widget.attrs["data-autosubmit"] = ""

    def filters(self) -> dict[str, str]:
        """The filters to apply: nothing for a value that is not offered (is_valid() first)."""
        if not self.is_valid():
            return {}
        return {k: v for k, v in self.cleaned_data.items() if v}

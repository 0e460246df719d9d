"""Forms of the training pages. They parse and shape input; each stage's config class (through
training/stages.py) is what accepts or refuses a setting, when the run or round starts."""

from __future__ import annotations

import time
from typing import Any

from django import forms

from labeling.errors import Invalid
from labeling.models import MAX_K, ModelVersion, Project
from labeling.templatetags.timefmt import duration

from . import runs, selectors, stages
from .models import Recipe, RunKind, SourceKind
from .rounds import DEFAULT_GATE, RECIPES

SETTINGS_HELP = (
    'Any other setting of the stage as JSON, e.g. {"warmup_steps": 10, "max_length": 256}. '
    "Unknown or mistyped settings are refused before anything runs."
)


def _as_object(value: Any, field: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise forms.ValidationError('Write a JSON object: {"setting": value, ...}.', code=field)
    return value


def _defaults_of(kinds: list[str], setting: str) -> str:
    """ "SFT 2e-05 · Reward model 9e-06": a setting's default in each run kind that has one."""
    labels = {RunKind.SFT: "SFT", RunKind.REWARD: "reward model", RunKind.PPO: "PPO",
              RunKind.CRITIC_FREE: "critic-free", RunKind.DPO: "DPO", RunKind.SAMPLE: "sampling"}  # fmt: skip
    values = {}
    for kind in kinds:
        value = stages.stage(kind).resolve({"k": 4} if kind == RunKind.SAMPLE else {}).get(setting)
        if value is not None:
            values[labels[kind]] = f"{value:g}"
    if len(values) > 1 and len(set(values.values())) == 1:
        return f"{next(iter(values.values()))} (every kind)"
    return " · ".join(f"{label} {value}" for label, value in values.items())


class SettingsField(forms.JSONField):
    """JSON settings; blank shows blank again (not "null") when the form comes back."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None else super().prepare_value(value)


def _queue_field(form: forms.Form, what: str) -> None:
    """A GPU queue select (one queue per GPU type), only where the deployment declares more than
    one; its first option, blank, is the default queue (the run row keeps blank)."""
    queues = runs.gpu_queues()
    if len(queues) < 2:
        del form.fields["queue"]
        return
    field = form.fields["queue"]
    assert isinstance(field, forms.ChoiceField)
    field.choices = [("", f"{queues[0]} (the default)"), *((q, q) for q in queues[1:])]
    field.help_text = f"The GPU type {what} on: a worker of that queue takes it."


class ConfigForm(forms.Form):
    """A form whose fields and JSON settings become one config; set twice is a form error.

    Before anything is launched it counts what the run would train on: fewer than
    runs.MIN_RECORDS is an error, fewer than runs.ENOUGH_RECORDS a warning the admin confirms
    with the "confirm" box (shown only then)."""

    confirm = forms.BooleanField(
        required=False, widget=forms.HiddenInput, label="Launch anyway with this little data"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["confirm"] = self.fields.pop("confirm")  # last: just above the button

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors:
            try:
                self._config = self.build_config()
            except forms.ValidationError as exc:
                self.add_error("settings", exc)
        if not self.errors:
            self.check_data_size()
        start = cleaned.get(self.START_FIELD)
        build = start and selectors.model_build(version=start, now=time.time())
        if build:
            eta = build.progress.eta_seconds
            left = f"about {duration(eta)} left" if eta is not None else "estimating the time left"
            self.add_error(
                self.START_FIELD,
                f"{start.name} is still being built ({left}); launch from it once it is done.",
            )
        return cleaned

    START_FIELD = "base_model"  # the model version the run or round starts from

    def data_to_count(self) -> tuple[str, dict[str, Any]] | None:
        """(run kind, its settings) whose training rows are counted before launching."""
        return None

    def check_data_size(self) -> None:
        counted = self.data_to_count()
        if counted is None:
            return
        kind, settings = counted
        try:
            what, n = runs.run_data_size(project=self.project, kind=kind, settings=settings)
        except Invalid:
            return  # a refused setting: run_start names it
        if what not in runs.COUNTED or n == 0:
            return  # none at all: run_start says there is no data to train on yet
        singular = what.removesuffix("s")
        if n < runs.MIN_RECORDS:
            self.add_error(
                None,
                f"Only {n} {singular if n == 1 else what} so far: a run needs at least"
                f" {runs.MIN_RECORDS}, and {runs.ENOUGH_RECORDS} or more to learn something.",
            )
        elif n < runs.ENOUGH_RECORDS and not self.cleaned_data.get("confirm"):
            self.fields["confirm"].widget = forms.CheckboxInput()
            self.add_error(
                "confirm",
                f"Only {n} {what} so far: a run on fewer than {runs.ENOUGH_RECORDS} learns"
                " little, and its model is hardly worth ranking. Tick the box to launch anyway.",
            )

    FIELDS: dict[str, str] = {}  # setting -> the form field that sets it (else: the JSON)

    def build_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def add_setting_errors(self, error: Invalid) -> None:
        """Show a refused config on the field that set each named key (or the JSON settings)."""
        if not any("key" in d for d in error.details):
            self.add_error(None, error.message)
        fields = [
            self.FIELDS.get(f"{d['step']}.{d['key']}" if "step" in d else d["key"])
            or self.FIELDS.get(d["key"], "settings")
            for d in error.details
            if "key" in d
        ]
        for field in dict.fromkeys(fields):
            self.add_error(field, error.message)

    def config(self) -> dict[str, Any]:
        """The settings to start with (after is_valid())."""
        return self._config

    def gpu_queue(self) -> str:
        """The GPU queue chosen (after is_valid()); blank, or no select shown: the default one."""
        return self.cleaned_data.get("queue") or ""


def _merge(named: dict[str, Any], extra: dict[str, Any], where: str) -> dict[str, Any]:
    twice = sorted(set(named) & set(extra))
    if twice:
        raise forms.ValidationError(
            f"{', '.join(twice)} {'is' if len(twice) == 1 else 'are'} set twice ({where})."
        )
    return {**extra, **named}


class RunForm(ConfigForm):
    kind = forms.ChoiceField(choices=RunKind.choices)
    base_model = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), label="Start from")
    reward_model = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), required=False)
    max_steps = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)
    lr = forms.FloatField(min_value=0, max_value=1, required=False, label="Learning rate")
    batch_size = forms.IntegerField(min_value=1, max_value=4096, required=False)
    checkpoint_every = forms.IntegerField(min_value=0, max_value=1_000_000, required=False)
    # Sampling runs (and PPO's temperature). The bounds are the stage's: K 2..9 for a run that
    # makes ranking tasks, temperature > 0 (training/stages.py, engine/config.py), shown on the
    # field that set them; the widget's min/max only hint.
    k = forms.IntegerField(
        required=False, label="K: outputs per prompt (sampling runs)",
        widget=forms.NumberInput(attrs={"min": 2, "max": MAX_K}),
    )  # fmt: skip
    temperature = forms.FloatField(
        required=False, label="Sampling temperature (sampling and PPO runs)",
        widget=forms.NumberInput(attrs={"step": "any"}),
    )  # fmt: skip
    settings = SettingsField(
        required=False,
        label="More settings (JSON)",
        help_text=SETTINGS_HELP,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    queue = forms.ChoiceField(required=False, label="GPU queue")

    NAMED = ("max_steps", "lr", "batch_size", "checkpoint_every", "k", "temperature")
    FIELDS = {**{name: name for name in NAMED}, "total_episodes": "max_steps", "queue": "queue"}

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        self.fields["base_model"].queryset = selectors.trainable_models(project=project)
        self.fields["base_model"].initial = selectors.default_start_model(project=project)
        self.fields[
            "base_model"
        ].help_text = (
            "Models without weights (names imported completions came with) are not listed."
        )
        self.fields["reward_model"].queryset = selectors.trainable_models(
            project=project, kind="reward"
        )
        self.fields["reward_model"].help_text = "PPO and critic-free runs only."
        self.fields["kind"].initial = RunKind.SFT
        kinds = [kind for kind, _ in RunKind.choices]
        trained = [k for k in kinds if k != RunKind.SAMPLE]
        self.fields["max_steps"].help_text = (
            "Optimizer steps (PPO and critic-free: × batch size episodes). Blank: one epoch of"
            " the data (SFT, reward model, DPO); "
            + _defaults_of([RunKind.PPO, RunKind.CRITIC_FREE], "total_episodes")
            + " episodes."
        )
        for name, kinds_of in (("lr", trained), ("batch_size", kinds), ("checkpoint_every", kinds),
                               ("temperature", [RunKind.PPO, RunKind.CRITIC_FREE, RunKind.SAMPLE])):  # fmt: skip
            self.fields[name].help_text = "Blank: " + _defaults_of(kinds_of, name) + "."
            self.fields[name].widget.attrs["placeholder"] = "default"
        self.fields["k"].help_text = (
            f"2 to {MAX_K} different outputs per ranking task (a prompt whose samples repeat is"
            f" sampled again); blank: the project's K = {project.k}."
        )
        self.fields["k"].widget.attrs["placeholder"] = str(project.k)
        _queue_field(self, "the run trains")

    def clean_settings(self) -> dict[str, Any]:
        return _as_object(self.cleaned_data.get("settings"), "settings")

    def build_config(self) -> dict[str, Any]:
        data = self.cleaned_data
        named = {k: data[k] for k in self.NAMED if data.get(k) is not None}
        online = (RunKind.PPO, RunKind.CRITIC_FREE)  # they count episodes, not steps
        if data["kind"] in online and "max_steps" in named:
            named["total_episodes"] = named.pop("max_steps") * named.get("batch_size", 16)
        if data["kind"] == RunKind.SAMPLE:
            named.pop("max_steps", None)
            named.pop("lr", None)
        return _merge(named, data["settings"], "in a field and in the JSON settings")

    def data_to_count(self) -> tuple[str, dict[str, Any]] | None:
        return self.cleaned_data["kind"], self._config


class RoundForm(ConfigForm):
    START_FIELD = "policy"
    policy = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), label="Start from policy")
    recipe = forms.ChoiceField(
        choices=Recipe.choices, initial=Recipe.INSTRUCTGPT, required=False,
        help_text="Critic-free uses the reward model without a value model (GRPO, RLOO or"
        ' REINFORCE++-baseline: "estimator" in the JSON settings of critic_free); iterated DPO'
        " trains on the rankings directly, without a reward model.",
    )  # fmt: skip
    baseline = forms.BooleanField(
        required=False, initial=True, label="Compare with a compute-matched SFT",
        help_text="Train the start policy with plain SFT for as many optimizer steps as the policy"
        " step took, and add blind A/B tasks between it and the new policy.",
    )  # fmt: skip
    max_prompts = forms.IntegerField(
        min_value=1, max_value=100_000, initial=64, label="Prompts to sample"
    )
    eval_prompts = forms.IntegerField(
        required=False, label="Held-out prompts for the blind A/B tasks (blank: 64)",
        widget=forms.NumberInput(attrs={"min": 1}),
    )  # fmt: skip
    # The steps' settings: blank is the stage's default. Their bounds are the stage config
    # class's (engine/config.py), checked when the round starts and shown on the field that set
    # them; the widget's min only hints.
    reward_lr = forms.FloatField(
        required=False, label="Reward model: learning rate",
        widget=forms.NumberInput(attrs={"min": 0, "step": "any"}),
    )  # fmt: skip
    reward_epochs = forms.IntegerField(
        required=False, label="Reward model: epochs", widget=forms.NumberInput(attrs={"min": 1})
    )
    reward_steps = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)
    ppo_lr = forms.FloatField(
        required=False, label="Policy step: learning rate",
        widget=forms.NumberInput(attrs={"min": 0, "step": "any"}),
    )  # fmt: skip
    ppo_batch_size = forms.IntegerField(
        required=False, label="Policy step: prompts (DPO: rankings) per step",
        help_text="PPO: also its minibatch, unless the JSON settings give mini_batch_size.",
        widget=forms.NumberInput(attrs={"min": 1}),
    )  # fmt: skip
    ppo_episodes = forms.IntegerField(
        required=False, label="PPO / critic-free: total episodes (prompts rolled out)",
        widget=forms.NumberInput(attrs={"min": 1}),
    )  # fmt: skip
    kl_coef = forms.FloatField(min_value=0, max_value=10, required=False, label="KL coefficient β")
    ptx_coef = forms.FloatField(
        required=False, label="PPO / critic-free: ptx coefficient γ (0: off)",
        widget=forms.NumberInput(attrs={"min": 0, "step": "any"}),
    )  # fmt: skip
    sample_temperature = forms.FloatField(
        min_value=0.01, max_value=5, required=False, label="Sampling temperature (A/B answers)"
    )
    rank_temperature = forms.FloatField(
        min_value=0.01, max_value=5, required=False,
        label="Sampling temperature for ranking tasks (blank: as above)",
    )  # fmt: skip
    k = forms.IntegerField(
        required=False, label="K: outputs per ranking task, split between both policies",
        widget=forms.NumberInput(attrs={"min": 2, "max": MAX_K}),
    )  # fmt: skip
    min_eos_rate = forms.FloatField(
        min_value=0, max_value=1, initial=0.5, label="Gate: min EOS rate"
    )
    max_kl = forms.FloatField(min_value=0, initial=8.0, label="Gate: max KL (nats per response)")
    max_mean_length = forms.FloatField(min_value=1, initial=512.0, label="Gate: max mean length")
    min_reward_gain = forms.FloatField(
        required=False, label="Gate: min rise of the reward score",
        help_text="The policy's reward score, last quarter of PPO against the first, must rise by"
        " more than this; blank: 0 (any rise).",
    )  # fmt: skip
    min_held_out_gain = forms.FloatField(
        required=False, label="Gate: least change of the held-out score",
        help_text="PPO and critic-free hold out up to 32 of their prompts and score one sample of"
        " each before and after training; blank: 0 (it may not fall).",
    )  # fmt: skip
    min_pair_accuracy = forms.FloatField(
        required=False, min_value=0, max_value=1, initial=0.5,
        label="Gate (iterated DPO): held-out pair accuracy above",
    )  # fmt: skip
    settings = SettingsField(
        required=False,
        label="More settings per step (JSON)",
        help_text='Per step: {"reward": {"lr": 3e-4, "epochs": 3}, "ppo": {"ptx_coef": 0.5},'
        ' "critic_free": {"estimator": "rloo"}, "dpo": {"beta": 0.1}, "baseline": {"lr": 1e-4},'
        ' "sample": {...}, "rank_sample": {...}}. Checked before the round starts.',
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    queue = forms.ChoiceField(required=False, label="GPU queue")

    STEPS = ("reward", "ppo", "critic_free", "dpo", "baseline", "sample", "rank_sample")
    # step -> {setting: the form field that sets it}; the policy step's fields go to the step of
    # the chosen recipe (a field its run kind does not take is an error on that field)
    ONLINE = {"lr": "ppo_lr", "batch_size": "ppo_batch_size", "total_episodes": "ppo_episodes",
              "kl_coef": "kl_coef", "ptx_coef": "ptx_coef"}  # fmt: skip
    STEP_FIELDS = {
        "reward": {"lr": "reward_lr", "epochs": "reward_epochs", "max_steps": "reward_steps"},
        "ppo": {**ONLINE, "mini_batch_size": "ppo_batch_size"},
        "critic_free": ONLINE,
        "dpo": {"lr": "ppo_lr", "batch_size": "ppo_batch_size"},
    }  # fmt: skip
    FIELDS = {
        **{f"{step}.{key}": field for step, m in STEP_FIELDS.items() for key, field in m.items()},
        **{key: key for key in ("k", "eval_prompts", "max_prompts", "queue", *DEFAULT_GATE)},
    }

    # field -> the run kinds whose default it shows, and the setting
    DEFAULTS = {
        "reward_lr": ([RunKind.REWARD], "lr"),
        "reward_epochs": ([RunKind.REWARD], "epochs"),
        "ppo_lr": ([RunKind.PPO, RunKind.CRITIC_FREE, RunKind.DPO], "lr"),
        "ppo_batch_size": ([RunKind.PPO, RunKind.CRITIC_FREE, RunKind.DPO], "batch_size"),
        "ppo_episodes": ([RunKind.PPO, RunKind.CRITIC_FREE], "total_episodes"),
        "kl_coef": ([RunKind.PPO, RunKind.CRITIC_FREE], "kl_coef"),
        "ptx_coef": ([RunKind.PPO, RunKind.CRITIC_FREE], "ptx_coef"),
        "sample_temperature": ([RunKind.SAMPLE], "temperature"),
    }

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        self.fields["policy"].queryset = selectors.trainable_models(project=project)
        self.fields["policy"].initial = selectors.default_start_model(project=project)
        self.fields["k"].help_text = f"2 to {MAX_K}; blank: the project's K = {project.k}."
        self.fields["k"].widget.attrs["placeholder"] = str(project.k)
        self.fields["reward_steps"].help_text = "Blank: one epoch of every ranking."
        self.fields["eval_prompts"].widget.attrs["placeholder"] = "64"
        for name, (kinds, setting) in self.DEFAULTS.items():
            field = self.fields[name]
            field.help_text = " ".join(
                filter(None, [str(field.help_text), f"Blank: {_defaults_of(kinds, setting)}."])
            )
            field.widget.attrs["placeholder"] = "default"
        _queue_field(self, "every step of the round trains")

    def clean_settings(self) -> dict[str, Any]:
        settings = _as_object(self.cleaned_data.get("settings"), "settings")
        unknown = sorted(set(settings) - set(self.STEPS))
        if unknown:
            raise forms.ValidationError(
                f"Unknown step(s) {', '.join(unknown)}; the steps are {', '.join(self.STEPS)}."
            )
        for step, values in settings.items():
            _as_object(values, step)
        return settings

    def build_config(self) -> dict[str, Any]:
        data = self.cleaned_data
        data["recipe"] = data.get("recipe") or Recipe.INSTRUCTGPT  # not sent: the default
        recipe = RECIPES[data["recipe"]]
        named: dict[str, dict[str, Any]] = {step: {} for step in self.STEPS}
        steps = [recipe.policy_kind, *(["reward"] if recipe.reward_model else [])]
        for step in steps:
            for key, field in self.STEP_FIELDS[step].items():
                if data.get(field) is not None:
                    named[step][key] = data[field]
        used = {field for step in steps for field in self.STEP_FIELDS[step].values()}
        for field in {f for m in self.STEP_FIELDS.values() for f in m.values()} - used:
            if data.get(field) is not None:
                label = self.fields[field].label or field
                self.add_error(field, f"{label}: not a setting of the {data['recipe']} recipe.")
        if "mini_batch_size" in data["settings"].get("ppo", {}):
            named["ppo"].pop("mini_batch_size", None)
        if data.get("sample_temperature") is not None:
            named["sample"]["temperature"] = data["sample_temperature"]
        if data.get("rank_temperature") is not None:
            named["rank_sample"]["temperature"] = data["rank_temperature"]
        config: dict[str, Any] = {
            "max_prompts": data["max_prompts"],
            "gate": {
                k: data[k]
                for k in (
                    "min_eos_rate",
                    "max_kl",
                    "max_mean_length",
                    "min_held_out_gain",
                    "min_pair_accuracy",
                )  # fmt: skip
                if data.get(k) is not None
            },
        }
        if not data.get("baseline"):
            config["baseline"] = False
        if data.get("min_reward_gain") is not None:
            config["gate"]["min_reward_gain"] = data["min_reward_gain"]
        for key in ("k", "eval_prompts"):
            if data.get(key) is not None:
                config[key] = data[key]
        for step in self.STEPS:
            merged = _merge(
                named[step], data["settings"].get(step, {}), f"{step}: a field and JSON"
            )
            if merged and not (step == "baseline" and config.get("baseline") is False):
                config[step] = merged
        return config

    def data_to_count(self) -> tuple[str, dict[str, Any]] | None:
        recipe = RECIPES[self.cleaned_data["recipe"]]
        kind = RunKind.REWARD if recipe.reward_model else recipe.policy_kind
        return kind, self._config.get(str(kind), {})


class RegisterModelForm(forms.Form):
    """Register a base model: the registry checks the path or hub name when it is submitted."""

    name = forms.CharField(max_length=120, help_text="The name runs and rounds will show.")
    source_kind = forms.ChoiceField(label="From", choices=SourceKind.choices)
    source = forms.CharField(
        max_length=500,
        help_text="A directory or .gguf file under the models root, or a hub name (org/model).",
    )
    revision = forms.CharField(max_length=100, required=False, help_text="Hub revision.")
    default_chat_template = forms.CharField(
        required=False,
        max_length=100_000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="A Jinja chat template, used only if the model's tokenizer has none.",
    )

    def add_registry_error(self, error: Invalid) -> None:
        keys = [d["key"] for d in error.details if d.get("key") in self.fields]
        self.add_error(keys[0] if keys else None, error.message)

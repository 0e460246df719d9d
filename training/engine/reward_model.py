"""The reward model: an LM trunk and a bias-free scalar head (also PPO's value model).

Saved as a plain Hugging Face sequence-classification model with one label, the layout TRL's
RewardTrainer writes: `AutoModelForSequenceClassification.from_pretrained(dir)` loads it (an
`XForSequenceClassification` whose `score` is a bias-free Linear and whose `config.pad_token_id` is
the tokenizer's distinct pad), the tokenizer and its chat template are saved beside it, and its
logits on right-padded input are our `RewardModel.forward` scores. The centring on the
demonstrations is a constant kept in the config as `score_offset` (a sequence-classification head
has no bias to hold it), added where PPO reads rewards and values.

Directories in the earlier format of our own (trunk, `score_head.safetensors` with a biased head,
`reward_model.json`) still load: their head's bias becomes the score offset.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.engine import cpu_fast
from training.engine.cpu_fast import gpt2
from training.engine.lm import (
    fit_embeddings,
    load_config,
    load_pretrained,
    position_ids_from_mask,
    response_hidden_states,
    trunk_hidden_states,
)

SCORE_OFFSET = "score_offset"  # the config attribute that holds the offset

# The earlier format of our own, still read.
OLD_FORMAT = "instructloop-reward-model"
OLD_HEAD_FILE = "score_head.safetensors"
OLD_META_FILE = "reward_model.json"


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each row, whichever side the padding is on.  # (batch,)"""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(-1)


class RewardModel(nn.Module):
    """LM trunk + bias-free scalar head. As a reward model it scores a sequence at its last real
    token (InstructGPT: the reward is read at the EOS that ends the completion); as a value model
    the same head gives one value per position.

    `score_offset` is a constant that puts scores on the scale PPO uses (InstructGPT centres them
    on the demonstrations): `rewards`, `values` and `response_values` add it; `forward` and
    `score_completions` do not, so that `forward` is what the saved model's
    AutoModelForSequenceClassification logits are (rankings and the Bradley-Terry loss do not
    see a constant)."""

    def __init__(
        self, trunk: PreTrainedModel, head: nn.Linear | None = None, score_offset: float = 0.0
    ) -> None:
        super().__init__()
        self.trunk = trunk
        hidden_size = trunk.config.hidden_size
        if head is None:
            head = nn.Linear(hidden_size, 1, bias=False)
            # lm-human-preferences initialises the reward head with std 1/sqrt(d_model + 1).
            nn.init.normal_(head.weight, std=1 / math.sqrt(hidden_size + 1))
        self.head = head
        self.score_offset = score_offset

    @property
    def config(self) -> Any:
        return self.trunk.config

    def _hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int = 0
    ) -> torch.Tensor:
        return trunk_hidden_states(self.trunk, input_ids, attention_mask, start)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        # The scalar head stays in fp32 under bf16 autocast: scores are compared to each other
        # and shifted by the offset, and bf16 keeps only three significant digits.
        with torch.autocast(hidden.device.type, enabled=False):
            return self.head(hidden.float()).squeeze(-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scalar score per sequence, read at its last real token (without the offset: the
        saved model's AutoModelForSequenceClassification logits).  # (batch,)"""
        last_index = last_real_index(attention_mask)
        if cpu_fast.gpt2_applies(self.trunk):  # cpu_fast: real tokens only, packed
            positions = position_ids_from_mask(attention_mask)
            last_hidden = gpt2.last_hidden_states(
                self.trunk, input_ids, attention_mask, positions, last_index
            )
            return self._head(last_hidden)
        hidden = self._hidden(input_ids, attention_mask)  # (batch, seq, hidden)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self._head(hidden[rows, last_index])

    def score_completions(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        prompt_index: torch.Tensor,
    ) -> torch.Tensor:
        """Scores of prompt + completion sequences whose prompts are shared: each prompt goes
        through the trunk once, and its cached keys and values (gradients flow through them) serve
        all its completions. Same scores as `forward` on the concatenated sequences (no offset).
        prompt_*: (prompts, P) left-padded; completion_*: (completions, T) right-padded;
        prompt_index: (completions,) which prompt each completion continues.  # (completions,)"""
        prompt_lengths = prompt_mask.sum(1)[prompt_index]  # (completions,)
        steps = torch.arange(completion_ids.shape[1], device=completion_ids.device)
        completion_positions = prompt_lengths.unsqueeze(1) + steps
        key_is_real = torch.cat([prompt_mask[prompt_index], completion_mask], dim=1).bool()
        last_index = completion_mask.sum(1) - 1
        if cpu_fast.gpt2_applies(self.trunk):  # cpu_fast: the last block at the read position only
            last_hidden = gpt2.shared_prompt_last_hidden_states(
                self.trunk,
                prompt_ids,
                prompt_mask,
                position_ids_from_mask(prompt_mask),
                completion_ids,
                key_is_real,
                completion_positions,
                prompt_index,
                last_index,
            )
            return self._head(last_hidden)
        prompt_out = self.trunk(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=position_ids_from_mask(prompt_mask),
            use_cache=True,
        )
        cache = prompt_out.cache
        cache.batch_select_indices(prompt_index)  # each completion's prompt, a gather autograd sees
        outputs = self.trunk(
            input_ids=completion_ids,
            attention_mask=key_is_real.long(),
            position_ids=completion_positions,
            cache=cache,
            use_cache=True,
        )
        hidden = outputs.last_hidden_state  # (completions, T, hidden)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self._head(hidden[rows, last_index])

    def rewards(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`forward`'s scores plus the offset: the reward PPO optimises.  # (batch,)"""
        return self(input_ids, attention_mask) + self.score_offset

    def values(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int, end: int
    ) -> torch.Tensor:
        """Head output plus the offset at positions start..end-1 (value estimates, on the
        rewards' scale).  # (batch, end - start)"""
        hidden = self._hidden(input_ids, attention_mask, start)[:, : end - start]
        return self._head(hidden) + self.score_offset

    def response_values(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prompt_length: int,
        response_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Value estimates of the states before the response tokens where response_mask is set,
        row-major (`values` at those positions, computed on real tokens only).
        # (response_mask.sum(),)"""
        hidden = response_hidden_states(
            self.trunk, input_ids, attention_mask, prompt_length, response_mask
        )
        return self._head(hidden) + self.score_offset

    @classmethod
    def from_causal_lm(
        cls,
        path: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> RewardModel:
        """Fresh head on the trunk of a causal LM (the SFT model). The trunk loads in `dtype`, the
        head is fp32 whatever it is (see `_head`)."""
        trunk = load_pretrained(AutoModel, path, dtype)
        fit_embeddings(trunk, tokenizer)
        return cls(trunk).to(device)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> RewardModel:
        """A saved reward (or value) model: a one-label sequence-classification model, or a
        directory in the earlier format. Refused if it was trained with another tokenizer."""
        directory = Path(path)
        _check_same_tokenizer(directory, tokenizer)
        if (directory / OLD_META_FILE).is_file():
            return cls._from_old_format(directory, tokenizer, device, dtype)
        config = load_config(directory)
        if not _is_one_label_classifier(config):
            raise ValueError(
                f"{directory} is not a reward model: it holds {config.architectures} with "
                f"{config.num_labels} labels, not a sequence classifier with one"
            )
        classifier = load_pretrained(AutoModelForSequenceClassification, directory, dtype)
        trunk = cast(PreTrainedModel, classifier.base_model)
        fit_embeddings(trunk, tokenizer)
        head = cast(nn.Linear, classifier.score).float()  # fp32 whatever the trunk's dtype
        model = cls(trunk, head, score_offset=float(getattr(config, SCORE_OFFSET, 0.0)))
        return model.to(device)

    @classmethod
    def _from_old_format(
        cls,
        directory: Path,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        dtype: torch.dtype,
    ) -> RewardModel:
        """Trunk + `score_head.safetensors` (a biased Linear) + `reward_model.json`: the head's
        bias, which held the centring on the demonstrations, becomes the score offset."""
        meta_path = directory / OLD_META_FILE
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != OLD_FORMAT:
            raise ValueError(f"{meta_path} has format {meta.get('format')!r}, not {OLD_FORMAT!r}")
        old_head = load_file(str(directory / OLD_HEAD_FILE))
        trunk = load_pretrained(AutoModel, directory, dtype)
        fit_embeddings(trunk, tokenizer)
        model = cls(trunk, score_offset=float(old_head["bias"].item()))
        with torch.no_grad():
            model.head.weight.copy_(old_head["weight"])
        return model.to(device)

    def save_pretrained(self, path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write the model as the Hugging Face sequence classifier (one label) of the trunk's
        architecture, with the tokenizer beside it."""
        path.mkdir(parents=True, exist_ok=True)
        self.as_sequence_classifier().save_pretrained(str(path), safe_serialization=True)
        tokenizer.save_pretrained(str(path))

    def as_sequence_classifier(self) -> PreTrainedModel:
        """The trunk's `XForSequenceClassification` (num_labels=1) holding this model's own
        tensors (not copies): built empty from the trunk's config, which also gives the key names
        the class saves under, then filled with the trunk's and the head's weights."""
        config = copy.deepcopy(self.trunk.config)
        config.num_labels = 1
        setattr(config, SCORE_OFFSET, self.score_offset)
        with torch.device("meta"):  # no memory for weights that are about to be replaced
            classifier = AutoModelForSequenceClassification.from_config(config)
        # strict: a trunk whose names differ from the class's base model is an error, not a
        # silently random model.
        classifier.base_model.load_state_dict(self.trunk.state_dict(), strict=True, assign=True)
        classifier.score.load_state_dict(self.head.state_dict(), strict=True, assign=True)
        return cast(PreTrainedModel, classifier)


def _is_one_label_classifier(config: Any) -> bool:
    architectures = config.architectures or []
    return config.num_labels == 1 and any(
        name.endswith("ForSequenceClassification") for name in architectures
    )


def _check_same_tokenizer(directory: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """A reward model reads token ids: those of another tokenizer would mean other words."""
    if not (directory / "tokenizer_config.json").is_file():
        return
    own_vocab = AutoTokenizer.from_pretrained(str(directory), local_files_only=True).get_vocab()
    if own_vocab != tokenizer.get_vocab():
        raise ValueError(
            f"the reward model at {directory} was trained with a different tokenizer than "
            f"{tokenizer.name_or_path}: it cannot score (or value) that model's tokens"
        )

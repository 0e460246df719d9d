"""The reward model: an LM trunk and a scalar head (also PPO's value model), saved as the trunk
with safetensors plus the head and a small JSON file that says what it is."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.engine import cpu_fast
from training.engine.cpu_fast import gpt2
from training.engine.lm import (
    fit_embeddings,
    load_pretrained,
    position_ids_from_mask,
    response_hidden_states,
    trunk_hidden_states,
)

REWARD_MODEL_FORMAT = "instructloop-reward-model"
REWARD_HEAD_FILE = "score_head.safetensors"
REWARD_META_FILE = "reward_model.json"


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each row, whichever side the padding is on.  # (batch,)"""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(-1)


class RewardModel(nn.Module):
    """LM trunk + scalar head. As a reward model it scores a sequence at its last real token
    (InstructGPT: the reward is read at the EOS that ends the completion); as a value model the
    same head gives one value per position."""

    def __init__(self, trunk: PreTrainedModel, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        hidden_size = trunk.config.hidden_size
        if head is None:
            head = nn.Linear(hidden_size, 1)
            # lm-human-preferences initialises the reward head with std 1/sqrt(d_model + 1).
            nn.init.normal_(head.weight, std=1 / math.sqrt(hidden_size + 1))
            nn.init.zeros_(head.bias)
        self.head = head

    @property
    def config(self) -> Any:
        return self.trunk.config

    def _hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int = 0
    ) -> torch.Tensor:
        return trunk_hidden_states(self.trunk, input_ids, attention_mask, start)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        # The scalar head stays in fp32 under bf16 autocast: scores are compared to each other
        # and shifted by a bias, and bf16 keeps only three significant digits.
        with torch.autocast(hidden.device.type, enabled=False):
            return self.head(hidden.float()).squeeze(-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scalar score per sequence, read at its last real token.  # (batch,)"""
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
        all its completions. Same scores as `forward` on the concatenated sequences.
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
        cache = DynamicCache(
            ddp_cache_data=[
                (layer.keys[prompt_index], layer.values[prompt_index])
                for layer in prompt_out.past_key_values.layers
            ],
            config=self.trunk.config,
        )
        outputs = self.trunk(
            input_ids=completion_ids,
            attention_mask=key_is_real.long(),
            position_ids=completion_positions,
            past_key_values=cache,
            use_cache=True,
        )
        hidden = outputs.last_hidden_state  # (completions, T, hidden)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self._head(hidden[rows, last_index])

    def values(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int, end: int
    ) -> torch.Tensor:
        """Head output at positions start..end-1 (value estimates).  # (batch, end - start)"""
        return self._head(self._hidden(input_ids, attention_mask, start)[:, : end - start])

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
        return self._head(
            response_hidden_states(
                self.trunk, input_ids, attention_mask, prompt_length, response_mask
            )
        )

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
        directory = Path(path)
        meta_path = directory / REWARD_META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{directory} is not a reward model directory (no {REWARD_META_FILE})"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != REWARD_MODEL_FORMAT:
            raise ValueError(
                f"{meta_path} has format {meta.get('format')!r}, not {REWARD_MODEL_FORMAT!r}"
            )
        if (directory / "tokenizer_config.json").is_file():
            own_vocab = AutoTokenizer.from_pretrained(str(directory)).get_vocab()
            if own_vocab != tokenizer.get_vocab():
                raise ValueError(
                    f"the reward model at {directory} was trained with a different tokenizer than "
                    f"{tokenizer.name_or_path}: it cannot score (or value) that model's tokens"
                )
        model = cls.from_causal_lm(directory, tokenizer, device, dtype)
        model.head.load_state_dict(load_file(str(directory / REWARD_HEAD_FILE), device=str(device)))
        return model

    def save_pretrained(self, path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.trunk.save_pretrained(str(path), safe_serialization=True)
        tokenizer.save_pretrained(str(path))
        head = {name: t.detach().contiguous().cpu() for name, t in self.head.state_dict().items()}
        save_file(head, str(path / REWARD_HEAD_FILE))
        meta = {
            "format": REWARD_MODEL_FORMAT,
            "version": 1,
            "hidden_size": self.trunk.config.hidden_size,
            "score": "head(hidden state at the last non-pad token)",
        }
        (path / REWARD_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

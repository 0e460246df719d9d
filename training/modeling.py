"""Loading, saving and formatting for the models every stage shares.

Safety: weights load only from safetensors and never with remote code (pickle weights can run
code when loaded).
Precision: weights stay fp32; on CUDA the forwards run under bf16 autocast, on CPU in fp32.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training import gpt2

PAD_TOKEN = "<|pad|>"  # noqa: S105 (a token, not a password)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
REWARD_MODEL_FORMAT = "instructloop-reward-model"
REWARD_HEAD_FILE = "score_head.safetensors"
REWARD_META_FILE = "reward_model.json"

Prompt = str | list[dict[str, str]]


# --- device and precision -------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when present; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype: bf16 on CUDA when asked or "auto", always fp32 on CPU."""
    if device.type != "cuda":
        if name == "bfloat16":
            warnings.warn("bfloat16 was asked for on CPU; computing in float32", stacklevel=2)
        return torch.float32
    if name == "float32":
        return torch.float32
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (fp32 master weights and optimizer state); nothing on CPU."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def disable_dropout(model: nn.Module) -> None:
    """Dropout off: PPO's ratio and KL must compare deterministic functions (Huang et al. 2024)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def draws_random_numbers(model: nn.Module) -> bool:
    """Whether a training-mode forward is random: a Dropout with p > 0, or an attention dropout
    rate that the architecture applies as a float (Llama-style `attention_dropout`). Two threads
    drawing from torch's one generator would make such a step irreproducible."""
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            return True
        rate = getattr(module, "attention_dropout", None)
        if isinstance(rate, float) and rate > 0:
            return True
    return False


# --- loading --------------------------------------------------------------------------------------


def check_safetensors_weights(path: str | Path) -> None:
    """Refuse a local model directory whose weights exist only as pickle files."""
    directory = Path(path)
    if not directory.is_dir():
        return  # a hub name: `use_safetensors=True` makes transformers refuse pickle weights there
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(f.name for f in directory.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(
            f"{directory} holds only pickle weights ({', '.join(pickles)}); they can run code when "
            "loaded, so they are refused. Convert the model to safetensors first."
        )
    raise FileNotFoundError(f"{directory} has no *.safetensors weights")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Tokenizer with an EOS and a pad distinct from it (a pad equal to EOS would mask out EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer at {path} has no EOS token; responses must end with one")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "right"
    return tokenizer


def _fit_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id


def _load_config(path: str | Path) -> PretrainedConfig:
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    if getattr(config, "activation_function", None) == "gelu_new":
        # The same tanh-approximated GELU as one fused kernel instead of seven elementwise ops
        # (about a quarter of a small GPT-2's training time on CPU).
        config.activation_function = "gelu_pytorch_tanh"
    return config


def _from_pretrained(auto_class: Any, path: str | Path) -> PreTrainedModel:
    check_safetensors_weights(path)
    return auto_class.from_pretrained(
        str(path),
        config=_load_config(path),
        trust_remote_code=False,
        use_safetensors=True,
        dtype=torch.float32,
        attn_implementation="sdpa",
    )


def load_causal_lm(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, device: torch.device
) -> PreTrainedModel:
    model = _from_pretrained(AutoModelForCausalLM, path)
    _fit_embeddings(model, tokenizer)
    return model.to(device)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def save_causal_lm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))


# --- chat formatting ------------------------------------------------------------------------------


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> str:
    """Prompt text up to where the assistant's reply starts."""
    messages = as_messages(prompt)
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turns = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
    return turns + "Assistant: "


# --- causal LM forwards ---------------------------------------------------------------------------


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions count real tokens only: a left-padded prompt gets the positions it had in SFT."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _lm_head_is_plain(model: PreTrainedModel) -> bool:
    # Models that scale or soft-cap logits after the output projection need their own forward.
    config = model.config
    return not (
        getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None)
    )


def trunk_hidden_states(
    trunk: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int = 0
) -> torch.Tensor:
    """Final hidden states of a trunk at positions start.. (GPT-2 skips the last block's work on
    the positions before).  # (batch, seq - start, hidden)"""
    positions = position_ids_from_mask(attention_mask)
    if gpt2.supports(trunk):
        _, hidden = gpt2.run_trunk(trunk, input_ids, attention_mask.bool(), positions, read=start)
        return hidden
    outputs = trunk(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
    )
    return outputs.last_hidden_state[:, start:]


def logits_at(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    start: int,
    end: int,
) -> torch.Tensor:
    """Next-token logits for positions start..end-1 only: the output projection is most of a small
    model's FLOPs, so it is applied only where a loss or log-prob is read.
    # (batch, end - start, vocab)"""
    if not _lm_head_is_plain(model):
        positions = position_ids_from_mask(attention_mask)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
        return logits.logits[:, start:end]
    hidden = trunk_hidden_states(model.base_model, input_ids, attention_mask, start)
    return model.get_output_embeddings()(hidden[:, : end - start])


def response_hidden_states(
    trunk: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_length: int,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """Final hidden states at the positions that predict the response tokens where response_mask
    is set (prompt_length - 1 + t for token t), in row-major (episode, token) order. GPT-2 computes
    only the real tokens those positions see: no prompt or response padding, nothing after each
    row's last read position.
    input_ids, attention_mask: (batch, >= prompt_length + T - 1); response_mask: (batch, T).
    # (response_mask.sum(), hidden)"""
    response_mask = response_mask.bool()
    length, width = input_ids.shape[1], response_mask.shape[1]
    if gpt2.supports(trunk):
        read = F.pad(response_mask, (prompt_length - 1, length - prompt_length + 1 - width))
        # A read position sees the real tokens up to itself: those after a row's last are unused.
        last_read = prompt_length - 2 + response_mask.sum(1, keepdim=True)  # (batch, 1)
        columns = torch.arange(length, device=input_ids.device)
        keep = (attention_mask.bool() & (columns <= last_read)) | read
        positions = position_ids_from_mask(attention_mask)
        return gpt2.run_trunk_packed(trunk, input_ids, keep, positions, read)
    hidden = trunk_hidden_states(trunk, input_ids, attention_mask, prompt_length - 1)
    return hidden[:, :width][response_mask]


def response_logits(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_length: int,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """Next-token logits predicting the response tokens where response_mask is set, row-major:
    the output projection runs on real response tokens only.  # (response_mask.sum(), vocab)"""
    if not _lm_head_is_plain(model):
        width = response_mask.shape[1]
        start = prompt_length - 1
        logits = logits_at(model, input_ids, attention_mask, start, start + width)
        return logits[response_mask.bool()]
    hidden = response_hidden_states(
        model.base_model, input_ids, attention_mask, prompt_length, response_mask
    )
    return model.get_output_embeddings()(hidden)


def hidden_where(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    select: torch.Tensor,
) -> torch.Tensor:
    """Final hidden states (what the output projection reads) at the positions where `select` is
    true, for models whose logits are a plain projection.  # (n_selected, hidden)"""
    start = int(select.any(0).nonzero()[0])  # the first position any row reads
    hidden = trunk_hidden_states(model.base_model, input_ids, attention_mask, start)
    return hidden[select[:, start:]]


def logits_where(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    select: torch.Tensor,
) -> torch.Tensor:
    """Next-token logits at the positions where `select` is true.  # (n_selected, vocab)"""
    if not _lm_head_is_plain(model):
        positions = position_ids_from_mask(attention_mask)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
        return logits.logits[select]
    hidden = hidden_where(model, input_ids, attention_mask, select)
    return model.get_output_embeddings()(hidden)


def bias_free_head(model: PreTrainedModel) -> torch.Tensor | None:
    """The weight of the output projection when the logits are exactly hidden @ weight.T (no
    bias, scaling or soft-capping), else None.  # (vocab, hidden)"""
    head = model.get_output_embeddings()
    if not _lm_head_is_plain(model) or type(head) is not nn.Linear or head.bias is not None:
        return None
    return head.weight


# --- reward model ---------------------------------------------------------------------------------


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
        if gpt2.supports(self.trunk):
            # Real tokens only (packed): no prompt or response padding is computed.
            read = F.one_hot(last_real_index(attention_mask), input_ids.shape[1]).bool()
            last_hidden = gpt2.run_trunk_packed(
                self.trunk,
                input_ids,
                attention_mask.bool() | read,
                position_ids_from_mask(attention_mask),
                read,
            )
            return self._head(last_hidden)
        hidden = self._hidden(input_ids, attention_mask)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last_hidden = hidden[rows, last_real_index(attention_mask)]  # (batch, hidden)
        return self._head(last_hidden)

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
        if gpt2.supports(self.trunk):
            prompt_kv, _ = gpt2.run_trunk(
                self.trunk, prompt_ids, prompt_mask.bool(), position_ids_from_mask(prompt_mask)
            )
            _, last_hidden = gpt2.run_trunk(
                self.trunk,
                completion_ids,
                key_is_real,
                completion_positions,
                # Each completion's copy of its prompt's keys and values; run_trunk puts them before
                # the completion's own with a cat, whose backward slices the gradient.
                past=[
                    tuple(gpt2.contiguous_grad(t.index_select(0, prompt_index)) for t in layer)
                    for layer in prompt_kv
                ],
                read=last_index,
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
        cls, path: str | Path, tokenizer: PreTrainedTokenizerBase, device: torch.device
    ) -> RewardModel:
        """Fresh head on the trunk of a causal LM (the SFT model)."""
        trunk = _from_pretrained(AutoModel, path)
        _fit_embeddings(trunk, tokenizer)
        return cls(trunk).to(device)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, tokenizer: PreTrainedTokenizerBase, device: torch.device
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
        model = cls.from_causal_lm(directory, tokenizer, device)
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


def iter_params_with_grad(*models: nn.Module) -> Iterator[nn.Parameter]:
    for model in models:
        yield from (p for p in model.parameters() if p.requires_grad)

"""Causal LMs every stage shares: loading, saving, chat formatting, and the forwards that compute
logits and hidden states only where they are read.

Safety: weights load only from safetensors and never with remote code (pickle weights can run
code when loaded).

A model is loaded for a `Role`: frozen (PPO's reference and reward model, DPO's reference,
sampling) in the frozen dtype, or trained in the master-weights dtype, with LoRA adapters and
activation checkpointing when the config asks (memory.py). A trained model is plain again
(`end_training`) before it is saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.engine import cpu_fast, memory
from training.engine.config import TrainedModelConfig
from training.engine.cpu_fast import gpt2
from training.engine.memory import LoraSettings
from training.engine.precision import Precision

PAD_TOKEN = "<|pad|>"  # noqa: S105 (a token, not a password)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

Prompt = str | list[dict[str, str]]
M = TypeVar("M", bound=nn.Module)


# --- model state ----------------------------------------------------------------------------------


def disable_dropout(model: nn.Module) -> None:
    """Dropout off: PPO's ratio and KL must compare deterministic functions (Huang et al. 2024).
    Also the attention dropout rate that Llama-style attention applies as a float in training
    mode (where a model is under activation checkpointing)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            setattr(module, "attention_dropout", 0.0)  # noqa: B010 (typed as a Module attribute)


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


def local_only(path: str | Path) -> dict[str, bool]:
    """`from_pretrained`'s option for a local directory (a model version the worker fetched):
    never ask a hub about it. A hub name (a base model an admin registered) keeps the default."""
    return {"local_files_only": True} if Path(path).is_dir() else {}


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Tokenizer with an EOS and a pad distinct from it (a pad equal to EOS would mask out EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(
        str(path), trust_remote_code=False, **local_only(path)
    )
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer at {path} has no EOS token; responses must end with one")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "right"
    return tokenizer


def fit_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    embeddings = cast(nn.Embedding, model.get_input_embeddings())  # typed as a plain Module
    if embeddings.num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id


def load_config(path: str | Path) -> PretrainedConfig:
    """A model directory's config, as `load_pretrained` builds the model from it."""
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=False, **local_only(path))
    if getattr(config, "activation_function", None) == "gelu_new":
        # The same tanh-approximated GELU as one fused kernel instead of seven elementwise ops
        # (about a quarter of a small GPT-2's training time on CPU).
        config.activation_function = "gelu_pytorch_tanh"
    return config


def load_pretrained(
    auto_class: Any, path: str | Path, dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    check_safetensors_weights(path)
    return auto_class.from_pretrained(
        str(path),
        config=load_config(path),
        trust_remote_code=False,
        use_safetensors=True,
        dtype=dtype,
        attn_implementation="sdpa",
        **local_only(path),
    )


@dataclass(frozen=True)
class Role:
    """How a loaded model is held: its weights' dtype, and frozen or trained (with LoRA adapters
    and activation checkpointing when asked)."""

    dtype: torch.dtype = torch.float32
    frozen: bool = False
    gradient_checkpointing: bool = False
    lora: LoraSettings | None = None


def frozen_role(precision: Precision) -> Role:
    return Role(precision.frozen, frozen=True)


def trained_role(cfg: TrainedModelConfig, precision: Precision) -> Role:
    lora = None
    if cfg.lora_rank > 0:
        lora = LoraSettings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets())
    return Role(precision.trained, gradient_checkpointing=cfg.gradient_checkpointing, lora=lora)


def take_role(model: PreTrainedModel, role: Role) -> None:
    """Freeze `model`, or make it ready to train as `role` says (LoRA, then checkpointing). On a
    reward model's trunk: its head stays outside peft and trains fully."""
    if role.frozen:
        freeze(model)
        return
    if role.lora is not None:
        memory.add_adapters(model, role.lora)
    if role.gradient_checkpointing:
        # Checkpointing acts in training mode only, and from_pretrained gives eval mode (PPO
        # never leaves it: its dropout is off anyway).
        model.train()
        memory.enable_checkpointing(model)


def end_training(model: PreTrainedModel) -> None:
    """Make a trained model (or trunk) plain for saving: adapters merged into its weights and
    checkpointing off. A saved model version is always a plain Hugging Face directory."""
    memory.merge_adapters(model)
    memory.disable_checkpointing(model)


def load_causal_lm(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
    role: Role = Role(),  # noqa: B008 (a frozen dataclass)
) -> PreTrainedModel:
    """A causal LM for `role` (by default trained, fp32, without LoRA or checkpointing)."""
    model = load_pretrained(AutoModelForCausalLM, path, role.dtype)
    fit_embeddings(model, tokenizer)
    # transformers wraps PreTrainedModel.to in a decorator whose type drops `self`.
    model = model.to(device)  # type: ignore[arg-type]
    take_role(model, role)
    return model


def freeze(model: M) -> M:
    model.eval()
    model.requires_grad_(False)
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What an optimizer steps: every parameter under full fine-tuning; with LoRA, the adapters
    (and a reward or value model's head)."""
    return [p for p in model.parameters() if p.requires_grad]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode meanwhile, then the mode it had. Sampling needs it from a trained model: under
    activation checkpointing a model in training mode keeps no KV cache."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def save_causal_lm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """Weights in the dtype they were trained in: fp32 master weights stay fp32 (the next stage
    loads them in the dtype its role asks for, nothing rounded away meanwhile), pure-bf16 ones
    bf16."""
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
        # tokenize=False: the rendered text (the return type covers every mode)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return cast(str, text)
    turns = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
    return turns + "Assistant: "


# --- causal LM forwards ---------------------------------------------------------------------------


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions count real tokens only: a left-padded prompt gets the positions it had in SFT."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def trunk_of(model: PreTrainedModel) -> PreTrainedModel:
    """A causal LM's trunk (GPT2Model under GPT2LMHeadModel); transformers types `base_model` as
    a plain Module."""
    return cast(PreTrainedModel, model.base_model)


def _lm_head_is_plain(model: PreTrainedModel) -> bool:
    """Whether the logits are the output projection of the trunk's hidden states, computed apart.
    Not for models that scale or soft-cap logits after the projection, nor for a model sharded
    with FSDP2, whose root forward is what gathers the embeddings and the output projection."""
    config = model.config
    return not (
        getattr(config, "final_logit_softcapping", None)
        or getattr(config, "logit_scale", None)
        or isinstance(model, FSDPModule)
    )


def trunk_hidden_states(
    trunk: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int = 0
) -> torch.Tensor:
    """Final hidden states of a trunk at positions start..  # (batch, seq - start, hidden)"""
    positions = position_ids_from_mask(attention_mask)
    if cpu_fast.gpt2_applies(trunk):  # cpu_fast: the last block only from `start` on
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
    hidden = trunk_hidden_states(trunk_of(model), input_ids, attention_mask, start)
    return model.get_output_embeddings()(hidden[:, : end - start])


def response_hidden_states(
    trunk: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_length: int,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """Final hidden states at the positions that predict the response tokens where response_mask
    is set (prompt_length - 1 + t for token t), in row-major (episode, token) order.
    input_ids, attention_mask: (batch, >= prompt_length + T - 1); response_mask: (batch, T).
    # (response_mask.sum(), hidden)"""
    response_mask = response_mask.bool()
    if cpu_fast.gpt2_applies(trunk):  # cpu_fast: the real tokens those positions see, packed
        positions = position_ids_from_mask(attention_mask)
        return gpt2.response_hidden_states(
            trunk, input_ids, attention_mask, positions, prompt_length, response_mask
        )
    hidden = trunk_hidden_states(trunk, input_ids, attention_mask, prompt_length - 1)
    return hidden[:, : response_mask.shape[1]][response_mask]


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
        trunk_of(model), input_ids, attention_mask, prompt_length, response_mask
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
    hidden = trunk_hidden_states(trunk_of(model), input_ids, attention_mask, start)
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

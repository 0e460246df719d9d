"""The two ways a trained model is held in less memory: LoRA adapters and activation checkpointing.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) comes from peft, injected into the model
in place (`LoraModel` on the model itself, not a `PeftModel` wrapper): the model keeps its class,
its trunk and its output projection, so lm.py's forwards and the reward model's head read it as
before. Every weight outside the adapters is frozen. Before a model version is saved the adapters
are merged into the weights they adapt (`merge_adapters`), so every saved model is a plain Hugging
Face directory. peft is imported only when a run asks for LoRA (its import alone takes over a
second).

Activation checkpointing recomputes each layer's activations in the backward pass instead of
keeping them (Chen et al. 2016, https://arxiv.org/abs/1604.06174), non-reentrant (torch's
recommended variant; it needs no input that requires grad, which frozen embeddings under LoRA
would not give).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

if TYPE_CHECKING:
    from peft.tuners.tuners_utils import BaseTunerLayer

ADAPTER = "default"  # peft's name for a model's one adapter


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: int
    dropout: float
    target_modules: str | list[str]  # "all-linear" (all but the output projection) or names


def add_adapters(model: PreTrainedModel, lora: LoraSettings) -> None:
    """Inject LoRA adapters (in the dtype of the weights they adapt) into `model` in place and
    freeze every other weight of it."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",  # with trained biases, the adapter-free model would not be the base model
        # GPT-2 stores its linear layers transposed (Conv1D); peft must know, or it warns per layer.
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
    )
    LoraModel(model, config, ADAPTER)


def _adapter_layers(model: nn.Module) -> list[tuple[str, BaseTunerLayer]]:
    if "peft" not in sys.modules:  # no adapter exists before peft is imported
        return []
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def has_adapters(model: nn.Module) -> bool:
    return bool(_adapter_layers(model))


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """The base model's forward meanwhile (adapters skipped); nothing changes for a model without
    adapters. Not thread-safe: nothing else may run the model meanwhile."""
    layers = [layer for _, layer in _adapter_layers(model)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def merge_adapters(model: nn.Module) -> None:
    """Add each adapter's update (alpha / rank) * B @ A into the weight it adapts and put the plain
    layer back in its place (peft's merge_and_unload, in place): the model is its own architecture
    again, for save_pretrained. After training only: the adapters are gone."""
    for name, layer in _adapter_layers(model):
        layer.merge(adapter_names=[ADAPTER])
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def enable_checkpointing(model: PreTrainedModel) -> None:
    kwargs = {"use_reentrant": False}
    # transformers 5's name, or the old one it deprecates (which warns there)
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # a cache is recomputed, not kept, under checkpointing


def disable_checkpointing(model: PreTrainedModel) -> None:
    """Checkpointing off and the cache default back on (what a saved config.json says)."""
    if is_checkpointing(model):
        # transformers 5's name, or the old one it deprecates
        getattr(model, "activation_checkpointing_disable", model.gradient_checkpointing_disable)()
        model.config.use_cache = True


def is_checkpointing(model: nn.Module) -> bool:
    """Whether any layer of `model` recomputes its activations in training mode."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())

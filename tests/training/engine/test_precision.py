"""Devices, compute dtypes and the dtypes trained and frozen models are held in."""

from __future__ import annotations

import torch

from training.engine.precision import autocast, resolve_dtype, resolve_precision

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def test_auto_computes_in_bf16_on_cuda_and_fp32_on_the_cpu():
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("auto", CUDA) == torch.bfloat16
    assert resolve_dtype("float32", CUDA) == torch.float32


def test_bf16_asked_for_on_the_cpu_is_honoured_and_autocasts_there():
    assert resolve_dtype("bfloat16", CPU) == torch.bfloat16
    with autocast(CPU, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(CPU, torch.float32):
        assert not torch.is_autocast_enabled("cpu")


def test_the_defaults_hold_every_model_in_fp32_on_the_cpu():
    precision = resolve_precision(CPU)
    assert (precision.compute, precision.trained, precision.frozen) == (torch.float32,) * 3


def test_on_cuda_frozen_models_follow_the_bf16_compute_and_trained_ones_keep_fp32_masters():
    precision = resolve_precision(CUDA)
    assert (precision.compute, precision.trained, precision.frozen) == (
        torch.bfloat16, torch.float32, torch.bfloat16,
    )  # fmt: skip
    assert resolve_precision(CUDA, "float32").frozen == torch.float32


def test_bf16_master_weights_compute_in_bf16_and_frozen_dtype_can_be_set_apart():
    precision = resolve_precision(CPU, master_weights="bfloat16")
    assert (precision.compute, precision.trained) == (torch.bfloat16, torch.bfloat16)
    assert resolve_precision(CPU, frozen_dtype="bfloat16").frozen == torch.bfloat16
    assert resolve_precision(CUDA, frozen_dtype="float32").frozen == torch.float32

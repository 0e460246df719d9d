"""Devices and compute dtypes."""

from __future__ import annotations

import pytest
import torch

from training.engine.precision import resolve_dtype

CPU = torch.device("cpu")


def test_cpu_always_computes_in_float32():
    with pytest.warns(UserWarning, match="float32"):
        assert resolve_dtype("bfloat16", CPU) == torch.float32
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16

"""TF32 pinning for CUDA scoring calls, on CPU: precision_context and the CUDA-graph key take a device
object, and torch's TF32 switches are plain process state, so no GPU is needed.

torch >= 2.9 (README pins 2.13) has the per-backend ``fp32_precision`` API; after a user sets it, reading the
legacy ``allow_tf32`` flags raises. The package must read and set the API the running torch has, never both.
"""

import contextlib

import pytest
import torch

from met3r_metrics import precision
from met3r_metrics.cuda_graphs import _numerics_state
from met3r_metrics.scorer import precision_context

CUDA = torch.device("cuda")  # a device object only: nothing runs on it
matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn


def _new_state() -> tuple[str, str]:
    return matmul.fp32_precision, cudnn.conv.fp32_precision


@pytest.fixture
def new_api_state():
    """Save and restore the TF32 switches through the new API (the test sets them through it too)."""
    assert precision.new_api(), "torch 2.13 (README) has the fp32_precision API"
    saved = _new_state()
    yield
    matmul.fp32_precision, cudnn.conv.fp32_precision = saved


def _set(flag: str) -> None:
    matmul.fp32_precision = cudnn.conv.fp32_precision = flag


def test_new_api_first_then_precision_context_and_graph_key(new_api_state):
    """The user follows torch's advice (new API); a CUDA scoring call neither raises nor mixes in the legacy API."""
    _set("tf32")
    with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
        torch.get_float32_matmul_precision()  # what any legacy read now does (the bug this guards against)
    key_on = _numerics_state(CUDA)  # the CUDA-graph key reads the switches
    for p in ("fp32", "tf32", "bf16"):
        with precision_context(p, CUDA):
            assert _numerics_state(CUDA) != key_on if p == "fp32" else _numerics_state(CUDA) == key_on
    assert _new_state() == ("tf32", "tf32")


@pytest.mark.parametrize("start", ["tf32", "ieee"])
def test_cuda_branch_pins_tf32_per_precision_and_restores(new_api_state, start):
    """fp32: TF32 off inside whatever the caller set; tf32 / bf16: on; the caller's switches come back."""
    _set(start)
    with precision_context("fp32", CUDA):
        assert _new_state() == ("ieee", "ieee") and precision.tf32_flags() == (False, False)
    assert _new_state() == (start, start)
    for p in ("tf32", "bf16"):
        with precision_context(p, CUDA):
            assert _new_state() == ("tf32", "tf32") and precision.tf32_flags() == (True, True)
        assert _new_state() == (start, start)
    with contextlib.suppress(ZeroDivisionError), precision_context("fp32" if start == "tf32" else "tf32", CUDA):
        1 / 0  # restored on an exception too
    assert _new_state() == (start, start)


def test_cpu_touches_nothing(new_api_state):
    _set("tf32")
    with precision_context("fp32", torch.device("cpu")):
        assert _new_state() == ("tf32", "tf32")


def test_graph_key_follows_each_switch(new_api_state):
    keys = set()
    for m, c in (("tf32", "tf32"), ("tf32", "ieee"), ("ieee", "tf32"), ("ieee", "ieee")):
        matmul.fp32_precision, cudnn.conv.fp32_precision = m, c
        keys.add(_numerics_state(CUDA))
        assert precision.tf32_flags() == (m == "tf32", c == "tf32")
    assert len(keys) == 4


def test_legacy_api_on_a_torch_without_the_new_one(monkeypatch):
    """A torch without fp32_precision: the legacy allow_tf32 flags are read, pinned and restored."""
    saved_new = _new_state()
    saved_legacy = (matmul.allow_tf32, cudnn.allow_tf32)  # readable: nothing set the new API in this test
    monkeypatch.setattr(precision, "new_api", lambda: False)
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = True
        with precision_context("fp32", CUDA):
            assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False) == precision.tf32_flags()
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        with precision_context("tf32", CUDA):
            assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True) == precision.tf32_flags()
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved_legacy  # legacy setters keep both APIs consistent
        matmul.fp32_precision, cudnn.conv.fp32_precision = saved_new

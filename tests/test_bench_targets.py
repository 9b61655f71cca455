"""The naive masked baseline of the issue-16 target rows gives meProp's gradients (so the comparison is fair)."""

import pytest
import torch

from mesimp_lib.bench_targets import masked_linear, targets_markdown
from mesimp_lib.meprop import MePropLinear


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_masked_linear_matches_meprop(mode):
    torch.manual_seed(0)
    layer = MePropLinear(12, 9, k=3, mode=mode)
    x = torch.randn(5, 12, requires_grad=True)
    g = torch.randn(5, 9)
    want = torch.autograd.grad(layer(x), (x, layer.weight, layer.bias), g)
    got = torch.autograd.grad(masked_linear(x, layer.weight, layer.bias, 3, mode), (x, layer.weight, layer.bias), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert (got[1].abs().sum(1) != 0).sum() < 9  # really masked: some rows of the weight gradient are zero


def test_targets_markdown_row():
    row = {"what": "w", "mode": "unified", "kernel": "torch", "weight_grad": "dense", "batch": 2, "n_in": 4, "n": 4,
           "k": 1, "target": 10.0, "speedup": 3.0, "limit": 4.0, "dense_ms": 1.0, "meprop_ms": 0.5, "masked_ms": 1.0,
           "speedup_vs_masked": 2.0, "correct": True, "met": False}
    text = "\n".join(targets_markdown([row]))
    assert "| >= 10x | **3.00x** | 4x |" in text and text.rstrip().endswith("| yes | no |")
    assert targets_markdown([]) == []

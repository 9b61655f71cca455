"""k >= width (or None / 0) is an exact dense backward that keeps every entry: ``stats.last_indices``
then holds every index, in every kernel, so code that reads the kept set works at every k (notebook 00's
exercise 1)."""

import pytest
import torch

from mesimp_lib import MePropLinear
from mesimp_lib.fused import kernels

KERNELS = ["torch"] + (["fused", "native"] if kernels() is not None else [])


def _layer(k, mode="per_example", kernel="torch"):
    wg = "dense"  # every kernel returns dW through autograd
    return MePropLinear(4, 8, k=k, mode=mode, kernel=kernel, weight_grad=wg)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mode", ["per_example", "random", "unified"])
@pytest.mark.parametrize("k", [None, 0, 8, 9])
def test_dense_backward_keeps_every_index(kernel, mode, k):
    torch.manual_seed(0)
    layer = _layer(k, mode, kernel)
    assert layer.k_effective is None
    x = torch.randn(3, 4, requires_grad=True)
    g = torch.randn(3, 8)
    layer(x).backward(g)
    idx = layer.stats.last_indices
    want = torch.arange(8) if mode == "unified" else torch.arange(8).expand(3, 8)
    assert torch.equal(idx, want)
    mask = torch.zeros_like(g)
    if mode == "unified":
        mask[:, idx] = 1.0
    else:
        mask.scatter_(1, idx, 1.0)
    g_k = g * mask
    assert torch.equal(g_k, g)  # nothing dropped
    torch.testing.assert_close(x.grad, g @ layer.weight.detach())  # exact dense backward
    torch.testing.assert_close(layer.weight.grad, g.T @ x.detach())
    assert layer.stats.backward_calls == 1 and int(layer.stats.counts.sum()) == 0  # counts: selections only


@pytest.mark.parametrize("kernel", KERNELS)
def test_last_indices_follow_k_changes(kernel):
    layer = _layer(2, kernel=kernel)
    x = torch.randn(3, 4, requires_grad=True)
    layer(x).backward(torch.randn(3, 8))
    assert layer.stats.last_indices.shape == (3, 2)
    layer.k = 8
    layer(x).backward(torch.randn(3, 8))
    assert layer.stats.last_indices.shape == (3, 8)
    layer.k = 3
    layer(x).backward(torch.randn(3, 8))
    assert layer.stats.last_indices.shape == (3, 3)


def test_no_backward_yet_means_no_indices():
    assert MePropLinear(4, 8, k=8).stats.last_indices is None

"""The default kernel is "auto": the compiled kernels where they build, the PyTorch reference otherwise;
the stored suites pin the reference kernel they were made with."""

import logging

import pytest
import torch

from mesimp_lib import MePropLinear
from mesimp_lib import fused as fused_mod
from mesimp_lib.suites import OWN_KERNEL, SUITES
from mesimp_lib.config import TrainConfig

needs_kernels = pytest.mark.skipif(fused_mod.kernels() is None, reason="native kernels unavailable here")


def _grads(layer, x, g):
    return torch.autograd.grad(layer(x), (x, layer.weight, layer.bias), g)


@needs_kernels
def test_default_takes_the_compiled_kernel_and_agrees_with_the_reference():
    torch.manual_seed(0)
    layer, ref = MePropLinear(6, 10, k=3), MePropLinear(6, 10, k=3, kernel="torch")
    ref.load_state_dict(layer.state_dict())
    x, g = torch.randn(4, 6, requires_grad=True), torch.randn(4, 10)
    got, want = _grads(layer, x, g), _grads(ref, x, g)
    assert layer.kernel == "auto" and TrainConfig().kernel == "auto"
    # the compiled kernel really does B*k*n_in per product; the PyTorch path multiplies a masked full gradient
    assert layer.stats.macs_ratio == pytest.approx(3 / 10) and ref.stats.macs_ratio == 1.0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_default_falls_back_to_the_reference_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(fused_mod, "_state", {})
    monkeypatch.setattr(fused_mod, "_load_cached", lambda *a, **k: (_ for _ in ()).throw(OSError("no compiler")))
    torch.manual_seed(0)
    layer, ref = MePropLinear(6, 10, k=3), MePropLinear(6, 10, k=3, kernel="torch")
    ref.load_state_dict(layer.state_dict())
    x, g = torch.randn(4, 6, requires_grad=True), torch.randn(4, 10)
    with caplog.at_level(logging.INFO, logger=fused_mod.log.name):
        got = _grads(layer, x, g)
    assert any(r.levelno == logging.WARNING and "pure PyTorch (OSError: no compiler)" in r.getMessage()
               for r in caplog.records)
    for a, b in zip(got, _grads(ref, x, g)):
        assert torch.equal(a, b)  # the same path, so the same bits
    monkeypatch.setattr(fused_mod, "_state", {})


def test_stored_suites_pin_the_reference_kernel():
    for suite, make in SUITES.items():
        kernels = {cfg.kernel for cfg in make().values()}
        assert kernels == ({"auto"} if suite in OWN_KERNEL else {"torch"}), suite
        for cfg in make().values():
            if suite not in OWN_KERNEL and cfg.task != "pos":
                assert "--kernel torch" in cfg.to_cli()


def _tied_gradient():
    """A batch whose rows have fewer non-zero entries than k (a ReLU's dead units give exact zeros), and
    column sums with ties at zero: the top-k must choose among equal entries."""
    g = torch.zeros(4, 12)
    g[0, 7], g[1, 3], g[2, 7], g[2, 9], g[3, 5] = 1.0, -2.0, 0.5, 0.5, 3.0
    return g


@needs_kernels
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_every_kernel_breaks_ties_alike(mode):
    """Equal |g| entries: every kernel keeps the lower indices, so the row-sparse gradient lists the same rows
    and LazyAdam moves the same rows (torch.topk alone left the choice among ties unspecified)."""
    from mesimp_lib.lazy import LazyAdam

    torch.manual_seed(0)
    x, g = torch.randn(4, 6), _tied_gradient()
    results = {}
    for kernel in ("torch", "fused", "native"):
        torch.manual_seed(1)
        layer = MePropLinear(6, 12, k=3, mode=mode, kernel=kernel, weight_grad="sparse")
        opt = LazyAdam(layer.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            layer(x).backward(g)
            rows = layer.weight.grad.coalesce().indices()[0].tolist()
            opt.step()
        results[kernel] = (rows, layer.stats.last_indices.tolist(), layer.weight.detach().clone())
    ref_rows, ref_idx, ref_w = results["torch"]
    for kernel, (rows, idx, w) in results.items():
        assert rows == ref_rows and idx == ref_idx, kernel
        torch.testing.assert_close(w, ref_w)
    lowest = [0, 1, 3, 5, 7, 9] if mode == "per_example" else [3, 5, 7]  # ties broken towards index 0
    assert ref_rows == lowest


def test_top_k_keeps_the_lower_index_among_ties():
    """selection.top_k against its definition: a stable sort by descending score, the first k, index order."""
    from mesimp_lib.selection import top_k

    gen = torch.Generator().manual_seed(0)
    for shape, k in (((10, 50), 5), ((7, 12), 3), ((40,), 6), ((3, 7), 7)):
        for trial in range(30):
            g = torch.randn(shape, generator=gen)
            if trial % 3 == 1:
                g[g.abs() < 0.7] = 0  # a ReLU's zeros: ties at the cut
            if trial % 3 == 2:
                g = torch.randint(0, 3, shape, generator=gen).float()  # ties everywhere
            want = g.abs().sort(dim=-1, descending=True, stable=True).indices.narrow(-1, 0, k).sort(dim=-1).values
            assert torch.equal(top_k(g.abs(), k), want)

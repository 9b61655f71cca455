"""meProp layers against oracles: a masked dense reference in float64, nn.Linear, gradcheck."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mesimp_lib import MePropLinear, meprop_linear, resolve_k
from mesimp_lib.fused import kernels as fused_kernels
from mesimp_lib.meprop import select_per_example, select_unified

torch.set_num_threads(1)


def masked_reference(x, w, g, k, mode, idx=None, rescale=False):
    """Plain dense products on a masked gradient: the definition of meProp."""
    if k is None:
        gk = g
    else:
        if mode == "unified":
            scores = g.abs().sum(0)
            keep = scores.topk(k).indices if idx is None else idx
            mask = torch.zeros_like(g)
            mask[:, keep] = 1
        else:
            keep = g.abs().topk(k, dim=1).indices if idx is None else idx
            mask = torch.zeros_like(g).scatter_(1, keep, 1.0)
        gk = g * mask * ((g.shape[1] / k) if rescale else 1.0)
    return gk @ w, gk.t() @ x, gk


def run_layer(layer, x, g):
    x = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    layer(x).backward(g)
    return x.grad, layer.weight.grad.to_dense(), layer.bias.grad


# ----------------------------------------------------------------------------- resolve_k


@pytest.mark.parametrize(
    "k,width,expected",
    [(None, 500, None), (0, 500, None), (0.0, 500, None), (500, 500, None), (900, 500, None), (20, 500, 20),
     (1, 500, 1), (0.04, 500, 20), (1.0, 500, None), (0.0001, 500, 1), (0.5, 3, 2)],
)
def test_resolve_k(k, width, expected):
    assert resolve_k(k, width) == expected


@pytest.mark.parametrize("k", [-1, -0.5, 1.5, 2.0, "20", True, [3]])
def test_resolve_k_rejects(k):
    with pytest.raises(ValueError, match=r"k=.*(allowed|width)"):
        resolve_k(k, 500)


def test_negative_k_message_names_value_and_width():
    with pytest.raises(ValueError, match=r"k=-3 is negative.*500"):
        MePropLinear(10, 500, k=-3)


def test_fraction_outside_unit_interval():
    with pytest.raises(ValueError, match=r"k=1.5 is a fraction outside \(0, 1\]"):
        MePropLinear(10, 50, k=1.5)


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"mode='topk'.*per_example, unified, random"):
        MePropLinear(4, 5, k=2, mode="topk")
    with pytest.raises(ValueError, match="mode="):
        meprop_linear(torch.randn(2, 4), torch.randn(5, 4), None, 2, "nope")


def test_mismatched_shapes():
    layer = MePropLinear(4, 5, k=2)
    with pytest.raises(ValueError, match=r"3 features.*in_features=4"):
        layer(torch.randn(2, 3))
    with pytest.raises(ValueError, match="features"):
        meprop_linear(torch.randn(2, 3), torch.randn(5, 4))


def test_bad_weight_grad_and_sizes():
    with pytest.raises(ValueError, match="weight_grad='x'"):
        MePropLinear(4, 5, weight_grad="x")
    with pytest.raises(ValueError, match="out_features=0"):
        MePropLinear(4, 0)


# ----------------------------------------------------------------------------- gradients


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 9),
    n_in=st.integers(1, 12),
    n_out=st.integers(1, 14),
    k=st.integers(0, 16),
    mode=st.sampled_from(["per_example", "unified", "random"]),
    weight_grad=st.sampled_from(["dense", "sparse"]),
    compact=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 10_000),
)
def test_gradients_equal_masked_reference(b, n_in, n_out, k, mode, weight_grad, compact, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n_in, dtype=torch.float64, generator=gen)
    g = torch.randn(b, n_out, dtype=torch.float64, generator=gen)
    layer = MePropLinear(n_in, n_out, k, mode, weight_grad=weight_grad, compact_threshold=compact).double()
    gx, gw, gb = run_layer(layer, x, g)
    kk = resolve_k(k, n_out)
    idx = layer.stats.last_indices if mode == "random" and kk is not None else None  # random: the drawn set
    rx, rw, _ = masked_reference(x, layer.weight.detach(), g, kk, mode, idx=idx)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gb, g.sum(0))  # bias gradient is dense by default


@pytest.mark.parametrize("k", [None, 0, 7, 50])
@pytest.mark.parametrize("mode", ["per_example", "unified", "random"])
def test_dense_k_equals_nn_linear_exactly(k, mode):
    torch.manual_seed(0)
    lin = nn.Linear(6, 7).double()
    layer = MePropLinear.from_linear(lin, k=k, mode=mode)
    x = torch.randn(5, 6, dtype=torch.float64)
    g = torch.randn(5, 7, dtype=torch.float64)
    xl = x.clone().requires_grad_(True)
    lin(xl).backward(g)
    gx, gw, gb = run_layer(layer, x, g)
    assert torch.equal(gx, xl.grad)
    assert torch.equal(gw, lin.weight.grad)
    assert torch.equal(gb, lin.bias.grad)


def test_gradcheck_dense_path():
    layer = MePropLinear(4, 3, k=None, weight_grad="dense").double()
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: layer(a), (x,))
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, ww: meprop_linear(a, ww, None, None), (x, w))


def test_sparse_gradient_is_not_the_true_gradient():
    """The test can fail: a top-k backward differs from dense whenever entries are dropped."""
    torch.manual_seed(1)
    layer = MePropLinear(8, 10, k=2, mode="per_example").double()
    x, g = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 10, dtype=torch.float64)
    gx, gw, _ = run_layer(layer, x, g)
    assert not torch.allclose(gx, g @ layer.weight.detach())
    assert int((gw.abs().sum(1) != 0).sum()) <= 8  # at most B*k rows


def test_random_mode_uses_k_distinct_indices_and_no_rescale():
    torch.manual_seed(3)
    layer = MePropLinear(5, 12, k=4, mode="random").double()
    x, g = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 12, dtype=torch.float64)
    gx, gw, _ = run_layer(layer, x, g)
    idx = layer.stats.last_indices
    assert idx.shape == (6, 4)
    assert all(len(set(r.tolist())) == 4 for r in idx)
    rx, rw, _ = masked_reference(x, layer.weight.detach(), g, 4, "random", idx=idx)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    # another draw selects something else (redrawn every backward)
    run_layer(layer, x, g)
    assert not torch.equal(layer.stats.last_indices.sort(1).values, idx.sort(1).values)


@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("kernel", ["torch", "fused", "native"])
def test_rescale_is_refused_outside_random_mode(mode, kernel):
    """rescale means one thing: random-k's entries times width/k; top-k modes refuse it (every kernel, the LSTM,
    the functional form), also when set after construction."""
    from mesimp_lib.lstm import MePropLSTM

    if kernel != "torch" and fused_kernels() is None:
        pytest.skip("native kernels unavailable")
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(ValueError, match=f"rescale=True applies to mode='random' only.*mode='{mode}'"):
        MePropLinear(4, 6, 2, mode, rescale=True, kernel=kernel)(x)
    layer = MePropLinear(4, 6, 2, "random", rescale=True, kernel=kernel)
    layer(x).sum().backward()  # random: fine
    layer.mode = mode
    with pytest.raises(ValueError, match="rescale=True applies to mode='random' only"):
        layer(x)
    if kernel != "native":
        with pytest.raises(ValueError, match="rescale=True applies to mode='random' only"):
            MePropLSTM(4, 3, 1, mode, rescale=True, kernel=kernel)(x.reshape(1, 2, 4))
    with pytest.raises(ValueError, match="rescale=True applies to mode='random' only"):
        meprop_linear(x, torch.randn(6, 4), None, 2, mode, rescale=True)


def test_random_rescale():
    torch.manual_seed(4)
    layer = MePropLinear(5, 12, k=3, mode="random", rescale=True).double()
    x, g = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 12, dtype=torch.float64)
    gx, _, _ = run_layer(layer, x, g)
    rx, _, _ = masked_reference(x, layer.weight.detach(), g, 3, "random", idx=layer.stats.last_indices, rescale=True)
    torch.testing.assert_close(gx, rx)


@pytest.mark.parametrize("compact", [0.0, 1.0])  # per example: masked products, or the union's columns
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_sparsify_bias(mode, compact):
    torch.manual_seed(5)
    layer = MePropLinear(5, 9, k=3, mode=mode, sparsify_bias=True, compact_threshold=compact).double()
    x, g = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 9, dtype=torch.float64)
    _, _, gb = run_layer(layer, x, g)
    _, _, gk = masked_reference(x, layer.weight.detach(), g, 3, mode)
    torch.testing.assert_close(gb, gk.sum(0))


def test_leading_dimensions():
    layer = MePropLinear(4, 6, k=2, mode="per_example").double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 3, 6)
    g = torch.randn_like(y)
    y.backward(g)
    rx, _, _ = masked_reference(x.detach().reshape(6, 4), layer.weight.detach(), g.reshape(6, 6), 2, "per_example")
    torch.testing.assert_close(x.grad.reshape(6, 4), rx)


# ----------------------------------------------------------------------------- weight-gradient forms


def test_buffer_form_is_refused_and_stored_configs_read_it_as_dense():
    with pytest.raises(ValueError, match="weight_grad='buffer' was removed.*'dense'"):
        MePropLinear(4, 5, 2, weight_grad="buffer")
    layer = MePropLinear(4, 5, 2)
    assert layer.weight_grad == "dense"
    layer.weight_grad = "buffer"  # set after construction: refused at the next forward
    with pytest.raises(ValueError, match="was removed"):
        layer(torch.randn(2, 4, requires_grad=True))
    from mesimp_lib.training import TrainConfig

    assert TrainConfig(weight_grad="buffer") == TrainConfig(weight_grad="dense") == TrainConfig()


@pytest.mark.parametrize("kernel", ["torch", "fused", "native"])
@pytest.mark.parametrize("mode", ["per_example", "random"])
def test_sparse_weight_grad_holds_exactly_the_selected_rows(kernel, mode):
    """The union of the batch's selections passes half the width (the torch kernel's masked products): the
    row-sparse gradient still holds only the selected rows, as the fused and native kernels do."""
    if kernel != "torch" and fused_kernels() is None:
        pytest.skip("native kernels unavailable")
    torch.manual_seed(3)
    layer = MePropLinear(6, 40, 3, mode, kernel=kernel, weight_grad="sparse").double()
    x = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(12, 40, dtype=torch.float64)
    layer(x).backward(g)
    sel = layer.stats.last_indices
    union = sorted(set(sel.reshape(-1).tolist()))
    assert 20 < len(union) < 40  # past the compaction threshold, not every row
    gw = layer.weight.grad.coalesce()
    assert gw._indices()[0].tolist() == union
    rx, rw, _ = masked_reference(x.detach(), layer.weight.detach(), g, 3, mode, idx=sel)
    torch.testing.assert_close(gw.to_dense(), rw)


def test_sparse_weight_grad_with_sgd():
    torch.manual_seed(0)
    layer = MePropLinear(6, 10, k=3, mode="unified", weight_grad="sparse")
    x = torch.randn(4, 6)
    layer(x).sum().backward()
    assert layer.weight.grad.is_sparse
    torch.optim.SGD(layer.parameters(), lr=0.1).step()


# ----------------------------------------------------------------------------- module behaviour


def test_state_dict_interchanges_with_nn_linear_and_same_init():
    torch.manual_seed(7)
    lin = nn.Linear(5, 3)
    torch.manual_seed(7)
    layer = MePropLinear(5, 3, k=1)
    assert torch.equal(lin.weight, layer.weight) and torch.equal(lin.bias, layer.bias)
    assert set(layer.state_dict()) == {"weight", "bias"}
    lin2 = nn.Linear(5, 3)
    lin2.load_state_dict(layer.state_dict())
    layer2 = MePropLinear(5, 3, k=2)
    layer2.load_state_dict(lin.state_dict())
    x = torch.randn(2, 5)
    assert torch.equal(lin2(x), layer2(x))
    assert torch.equal(layer.to_linear()(x), lin(x))


def test_no_grad_forward_is_plain_linear():
    layer = MePropLinear(5, 3, k=1)
    x = torch.randn(2, 5)
    with torch.no_grad():
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_stats_counts_rows_and_macs():
    torch.manual_seed(2)
    layer = MePropLinear(10, 50, k=5, mode="unified")
    x = torch.randn(8, 10)
    layer(x).sum().backward()  # every g entry is 1: non-zero
    s = layer.stats
    assert s.last_indices.shape == (5,)
    assert int(s.counts.sum()) == 8 * 5
    assert s.macs_ratio == pytest.approx(5 / 50)
    assert s.mean_rows_touched_frac == pytest.approx(5 / 50)
    layer2 = MePropLinear(10, 50, k=5, mode="per_example")
    y = layer2(x)
    g = torch.randn_like(y)
    g[:, :45] = 0  # only 5 columns have gradient
    y.backward(g)
    assert int(layer2.stats.counts.sum()) == 8 * 5
    assert set(layer2.stats.counts.nonzero().flatten().tolist()) <= set(range(45, 50))


def test_zero_gradients_not_counted_unless_asked():
    for count_zero, expected in ((False, 2 * 1), (True, 2 * 3)):
        layer = MePropLinear(4, 6, k=3, mode="per_example", count_zero_hits=count_zero)
        y = layer(torch.randn(2, 4))
        g = torch.zeros_like(y)
        g[:, 0] = 1.0  # one non-zero entry per row, k=3
        y.backward(g)
        assert int(layer.stats.counts.sum()) == expected


def test_k_change_is_validated_and_fraction_follows_width():
    layer = MePropLinear(4, 200, k=0.1)
    assert layer.k_effective == 20 and layer.backprop_ratio == pytest.approx(0.1)
    layer.k = 5
    assert layer.k_effective == 5
    with pytest.raises(ValueError):
        layer.k = -2
    assert layer.k == 5
    assert "k=5 (2.5% of 200)" in repr(layer)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("mode", ["per_example", "unified", "random"])
def test_cuda(mode):
    layer = MePropLinear(8, 16, k=3, mode=mode, device="cuda")
    x = torch.randn(4, 8, device="cuda", requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.device.type == "cuda" and layer.weight.grad.device.type == "cuda"


def test_selection_helpers_agree_with_numpy():
    import numpy as np

    g = torch.randn(5, 11, dtype=torch.float64)
    pe = select_per_example(g, 3).sort(1).values.numpy()
    ref = np.sort(np.argsort(-np.abs(g.numpy()), axis=1)[:, :3], axis=1)
    assert (pe == ref).all()
    un = np.sort(select_unified(g, 4).numpy())
    assert (un == np.sort(np.argsort(-np.abs(g.numpy()).sum(0))[:4])).all()


# ----------------------------------------------------------------------------- fused native kernels


def _fused_available():
    from mesimp_lib.fused import kernels

    return kernels() is not None


fused = pytest.mark.skipif(not _fused_available(), reason="native kernels cannot be built here")


@fused
@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 9),
    n_in=st.integers(1, 12),
    n_out=st.integers(2, 14),
    k=st.integers(1, 13),
    mode=st.sampled_from(["per_example", "unified", "random"]),
    rescale=st.booleans(),
    sparsify_bias=st.booleans(),
    weight_grad=st.sampled_from(["sparse", "dense"]),
    seed=st.integers(0, 10_000),
)
def test_fused_kernels_equal_masked_reference(b, n_in, n_out, k, mode, rescale, sparsify_bias, weight_grad, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n_in, dtype=torch.float64, generator=gen)
    g = torch.randn(b, n_out, dtype=torch.float64, generator=gen)
    layer = MePropLinear(n_in, n_out, k, mode, kernel="fused", rescale=rescale and mode == "random",
                         sparsify_bias=sparsify_bias, weight_grad=weight_grad).double()
    gx, gw, gb = run_layer(layer, x, g)
    kk = resolve_k(k, n_out)
    idx = layer.stats.last_indices if mode == "random" and kk is not None else None
    rx, rw, gk = masked_reference(x, layer.weight.detach(), g, kk, mode, idx=idx, rescale=rescale and mode == "random")
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gb, gk.sum(0) if sparsify_bias else g.sum(0))
    if kk is not None and mode != "unified":  # the record the kernel keeps: non-zero selected entries
        torch.testing.assert_close(layer.stats.counts, (gk != 0).sum(0))
        assert layer.stats.last_indices.shape == (b, kk)


@fused
@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 6), n_out=st.integers(2, 12), k=st.integers(1, 11), seed=st.integers(0, 10_000),
       count_zero_hits=st.booleans(), need_x=st.booleans())
def test_fused_per_example_with_relu_zeros(b, n_out, k, seed, count_zero_hits, need_x):
    """Gradients with exact zeros (ReLU): dW/dx as the masked reference; zero entries never count unless asked."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 5, dtype=torch.float64, generator=gen).requires_grad_(need_x)
    g = torch.randn(b, n_out, dtype=torch.float64, generator=gen).clamp_min(0.5) - 0.5  # about 30% zeros
    layer = MePropLinear(5, n_out, k, "per_example", kernel="fused", count_zero_hits=count_zero_hits,
                         weight_grad="sparse").double()
    layer(x).backward(g)
    kk = resolve_k(k, n_out)
    rx, rw, gk = masked_reference(x.detach(), layer.weight.detach(), g, kk, "per_example")
    torch.testing.assert_close(layer.weight.grad.to_dense(), rw)
    if need_x:
        torch.testing.assert_close(x.grad, rx)
    else:
        assert x.grad is None
    if kk is not None:
        sel = layer.stats.last_indices
        assert (g.abs().gather(1, sel).min(1).values >= g.abs().topk(kk, 1).values[:, -1]).all()
        expected = kk * b if count_zero_hits else int((gk != 0).sum())
        assert int(layer.stats.counts.sum()) == expected
        assert layer.weight.grad._indices()[0].tolist() == sorted(set(sel.reshape(-1).tolist()))  # as the torch path


def test_fused_fallback_when_the_extension_is_unavailable(monkeypatch, caplog):
    """MESIMP_FUSED=0 (or a failed build): kernel="auto" quietly uses PyTorch, one log line says so."""
    import logging

    from mesimp_lib import fused as fused_mod
    from mesimp_lib.lazy import LazyAdam

    monkeypatch.setattr(fused_mod, "_state", {})
    monkeypatch.setenv("MESIMP_FUSED", "0")
    with caplog.at_level(logging.INFO, logger="mesimp_lib.fused"):
        assert fused_mod.kernels() is None
    assert "pure PyTorch (disabled by MESIMP_FUSED=0)" in caplog.text
    torch.manual_seed(0)
    layer = MePropLinear(6, 9, 3, kernel="auto", weight_grad="sparse").double()
    x, g = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 9, dtype=torch.float64)
    gx, gw, gb = run_layer(layer, x, g)
    rx, rw, _ = masked_reference(x, layer.weight.detach(), g, 3, "per_example")
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    opt = LazyAdam(layer.parameters())  # the PyTorch loop
    opt.step()
    with pytest.raises(RuntimeError, match="unavailable"):
        MePropLinear(6, 9, 3, kernel="fused")(torch.randn(2, 6, requires_grad=True))
    with pytest.raises(RuntimeError, match="unavailable"):
        LazyAdam(layer.parameters(), native=True).step()
    monkeypatch.setattr(fused_mod, "_state", {})  # rebuilt state for the following tests


@fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("b,n_in,n_out,k", [(10, 784, 500, 20), (32, 1000, 300, 9), (3, 77, 130, 40), (1, 16, 64, 64)])
def test_fused_kernels_wide_layers_equal_masked_reference(dtype, mode, b, n_in, n_out, k):
    """Widths that take the vectorised chunk loops (64 and 16 wide, then the scalar tail), both dtypes."""
    gen = torch.Generator().manual_seed(b + n_in)
    x = torch.randn(b, n_in, dtype=dtype, generator=gen)
    g = torch.randn(b, n_out, dtype=dtype, generator=gen)
    for weight_grad in ("sparse", "dense"):
        layer = MePropLinear(n_in, n_out, k, mode, kernel="fused", weight_grad=weight_grad, dtype=dtype)
        gx, gw, gb = run_layer(layer, x, g)
        rx, rw, gk = masked_reference(x, layer.weight.detach(), g, k, mode)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
        torch.testing.assert_close(gx, rx, **tol)
        torch.testing.assert_close(gw, rw, **tol)
        torch.testing.assert_close(gb, g.sum(0), **tol)


@fused
@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("set_to_none", [True, False])
def test_fused_training_equals_torch_path(mode, set_to_none):
    def steps(kernel):
        torch.manual_seed(0)
        net = nn.Sequential(MePropLinear(8, 16, 3, mode, kernel=kernel), nn.ReLU(), MePropLinear(16, 4))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(1)
        for _ in range(6):
            opt.zero_grad(set_to_none=set_to_none)
            for _ in range(2):  # gradient accumulation through autograd
                F.cross_entropy(net(torch.randn(5, 8, generator=gen)), torch.randint(0, 4, (5,), generator=gen)).backward()
            opt.step()
        return [p.detach() for p in net.parameters()]

    for p, q in zip(steps("fused"), steps("torch")):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_kernel_argument_validated():
    with pytest.raises(ValueError, match="kernel='cuda'"):
        MePropLinear(4, 5, k=2, kernel="cuda")
    layer = MePropLinear(4, 5, k=2, kernel="fused", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="CPU float32/float64"):
        layer(torch.randn(2, 4, requires_grad=True, dtype=torch.bfloat16))

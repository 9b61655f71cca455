"""MePropLinear(kernel="native"): the layer as a C++ autograd function. Same results as the fused path (exactly:
same kernel, same tie-breaking), the masked dense reference, the same record, and clear errors elsewhere."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mesimp_lib.meprop import MePropLinear, NativeMePropStats, resolve_k

torch.set_num_threads(1)


def _available():
    from mesimp_lib.fused import kernels

    return kernels() is not None


pytestmark = pytest.mark.skipif(not _available(), reason="native kernels cannot be built here")


def masked_reference(x, w, g, k, idx):
    gk = torch.zeros_like(g).scatter_(1, idx, g.gather(1, idx)) if k is not None else g
    return gk @ w, gk.t() @ x, gk


def run(layer, x, g, need_x=True, seed=5):
    x = x.clone().requires_grad_(need_x)
    torch.manual_seed(seed)  # random mode draws its indices from the global generator
    layer(x).backward(g)
    w = layer.weight.grad
    return (w.to_dense() if w.is_sparse else w), layer.bias.grad, x.grad


def record(stats):
    return (stats.counts.clone(), stats.backward_calls, stats.examples, stats.last_rows_touched,
            stats.rows_touched_total, stats.macs_done, stats.macs_dense,
            None if stats.last_indices is None else stats.last_indices.clone())


def pair(n_in, n_out, k, mode, dtype=torch.float32, **kw):
    out = []
    for kernel in ("fused", "native"):
        torch.manual_seed(0)
        out.append(MePropLinear(n_in, n_out, k, mode, kernel=kernel, dtype=dtype, **kw))
    return out


@pytest.mark.parametrize("mode", ["per_example", "random", "unified"])
@pytest.mark.parametrize("weight_grad", ["sparse", "dense"])
@pytest.mark.parametrize("need_x", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b,n_in,n_out,k", [(10, 784, 500, 20), (7, 30, 40, 5), (1, 3, 2, 1), (4, 6, 9, None),
                                            (70, 5, 9, None)])  # dense, batch > 64: BLAS on both paths
@pytest.mark.parametrize("relu_zeros", [False, True])
def test_native_equals_fused_exactly(mode, weight_grad, need_x, dtype, b, n_in, n_out, k, relu_zeros):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(b, n_in, generator=gen, dtype=dtype)
    g = torch.randn(b, n_out, generator=gen, dtype=dtype)
    if relu_zeros:  # exact zeros: ties among zero gradients go to the lowest index, as in the fused kernel
        g = g.clamp_min(0.7) - 0.7
    fused, native = pair(n_in, n_out, k, mode, dtype, weight_grad=weight_grad, rescale=mode == "random",
                         sparsify_bias=relu_zeros)
    assert isinstance(native.stats, NativeMePropStats)
    for _ in range(2):  # two steps: the record accumulates
        fused.zero_grad(set_to_none=True)
        native.zero_grad(set_to_none=True)
        a, r = run(fused, x, g, need_x), run(native, x, g, need_x)
        assert native.weight.grad.is_sparse == (weight_grad == "sparse")
        for u, v in zip(a, r):
            assert (u is None) == (v is None)
            if u is not None:
                assert torch.equal(u, v)
        for u, v in zip(record(fused.stats), record(native.stats)):
            if isinstance(u, torch.Tensor):
                assert torch.equal(u, v)
            else:
                assert u == v


@pytest.mark.parametrize("b,n_in,n_out,k", [(10, 784, 500, 20), (5, 8, 12, 3)])
def test_native_equals_masked_reference(b, n_in, n_out, k):
    gen = torch.Generator().manual_seed(2)
    x, g = torch.randn(b, n_in, generator=gen), torch.randn(b, n_out, generator=gen)
    layer = MePropLinear(n_in, n_out, k, kernel="native", weight_grad="dense")
    gw, gb, gx = run(layer, x, g)
    idx = layer.stats.last_indices
    assert idx.shape == (b, k)
    ref_idx = g.abs().topk(k, 1).indices
    assert torch.equal(idx.sort(1).values, ref_idx.sort(1).values)
    rx, rw, gk = masked_reference(x, layer.weight.detach(), g, k, idx)
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gb, g.sum(0))
    torch.testing.assert_close(layer.stats.counts, (gk != 0).sum(0))
    # the forward is F.linear
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


@pytest.mark.parametrize("count_zero_hits", [False, True])
def test_native_unified_equals_masked_reference(count_zero_hits):
    from mesimp_lib.meprop import select_unified

    gen = torch.Generator().manual_seed(3)
    b, n_in, n_out, k = 10, 784, 500, 20
    x, g = torch.randn(b, n_in, generator=gen), torch.randn(b, n_out, generator=gen)
    g[:, ::7] = 0.0  # exact zeros: not counted in the record unless count_zero_hits
    layer = MePropLinear(n_in, n_out, k, "unified", kernel="native", weight_grad="dense",
                         count_zero_hits=count_zero_hits)
    gw, gb, gx = run(layer, x, g)
    idx = layer.stats.last_indices
    assert torch.equal(idx, select_unified(g, k).sort().values)
    gk = torch.zeros_like(g).index_fill_(1, idx, 1.0) * g
    torch.testing.assert_close(gx, gk @ layer.weight.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, gk.t() @ x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gb, g.sum(0))
    hits = torch.zeros(n_out, dtype=torch.int64)
    hits[idx] = b if count_zero_hits else (g[:, idx] != 0).sum(0)
    assert torch.equal(layer.stats.counts, hits)
    assert layer.stats.last_rows_touched == k and layer.stats.macs_done == b * k * n_in * 2


def test_native_forward_shapes_and_no_bias():
    layer = MePropLinear(6, 9, 3, kernel="native", weight_grad="sparse", bias=False)
    x = torch.randn(2, 4, 6, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 4, 9)
    torch.testing.assert_close(y, F.linear(x, layer.weight))
    y.backward(torch.randn_like(y))
    assert x.grad.shape == x.shape and layer.weight.grad.is_sparse
    assert layer.stats.last_indices.shape == (8, 3) and layer.stats.examples == 8


def test_native_first_layer_skips_dx_and_stats_off():
    layer = MePropLinear(5, 7, 2, kernel="native", weight_grad="sparse", track_stats=False)
    layer(torch.randn(3, 5)).sum().backward()
    assert layer.weight.grad is not None and layer.stats.backward_calls == 0 and layer.stats.last_indices is None


@pytest.mark.parametrize("mode", ["per_example", "random", "unified"])
def test_native_training_with_lazy_adam_equals_fused(mode):
    from mesimp_lib.lazy import LazyAdam
    from mesimp_lib.tasks.mnist import MLP
    from mesimp_lib.tasks.native_mlp import NativeMLP

    def steps(kernel, cls=MLP):
        torch.manual_seed(0)
        net = cls(k=20, mode=mode, kernel=kernel, weight_grad="sparse")
        opt = LazyAdam(net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(1)
        torch.manual_seed(3)
        for _ in range(5):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(torch.rand(10, 784, generator=gen)), torch.randint(0, 10, (10,), generator=gen)).backward()
            opt.step()
        return [p.detach().clone() for p in net.parameters()], [record(l.stats) for l in net.meprop_layers()]

    (pf, sf) = steps("fused")
    for pn, sn in (steps("native"), steps("native", NativeMLP)):  # per-layer native, the whole-network node
        for p, q in zip(pf, pn):
            assert torch.equal(p, q)
        for a, b in zip(sf, sn):
            for u, v in zip(a, b):
                if isinstance(u, torch.Tensor):
                    assert torch.equal(u, v)
                else:
                    assert u == v


def test_native_with_hooks_takes_the_fused_path():
    fused, native = pair(8, 12, 3, "per_example", weight_grad="sparse")
    mask = torch.ones(12)
    mask[:4] = 0
    for layer in (fused, native):
        layer.hooks.grad_mask = mask
    gen = torch.Generator().manual_seed(4)
    x, g = torch.randn(5, 8, generator=gen), torch.randn(5, 12, generator=gen)
    for u, v in zip(run(fused, x, g), run(native, x, g)):
        assert torch.equal(u, v)
    assert int(native.stats.counts[:4].sum()) == 0
    for u, v in zip(record(fused.stats), record(native.stats)):
        assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v
    native.hooks.grad_mask = None  # back to the native path: the record continues
    run(native, x, g)
    assert native.stats.backward_calls == 2 and native.stats.examples == 10


def test_native_stats_reset_and_eval():
    layer = MePropLinear(8, 12, 3, kernel="native", weight_grad="sparse")
    layer(torch.randn(4, 8)).sum().backward()
    assert layer.stats.backward_calls == 1
    layer.stats.reset()
    assert layer.stats.backward_calls == 0 and layer.stats.last_indices is None and int(layer.stats.counts.sum()) == 0
    with torch.no_grad():
        torch.testing.assert_close(layer(torch.ones(2, 8)), F.linear(torch.ones(2, 8), layer.weight, layer.bias))


def test_native_unsupported_settings_raise():
    assert MePropLinear(4, 5, 2, kernel="native").weight_grad == "dense"  # the default runs natively
    with pytest.raises(ValueError, match="weight_grad='buffer' was removed"):
        MePropLinear(4, 5, 2, kernel="native", weight_grad="buffer")
    layer = MePropLinear(4, 5, 2, kernel="native", weight_grad="sparse", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="CPU float32/float64"):
        layer(torch.randn(2, 4, dtype=torch.bfloat16, requires_grad=True))
    layer = MePropLinear(4, 5, 2, kernel="native", weight_grad="sparse")
    layer.mode = "bogus"
    with pytest.raises(ValueError, match="kernel='native' supports mode per_example / random / unified"):
        layer(torch.randn(2, 4, requires_grad=True))


def test_native_unavailable_raises(monkeypatch):
    from mesimp_lib import fused as fused_mod

    monkeypatch.setattr(fused_mod, "_state", {})
    monkeypatch.setenv("MESIMP_FUSED", "0")
    with pytest.raises(RuntimeError, match="unavailable"):
        MePropLinear(6, 9, 3, kernel="native", weight_grad="sparse")(torch.randn(2, 6, requires_grad=True))
    monkeypatch.setattr(fused_mod, "_state", {})


def test_default_layers_unchanged():
    layer = MePropLinear(4, 5, 2)
    assert type(layer.stats).__name__ == "MePropStats" and layer.kernel == "auto"  # the default since 630f270
    assert resolve_k(2, 5) == 2


# ----------------------------------------------------------------- the whole MLP as one native node


def _mlp_pair(**kw):
    import copy

    from mesimp_lib.tasks.native_mlp import NativeMLP

    torch.manual_seed(0)
    whole = NativeMLP(**kw)
    per_layer = copy.deepcopy(whole)
    per_layer.fuse_native = False
    return whole, per_layer


def _grads_and_records(net, x, y, seed=5):
    for p in net.parameters():
        p.grad = None
    x = x.detach().clone().requires_grad_(x.requires_grad)
    torch.manual_seed(seed)  # random mode draws from the global generator, layer by layer from the output
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    grads = [p.grad.to_dense() if p.grad.is_sparse else p.grad for p in net.parameters()]
    return loss.detach(), grads, x.grad, [record(layer.stats) for layer in net.meprop_layers()]


@pytest.mark.parametrize("mode", ["per_example", "random", "unified"])
@pytest.mark.parametrize("weight_grad", ["sparse", "dense"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hidden,k,k_out", [([30, 20], 4, None), ([25, 40, 15], 7, 3), ([12], 12, None)])
@pytest.mark.parametrize("need_x,track", [(False, True), (True, False)])
def test_whole_mlp_node_equals_per_layer_native_exactly(mode, weight_grad, dtype, hidden, k, k_out, need_x, track):
    whole, per_layer = _mlp_pair(in_features=16, hidden=hidden, out_features=6, k=k, k_out=k_out, mode=mode,
                                 kernel="native", weight_grad=weight_grad, track_stats=track, dtype=dtype)
    gen = torch.Generator().manual_seed(2)
    for step in range(3):  # records accumulate over steps
        x = torch.randn(9, 16, generator=gen, dtype=dtype).requires_grad_(need_x)
        y = torch.randint(0, 6, (9,), generator=gen)
        assert whole._whole_native(x) and not per_layer._whole_native(x)
        a, b = _grads_and_records(whole, x, y, seed=step), _grads_and_records(per_layer, x, y, seed=step)
        assert torch.equal(a[0], b[0])
        for u, v in zip(a[1], b[1]):
            assert torch.equal(u, v)
        assert (a[2] is not None) == need_x and (a[2] is None or torch.equal(a[2], b[2]))
        for ra, rb in zip(a[3], b[3]):
            for u, v in zip(ra, rb):
                assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v
    if track:
        assert whole.hidden[0].stats.backward_calls == 3


def test_whole_mlp_node_is_used_only_where_it_applies():
    from types import SimpleNamespace

    from mesimp_lib.tasks.native_mlp import NativeMLP as MLP

    x = torch.randn(4, 16)
    net = MLP(in_features=16, hidden=[10, 8], out_features=3, k=2, kernel="native", weight_grad="sparse")
    assert net._whole_native(x)
    with torch.no_grad():
        assert not net._whole_native(x)  # nothing to differentiate: plain products
    assert not net._whole_native(x[None])  # 3-D input: per layer
    net.observe_activations(SimpleNamespace(activation=lambda i, h: h))  # meAct
    assert not net._whole_native(x)
    net.observe_activations(None)
    net.hidden[1].hooks.grad_mask = torch.ones(8)  # meSimp's mask hooks
    assert not net._whole_native(x)
    net.hidden[1].hooks.grad_mask = None
    net.output.kernel = "fused"
    assert not net._whole_native(x)
    drop = MLP(in_features=16, hidden=[10], out_features=3, k=2, dropout=0.5, kernel="native", weight_grad="sparse")
    assert not drop._whole_native(x)
    drop.eval()
    assert drop._whole_native(x)  # dropout is the identity in eval mode
    torch.testing.assert_close(drop(x), drop.to_sequential()(x))
    frozen = MLP(in_features=16, hidden=[10], out_features=3, k=2, kernel="native", weight_grad="sparse")
    frozen.output.bias.requires_grad_(False)
    assert not frozen._whole_native(x)
    with pytest.raises(ValueError, match="in_features=16"):
        net(torch.randn(4, 15))


def test_whole_mlp_node_follows_changes_to_the_model():
    """The cached call is rebuilt whenever k, the record, the weights or the hooks change."""

    whole, per_layer = _mlp_pair(in_features=16, hidden=[20, 12], out_features=4, k=5, kernel="native",
                                 weight_grad="sparse")
    gen = torch.Generator().manual_seed(7)

    def both(check_whole=True):
        x, y = torch.randn(6, 16, generator=gen), torch.randint(0, 4, (6,), generator=gen)
        a, b = _grads_and_records(whole, x, y), _grads_and_records(per_layer, x, y)
        for u, v in zip(a[1], b[1]):
            assert torch.equal(u, v)
        for ra, rb in zip(a[3], b[3]):
            for u, v in zip(ra, rb):
                assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v
        assert whole._native_call(x) is not None or not check_whole

    both()
    for net in (whole, per_layer):
        net.set_k(3)
    both()
    for net in (whole, per_layer):
        net.hidden[0].stats.reset()
    both()
    for net in (whole, per_layer):
        with torch.no_grad():
            net.hidden[1].weight = nn.Parameter(net.hidden[1].weight[:8].clone())
            net.hidden[1].bias = nn.Parameter(net.hidden[1].bias[:8].clone())
            net.output.weight = nn.Parameter(net.output.weight[:, :8].clone())
    both()
    for net in (whole, per_layer):
        net.hidden[0].hooks.grad_mask = torch.ones(20)
    both(check_whole=False)
    assert whole._native_call(torch.randn(2, 16)) is None


# ----------------------------------------------------------------- LazyAdam applied inside the backward


def _train(net, opt, steps, in_backward, gen_seed=1, lr_at=None):
    gen = torch.Generator().manual_seed(gen_seed)
    torch.manual_seed(3)  # random mode
    if in_backward:
        net.step_in_backward(opt)
    for s in range(steps):
        if lr_at is not None and s == lr_at:
            opt.param_groups[0]["lr"] = 0.5 * opt.param_groups[0]["lr"]  # as a scheduler would
        x = torch.rand(7, net.hidden[0].in_features, generator=gen, dtype=net.hidden[0].weight.dtype)
        y = torch.randint(0, net.output.out_features, (7,), generator=gen)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        if in_backward and net._native_call(x) is not None:
            assert all(p.grad is None for p in net.parameters())  # never stored
        opt.step()
    return [p.detach().clone() for p in net.parameters()], opt.state_dict(), [record(l.stats) for l in net.meprop_layers()]


@pytest.mark.parametrize("mode", ["per_example", "random", "unified"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k_out", [None, 3])
def test_step_in_backward_equals_lazy_adam_step_exactly(mode, dtype, k_out):
    from mesimp_lib.lazy import LazyAdam

    results = []
    for in_backward in (False, True):
        whole, _ = _mlp_pair(in_features=20, hidden=[30, 70], out_features=5, k=6, k_out=k_out, mode=mode,
                             kernel="native", weight_grad="sparse", dtype=dtype)
        opt = LazyAdam(whole.parameters(), lr=1e-2)
        results.append(_train(whole, opt, 6, in_backward, lr_at=3))
    (pa, sa, ra), (pb, sb, rb) = results
    for u, v in zip(pa, pb):
        assert torch.equal(u, v)
    for i in sa["state"]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][i][key], sb["state"][i][key])
    for x, y in zip(ra, rb):
        for u, v in zip(x, y):
            assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v


def test_step_in_backward_falls_back_and_checks_its_arguments():
    from mesimp_lib.lazy import LazyAdam

    a, _ = _mlp_pair(in_features=20, hidden=[30], out_features=5, k=6, kernel="native", weight_grad="sparse")
    b, _ = _mlp_pair(in_features=20, hidden=[30], out_features=5, k=6, kernel="native", weight_grad="sparse")
    for net in (a, b):  # meSimp-style hooks: the per-layer path, gradients stored, opt.step() applies them
        net.hidden[0].hooks.grad_mask = torch.ones(30)
    pa = _train(a, LazyAdam(a.parameters(), lr=1e-2), 3, False)[0]
    pb = _train(b, LazyAdam(b.parameters(), lr=1e-2), 3, True)[0]
    for u, v in zip(pa, pb):
        assert torch.equal(u, v)
    with pytest.raises(TypeError, match="LazyAdam"):
        a.step_in_backward(torch.optim.Adam(a.parameters()))
    with pytest.raises(ValueError, match="exactly this model's parameters"):
        a.step_in_backward(LazyAdam(list(a.parameters())[:2]))
    a.step_in_backward(None)
    assert a.__dict__["_backward_opt"] is None


def test_step_in_backward_refuses_a_second_backward_through_the_same_graph():
    from mesimp_lib.lazy import LazyAdam

    net, _ = _mlp_pair(in_features=20, hidden=[30], out_features=5, k=6, kernel="native", weight_grad="sparse")
    net.step_in_backward(LazyAdam(net.parameters(), lr=1e-2))
    loss = F.cross_entropy(net(torch.rand(4, 20)), torch.tensor([0, 1, 2, 3]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_copies_of_a_model_leave_out_the_cache_and_the_optimizer_link():
    import copy
    import pickle

    from mesimp_lib.lazy import LazyAdam
    from mesimp_lib.tasks.native_mlp import NativeMLP

    net = NativeMLP(in_features=8, hidden=[6], out_features=3, k=2, kernel="native", weight_grad="sparse")
    opt = LazyAdam(net.parameters())
    net.step_in_backward(opt)
    F.cross_entropy(net(torch.rand(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
    copied = copy.deepcopy(net)
    assert "_native_cache" not in copied.__dict__ and copied._backward_opt is None and net._backward_opt is opt
    F.cross_entropy(copied(torch.rand(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is not None for p in copied.parameters())  # a copy stores its gradients as usual
    loaded = pickle.loads(pickle.dumps(net))
    assert loaded._backward_opt is None
    torch.testing.assert_close(loaded(torch.ones(2, 8)), net(torch.ones(2, 8)))


def test_step_in_backward_follows_the_optimizer_state_and_needs_sparse_weight_gradients():
    """Review findings: a cleared or reloaded optimizer state is used at once (no stale cached moments); dense
    weight gradients are refused (LazyAdam updates a dense gradient's every row), and a layer switched to them
    later takes the stored-gradient path with the same results; PyTorch module hooks on a layer still run."""
    import copy

    from mesimp_lib.lazy import LazyAdam

    net, _ = _mlp_pair(in_features=20, hidden=[30], out_features=5, k=6, kernel="native", weight_grad="sparse")
    opt = LazyAdam(net.parameters(), lr=1e-2)
    net.step_in_backward(opt)
    x, y = torch.rand(4, 20), torch.tensor([0, 1, 2, 3])
    F.cross_entropy(net(x), y).backward()
    saved = copy.deepcopy(opt.state_dict())  # state_dict() shares the state tensors, which update in place
    F.cross_entropy(net(x), y).backward()
    opt.state.clear()
    F.cross_entropy(net(x), y).backward()
    assert float(opt.state[net.output.weight]["step"]) == 1  # a fresh state, not the cached old moments
    for _ in range(3):  # reloading (a new state dict each time) is picked up every time
        opt.load_state_dict(copy.deepcopy(saved))  # load_state_dict keeps the given step tensors
        F.cross_entropy(net(x), y).backward()
        assert float(opt.state[net.output.weight]["step"]) == 2

    calls = []
    net.hidden[0].register_forward_hook(lambda *a: calls.append(1))
    net(x)
    assert calls == [1] and net._native_call(x) is None

    dense, _ = _mlp_pair(in_features=20, hidden=[30], out_features=5, k=6, kernel="native", weight_grad="dense")
    with pytest.raises(ValueError, match="weight_grad='sparse'"):
        dense.step_in_backward(LazyAdam(dense.parameters()))
    a, _ = _mlp_pair(in_features=20, hidden=[30], out_features=5, k=6, kernel="native", weight_grad="sparse")
    b, _ = _mlp_pair(in_features=20, hidden=[30], out_features=5, k=6, kernel="native", weight_grad="sparse")
    opt_b = LazyAdam(b.parameters(), lr=1e-2)
    b.step_in_backward(opt_b)
    for net_ in (a, b):
        for layer in net_.meprop_layers():
            layer.weight_grad = "dense"
    pa = _train(a, LazyAdam(a.parameters(), lr=1e-2), 3, False)[0]
    pb = _train(b, opt_b, 3, False)[0]
    for u, v in zip(pa, pb):
        assert torch.equal(u, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, out, inp", [(10, 10, 500), (1, 3, 7), (33, 64, 129)])
def test_narrow_dense_backward_matches_the_dense_products(dtype, n, out, inp):
    from mesimp_lib.fused import kernels

    gen = torch.Generator().manual_seed(n + out)
    g, x, w = (torch.randn(*s, generator=gen, dtype=dtype) for s in ((n, out), (n, inp), (out, inp)))
    dx, dw, db = kernels().narrow_dense_backward(g, x, w, True, True, True)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, g @ w, **tol)
    torch.testing.assert_close(dw, g.t() @ x, **tol)
    torch.testing.assert_close(db, g.sum(0), **tol)
    assert kernels().narrow_dense_backward(g, x, w, False, False, True)[:2] == [None, None]
    with pytest.raises(RuntimeError, match="narrow_dense_backward"):
        kernels().narrow_dense_backward(g, x, w.t().contiguous(), True, True, True)


@pytest.mark.parametrize("kernel, expected", [("torch", False), ("auto", False), ("fused", True), ("native", True)])
def test_dense_output_layer_takes_the_narrow_kernel_only_when_asked(kernel, expected):
    from mesimp_lib.meprop import NARROW_DENSE

    narrow = MePropLinear(20, NARROW_DENSE, None, kernel=kernel, weight_grad="dense")
    wide = MePropLinear(20, NARROW_DENSE + 1, None, kernel=kernel, weight_grad="dense")
    assert narrow._plan().fused is expected and wide._plan().fused is False
    # the narrow loops agree with PyTorch's dense backward up to rounding (bit-equality between the fused and
    # native paths, and with the whole-network node: test_native_equals_fused_exactly with k None and the
    # whole-node tests)
    x, g = torch.randn(6, 20), torch.randn(6, NARROW_DENSE)
    ref = MePropLinear(20, NARROW_DENSE, None, weight_grad="dense")
    ref.load_state_dict(narrow.state_dict())
    for a, b in zip(run(narrow, x, g), run(ref, x, g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_no_work_node_returns_no_gradient():
    from mesimp_lib.fused import kernels

    x, w = torch.randn(3, 4), torch.randn(5, 4, requires_grad=True)
    y = kernels().no_work_node(x, [w], 7)
    assert y.shape == (3, 7) and not y.any() and y.requires_grad
    y.sum().backward()
    assert w.grad is None


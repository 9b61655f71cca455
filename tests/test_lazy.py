"""Lazy optimizers: rows without a gradient stay exactly as they were; rows with one get Adam/SGD."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mesimp_lib import MePropLinear
from mesimp_lib.lazy import LazyAdam, LazySGD, grad_rows
from mesimp_lib.training import TrainConfig, train

torch.set_num_threads(1)


def net(k=3, mode="unified"):
    """The first layer hands over a row-sparse gradient (the lazy optimizers' input); the output layer a dense one."""
    torch.manual_seed(0)
    return nn.Sequential(MePropLinear(8, 20, k, mode, weight_grad="sparse"), nn.ReLU(), MePropLinear(20, 4))


def batch(seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, 8, generator=gen), torch.randint(0, 4, (6,), generator=gen)


def test_grad_rows_come_from_the_row_sparse_gradient():
    m = net()
    x, y = batch(0)
    F.cross_entropy(m(x), y).backward()
    rows = grad_rows(m[0].weight)
    assert rows.tolist() == sorted(m[0].stats.last_indices.tolist())
    assert grad_rows(m[0].bias) is None  # no row information: dense update
    assert grad_rows(m[2].weight) is None  # the default dense weight gradient: every row


def test_lazy_adam_freezes_idle_rows_and_matches_adam_on_active_rows():
    m = net()
    opt = LazyAdam(m.parameters(), lr=1e-2)
    for s in range(3):
        x, y = batch(s)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        w = m[0].weight
        rows = grad_rows(w)
        before = w.detach().clone()
        st = opt.state.get(w)
        m_before = st["exp_avg"].clone() if st else torch.zeros_like(w)
        v_before = st["exp_avg_sq"].clone() if st else torch.zeros_like(w)
        g = w.grad.to_dense()
        opt.step()
        idle = torch.ones(20, dtype=torch.bool)
        idle[rows] = False
        assert torch.equal(w.detach()[idle], before[idle])  # idle rows: unchanged
        assert torch.equal(opt.state[w]["exp_avg"][idle], m_before[idle])  # and their moments too
        # active rows: the Adam formula with the global step t
        t = s + 1
        mm = 0.9 * m_before[rows] + 0.1 * g[rows]
        vv = 0.999 * v_before[rows] + 0.001 * g[rows] ** 2
        ref = before[rows] - 1e-2 * (mm / (1 - 0.9**t)) / ((vv / (1 - 0.999**t)).sqrt() + 1e-8)
        torch.testing.assert_close(w.detach()[rows], ref)


@pytest.mark.parametrize("native", [None, False])
def test_lazy_adam_with_zero_grad_keeping_tensors_moves_only_rows_with_a_gradient(native):
    """zero_grad(set_to_none=False) keeps a zeroed (empty) sparse gradient: the next step's rows are only those of
    the new backward, idle rows and their moments stay frozen (the removed buffer form got this wrong)."""
    m = net()
    opt = LazyAdam(m.parameters(), lr=1e-2, native=native)
    w = m[0].weight
    for s in range(4):
        x, y = batch(s)
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(m(x), y).backward()
        rows = set(m[0].stats.last_indices.tolist())
        before = w.detach().clone()
        opt.step()
        changed = set((w.detach() != before).any(1).nonzero().flatten().tolist())
        assert changed <= rows and changed


def trained_params(model, opt_cls, lr, steps=4):
    """Parameters after ``steps`` optimizer steps on the fixed batches."""
    opt = opt_cls(model.parameters(), lr=lr)
    for s in range(steps):
        x, y = batch(s)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


def test_lazy_adam_equals_adam_when_every_row_has_a_gradient():
    def dense_net():
        torch.manual_seed(0)
        return nn.Sequential(MePropLinear(8, 20, None), nn.ReLU(), MePropLinear(20, 4))

    for p, q in zip(trained_params(dense_net(), LazyAdam, 1e-2), trained_params(dense_net(), torch.optim.Adam, 1e-2)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["unified", "per_example"])
def test_lazy_sgd_equals_sgd(mode):
    for p, q in zip(trained_params(net(mode=mode), LazySGD, 0.1), trained_params(net(mode=mode), torch.optim.SGD, 0.1)):
        torch.testing.assert_close(p, q)


def test_lazy_optimizers_get_the_row_sparse_weight_gradient_by_default():
    assert TrainConfig().weight_grad == "dense"
    assert TrainConfig(optimizer="lazy_adam").weight_grad == TrainConfig(optimizer="lazy_sgd").weight_grad == "sparse"
    assert TrainConfig(optimizer="lazy_adam", weight_grad="dense").weight_grad == "dense"  # asked for: every row
    assert "--weight-grad sparse" in TrainConfig(method="meprop", k=20, optimizer="lazy_adam").to_cli()


def test_trainer_lazy_adam_changes_only_rows_with_gradient():
    r = train(TrainConfig(method="meprop", mode="unified", k=2, hidden=64, epochs=1, train_limit=300,
                          batch_size=10, rows_every=5, optimizer="lazy_adam"), progress=False)
    assert r["rows"]["changed"][0] <= r["rows"]["with_grad"][0] + 1e-9
    with pytest.raises(ValueError, match="lr=0"):
        LazyAdam([nn.Parameter(torch.zeros(2))], lr=0)


def _native_available():
    from mesimp_lib.fused import kernels

    return kernels() is not None


@pytest.mark.skipif(not _native_available(), reason="native kernels cannot be built here")
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_native_lazy_adam_on_sparse_grads_equals_the_torch_loop(mode):
    """The fast path (fused kernel, row-sparse dW, one native Adam call) = LazyAdam's PyTorch loop: same rows
    updated, idle rows and their moments frozen, global step bias correction."""

    def run(kernel, weight_grad, native):
        torch.manual_seed(0)
        m = nn.Sequential(MePropLinear(8, 20, 3, mode, kernel=kernel, weight_grad=weight_grad), nn.ReLU(),
                          MePropLinear(20, 4, weight_grad=weight_grad))
        opt = LazyAdam(m.parameters(), lr=1e-2, native=native)
        frozen = []
        for s in range(5):
            x, y = batch(s)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            w = m[0].weight
            rows = grad_rows(w)
            idle = torch.ones(20, dtype=torch.bool)
            idle[rows] = False
            before = w.detach().clone()
            m_before = opt.state[w]["exp_avg"].clone() if opt.state.get(w) else torch.zeros_like(w)
            opt.step()
            frozen.append(torch.equal(w.detach()[idle], before[idle])
                          and torch.equal(opt.state[w]["exp_avg"][idle], m_before[idle]))
        assert all(frozen)
        assert float(opt.state[m[0].weight]["step"]) == 5  # global step count
        return [p.detach() for p in m.parameters()]

    # same kernel on both sides: with ReLU zeros, which zero-gradient entries fill a top-k set is a tie
    # (torch.topk and the kernel break it differently), and a lazy optimizer moves the rows it lists
    for p, q in zip(run("fused", "sparse", True), run("fused", "sparse", False)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not _native_available(), reason="native kernels cannot be built here")
def test_native_lazy_adam_step_reads_gradients_itself():
    """The one-call step: accumulated (uncoalesced) sparse gradients are coalesced, parameters without a gradient
    get no state and no step, a parameter the kernel cannot take sends the group to the PyTorch loop; the
    results equal the PyTorch loop's."""

    def run(native):
        torch.manual_seed(0)
        layer = MePropLinear(8, 20, 3, kernel="native", weight_grad="sparse")
        idle = nn.Linear(3, 3)  # never used: no gradient
        odd = nn.Parameter(torch.randn(6, 4).t())  # not contiguous: the kernel refuses it
        opt = LazyAdam([*layer.parameters(), *idle.parameters()], lr=1e-2, native=native)
        opt2 = LazyAdam([odd], lr=1e-2, native=native)
        for s in range(3):
            opt.zero_grad(set_to_none=True)
            for rep in range(2):  # two backward passes: the row-sparse gradients accumulate uncoalesced
                x, _ = batch(s * 2 + rep)
                layer(x).pow(2).sum().backward()
            odd.grad = torch.ones(4, 6)
            opt.step()
            opt2.step()
        assert not opt.state.get(idle.weight) and float(opt.state[layer.weight]["step"]) == 3
        return [p.detach().clone() for p in (*layer.parameters(), odd)]

    for p, q in zip(run(None), run(False)):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_kernel_config_field_keeps_old_results_equal():
    from mesimp_lib.experiments import _same_config

    cfg = TrainConfig(epochs=1, kernel="torch")
    old = {k: v for k, v in cfg.__dict__.items() if k != "kernel"}  # a stored config from before the field
    assert _same_config(old, cfg)  # made with the PyTorch backward, the only one then
    assert not _same_config(old, TrainConfig(epochs=1))  # the default "auto" would compute other digits
    assert "--kernel" not in TrainConfig(epochs=1).to_cli() and "--kernel torch" in cfg.to_cli()
    assert "--kernel fused" in TrainConfig(kernel="fused").to_cli()
    with pytest.raises(ValueError, match="kernel='cuda'"):
        TrainConfig(kernel="cuda")


@pytest.mark.parametrize("native", [False, None])
@pytest.mark.parametrize("kernel", ["torch", "fused", "native"])
@pytest.mark.parametrize("mode", ["per_example", "unified", "random"])
def test_lazy_adam_takes_the_layers_sorted_rows_as_coalesced_without_sorting(mode, kernel, native):
    """Every kernel hands over sorted unique rows; autograd's accumulation drops the is_coalesced flag, LazyAdam sets
    it again without sorting (the same tensor stays p.grad), and the step equals the one on the same gradient's
    values handed over uncoalesced (rows reversed, so the optimizer has to sort them)."""
    if kernel != "torch" and not _native_available():
        pytest.skip("native kernels cannot be built here")
    torch.manual_seed(0)
    layer = MePropLinear(8, 20, 3, mode, kernel=kernel, weight_grad="sparse")
    x, _ = batch(0)
    layer(x).pow(2).sum().backward()
    grad = layer.weight.grad
    rows = grad._indices()[0]
    assert bool((rows[1:] > rows[:-1]).all())  # ascending and unique: really coalesced
    twin = nn.Parameter(layer.weight.detach().clone())
    twin.grad = torch.sparse_coo_tensor(grad._indices().flip(1), grad._values().flip(0), grad.shape,
                                        check_invariants=True)
    assert not twin.grad.is_coalesced()
    opt = LazyAdam([layer.weight], lr=1e-2, native=native)
    ref = LazyAdam([twin], lr=1e-2, native=native)
    opt.step()
    ref.step()
    assert layer.weight.grad is grad and grad.is_coalesced()  # marked, not rebuilt by a sort
    assert twin.grad.is_coalesced() and torch.equal(twin.grad._indices(), grad._indices())
    assert torch.equal(layer.weight.detach(), twin.detach())
    assert torch.equal(opt.state[layer.weight]["exp_avg_sq"], ref.state[twin]["exp_avg_sq"])


def test_the_layer_plants_nothing_on_its_weight():
    """The optimizer reads the rows from the row-sparse gradient itself: backward sets no attribute on the weight."""
    layer = MePropLinear(8, 20, 3, weight_grad="sparse")
    layer(batch(0)[0]).sum().backward()
    assert vars(layer.weight) == {} and grad_rows(layer.weight) is not None

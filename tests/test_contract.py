"""PyTorch's autograd contract for MePropLinear, MLP and MePropLSTM with the default weight gradient.

Gradients reach the parameters only through autograd, so every PyTorch feature that relies on that works as
with ``nn.Linear`` / ``nn.LSTM``: ``torch.autograd.grad`` (weights, or the input only, leaving ``.grad``
untouched), tensor hooks, accumulation, ``zero_grad`` in both forms, in-place edits of ``.grad``,
``torch.func.functional_call`` with two parameter sets, CPU bfloat16 autocast, float64 gradcheck and
DistributedDataParallel (2 gloo processes). The row-sparse form (``weight_grad="sparse"``) and
``step_in_backward`` are refused under DDP with a message that names the reason.
"""

import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.func import functional_call

from mesimp_lib import MePropLinear
from mesimp_lib.fused import kernels
from mesimp_lib.lstm import MePropLSTM
from mesimp_lib.tasks.mnist import MLP
from mesimp_lib.tasks.native_mlp import NativeMLP

torch.set_num_threads(1)

NATIVE = kernels() is not None
KERNELS = ["torch", "fused", "native"] if NATIVE else ["torch"]
LSTM_KERNELS = ["torch", "fused"] if NATIVE else ["torch"]
LENGTHS = torch.tensor([4, 2, 3])


def make(kind: str, kernel: str, mode: str = "per_example", k=3, dtype=torch.float64, **kw):
    """A small model of ``kind`` with deterministic weights."""
    torch.manual_seed(0)
    if kind == "linear":
        return MePropLinear(8, 12, k, mode, kernel=kernel, dtype=dtype, **kw)
    if kind == "mlp":
        cls = NativeMLP if kernel == "native" else MLP  # native: the whole network as one C++ node
        return cls(in_features=8, hidden=[12, 10], out_features=4, k=k, mode=mode, kernel=kernel, **kw).to(dtype)
    return MePropLSTM(5, 6, k if k is None else 2, mode, kernel=kernel, **kw).to(dtype)


def inputs(kind: str, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (3, 4, 5) if kind == "lstm" else (6, 8)
    return torch.randn(*shape, generator=gen).to(dtype)


def forward(model, x, params=None):
    args = (x, LENGTHS) if isinstance(getattr(model, "module", model), MePropLSTM) else (x,)
    return model(*args) if params is None else functional_call(model, params, args)


def loss_of(y: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return (y.double() * torch.randn(y.shape, generator=gen, dtype=torch.float64)).sum() + y.double().pow(2).sum()


def reference(model, x):
    """(parameter gradients, input gradient) of one ordinary ``loss.backward()`` on a copy."""
    ref = copy.deepcopy(model)
    xr = x.clone().requires_grad_(True)
    loss_of(forward(ref, xr)).backward()
    return [p.grad.clone() for p in ref.parameters()], xr.grad


def cases(kernels=None, lstm_kernels=None):
    out = []
    for kind in ("linear", "mlp", "lstm"):
        for kernel in (lstm_kernels or LSTM_KERNELS) if kind == "lstm" else (kernels or KERNELS):
            for mode in ("per_example", "unified"):
                out.append(pytest.param(kind, kernel, mode, id=f"{kind}-{kernel}-{mode}"))
    return out


@pytest.mark.parametrize("kind,kernel,mode", cases())
def test_autograd_grad_wrt_weights_and_wrt_input_only(kind, kernel, mode):
    model = make(kind, kernel, mode)
    x = inputs(kind)
    ref_p, ref_x = reference(model, x)
    params = list(model.parameters())
    grads = torch.autograd.grad(loss_of(forward(model, x)), params)
    for g, r in zip(grads, ref_p):
        assert torch.equal(g, r)
    assert all(p.grad is None for p in params)
    xg = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(loss_of(forward(model, xg)), [xg])
    assert torch.equal(gx, ref_x)
    assert all(p.grad is None for p in params)  # no weight gradient written as a side effect
    xg.grad = None
    loss_of(forward(model, xg)).backward(inputs=[xg])
    assert torch.equal(xg.grad, ref_x) and all(p.grad is None for p in params)


@pytest.mark.parametrize("kind,kernel,mode", cases())
def test_weight_hook_sees_the_real_gradient(kind, kernel, mode):
    model = make(kind, kernel, mode)
    x = inputs(kind)
    ref_p, _ = reference(model, x)
    seen = {}
    for i, p in enumerate(model.parameters()):
        p.register_hook(lambda g, i=i: seen.__setitem__(i, g.clone()))
    loss_of(forward(model, x)).backward()
    assert sorted(seen) == list(range(len(ref_p)))
    for i, r in enumerate(ref_p):
        assert torch.equal(seen[i], r)


@pytest.mark.parametrize("kind,kernel,mode", cases())
def test_accumulation_and_zero_grad_in_both_forms(kind, kernel, mode):
    model = make(kind, kernel, mode)
    x = inputs(kind)
    ref_p, _ = reference(model, x)
    for _ in range(2):
        loss_of(forward(model, x)).backward()
    for p, r in zip(model.parameters(), ref_p):
        assert torch.equal(p.grad, 2 * r)
    model.zero_grad(set_to_none=False)
    assert all(not p.grad.any() for p in model.parameters())
    loss_of(forward(model, x)).backward()
    for p, r in zip(model.parameters(), ref_p):
        assert torch.equal(p.grad, r)
    model.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("kind,kernel,mode", cases())
def test_in_place_edit_of_grad_does_not_survive_zero_grad(kind, kernel, mode, set_to_none):
    """Manual weight decay / clipping / noise on .grad, then zero_grad: the next step is the plain one."""
    model, clean = make(kind, kernel, mode), make(kind, kernel, mode)
    opt, opt_clean = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(clean.parameters(), lr=0.1)
    x1, x2 = inputs(kind, 1), inputs(kind, 2)
    loss_of(forward(model, x1)).backward()
    for p in model.parameters():
        p.grad.mul_(0.5).add_(3.0)  # an in-place edit
    opt.zero_grad(set_to_none=set_to_none)
    loss_of(forward(model, x2)).backward()
    opt.step()
    loss_of(forward(clean, x2)).backward()
    opt_clean.step()
    for p, q in zip(model.parameters(), clean.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kind,kernel,mode", cases())
def test_functional_call_with_two_parameter_sets(kind, kernel, mode):
    model = make(kind, kernel, mode)
    x = inputs(kind)
    names = [n for n, _ in model.named_parameters()]
    set_a = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    set_b = {n: (p.detach() * 1.1 + 0.01).requires_grad_(True) for n, p in model.named_parameters()}
    loss = loss_of(forward(model, x, set_a)) + 2 * loss_of(forward(model, x, set_b))
    grads = torch.autograd.grad(loss, [*set_a.values(), *set_b.values()])
    for params, scale, got in ((set_a, 1, grads[: len(names)]), (set_b, 2, grads[len(names):])):
        alone = copy.deepcopy(model)
        alone.load_state_dict({n: t.detach() for n, t in params.items()})
        ref_p, _ = reference(alone, x)
        for g, r in zip(got, ref_p):
            torch.testing.assert_close(g, scale * r, rtol=1e-12, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind,kernel,mode", cases())
def test_cpu_bfloat16_autocast_dtypes_as_torch(kind, kernel, mode):
    model = make(kind, kernel, mode, dtype=torch.float32)
    plain = nn.LSTM(5, 6, batch_first=True) if kind == "lstm" else nn.Linear(8, 12)
    x = inputs(kind, dtype=torch.float32).requires_grad_(True)
    xp = x.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = forward(model, x)
        y_plain = plain(xp)[0] if kind == "lstm" else plain(xp)
    assert y.dtype == y_plain.dtype == torch.bfloat16
    y.float().sum().backward()
    y_plain.float().sum().backward()
    assert x.grad.dtype == xp.grad.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    if kind != "mlp":  # one layer: the float32 computation, cast at the end (an MLP rounds between layers)
        with torch.no_grad():
            assert torch.equal(y, forward(model, x).to(torch.bfloat16))


@pytest.mark.parametrize("kind,kernel,mode", cases())
def test_float64_gradcheck(kind, kernel, mode):
    """gradcheck takes the Jacobian one output entry at a time: a top-k of a one-hot output gradient keeps that
    entry, so a single meProp layer's backward equals the true Jacobian at any k; through more layers (or time)
    the sparsified gradient is not the true one, so the MLP and the LSTM are checked with a dense backward."""
    k = 3 if kind == "linear" else None
    model = make(kind, kernel, mode, k=k)
    names = [n for n, _ in model.named_parameters()]
    x = inputs(kind).requires_grad_(True)

    def f(x, *params):
        return forward(model, x, dict(zip(names, params)))

    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    assert torch.autograd.gradcheck(f, (x, *params))


# ----------------------------------------------------------------------------- DistributedDataParallel


def _ddp_cases():
    return [(kind, kernel, mode) for kind in ("linear", "mlp", "lstm")
            for kernel in (LSTM_KERNELS if kind == "lstm" else KERNELS) for mode in ("per_example", "unified")]


def _ddp_worker(rank: int, world: int, port: int, steps: int) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for kind, kernel, mode in _ddp_cases():
            model = make(kind, kernel, mode)
            single = copy.deepcopy(model)  # every shard's gradient computed here, in one process
            ddp = DDP(model)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
            opt_single = torch.optim.SGD(single.parameters(), lr=0.05)
            for step in range(steps):
                shards = [inputs(kind, seed=100 * step + r) for r in range(world)]
                opt.zero_grad()
                loss_of(forward(ddp, shards[rank])).backward()
                means = None
                for xs in shards:
                    single.zero_grad()
                    loss_of(forward(single, xs)).backward()
                    gs = [p.grad.clone() for p in single.parameters()]
                    means = gs if means is None else [m + g for m, g in zip(means, gs)]
                for name_p, m in zip(model.named_parameters(), means):
                    name, p = name_p
                    torch.testing.assert_close(p.grad, m / world, rtol=1e-10, atol=1e-12,
                                               msg=lambda s: f"{kind}/{kernel}/{mode} step {step} {name}: {s}")
                    p.grad.copy_(m / world)  # the single-process mean drives both copies: same steps
                for p, m in zip(single.parameters(), means):
                    p.grad = m / world
                opt.step()
                opt_single.step()
            for p, q in zip(model.parameters(), single.parameters()):
                assert torch.equal(p, q)
        # the row-sparse gradient and the in-backward step are refused, naming the reason
        sparse = DDP(make("linear", "torch", weight_grad="sparse"))
        try:
            sparse(inputs("linear"))
            raise AssertionError("weight_grad='sparse' ran under DDP")
        except ValueError as e:
            assert "weight_grad='sparse' is refused under torch.distributed" in str(e), e
        if NATIVE:
            from mesimp_lib.lazy import LazyAdam

            net = make("mlp", "native", weight_grad="sparse")
            try:
                net.step_in_backward(LazyAdam(net.parameters()))
                raise AssertionError("step_in_backward ran under DDP")
            except ValueError as e:
                assert "step_in_backward is refused under torch.distributed" in str(e), e
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_equal_the_single_process_mean():
    """Several SGD steps of every model and kernel under DDP (2 gloo processes on 127.0.0.1): each step's
    all-reduced gradients equal the mean of the shards' gradients computed in one process."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_ddp_worker, args=(2, _free_port(), 3), nprocs=2, join=True)

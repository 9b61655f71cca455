"""How the benchmark measures, as PERFORMANCE.md prescribes: one process; two variants interleaved A-B-B-A per
round; the ratio taken per round and the median over rounds reported; warm-up calls first. And the FLOP limits
the measured ratios are read against (the multiply-adds of the paper's 784-500-500-10 MLP).

Every measurement first sets the C allocator as ``make bench`` does through its environment (PERFORMANCE.md):
large blocks from the heap, never from fresh ``mmap`` pages, and no trimming. Otherwise a zero-filled
gradient may come from new pages of the operating system (a page fault per 4 KiB) at one call and from the
heap at the next, and a layer's time jumps by several times between runs of the same cell.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import statistics
import time

import torch
import torch.nn.functional as F

__all__ = ["abba", "keeps_threads", "mlp_backward_limit", "mlp_step_limit", "steady_allocator", "two_backwards"]

log = logging.getLogger(__name__)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
_allocator: dict = {}

# the paper's MNIST MLP: backward multiply-adds of the two hidden layers' products (dx and dW; the first
# layer needs no dx) and of the dense output layer, for the FLOP limit of the whole backward
_MLP_SIZES = (784, 500, 500, 10)


def mlp_step_limit(k: int) -> float:
    """Dense / meProp multiply-adds of forward + backward (the optimizer is not counted)."""
    (i, h1, h2, o) = _MLP_SIZES
    fwd = h1 * i + h2 * h1 + o * h2
    dense = h1 * i + 2 * h2 * h1 + 2 * o * h2
    sparse = k * i + 2 * k * h1 + 2 * o * h2
    return (fwd + dense) / (fwd + sparse)


def mlp_backward_limit(k: int) -> float:
    """Dense / meProp multiply-adds of the 784-500-500-10 backward (hidden layers top-k, output dense)."""
    (i, h1, h2, o) = _MLP_SIZES
    dense = h1 * i + 2 * h2 * h1 + 2 * o * h2
    sparse = k * i + 2 * k * h1 + 2 * o * h2
    return dense / sparse


def _time_call(fn, inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def keeps_threads(measure):
    """A measurement that sets torch's thread count for itself and gives the caller's back afterwards."""
    @functools.wraps(measure)
    def run(*args, **kwargs):
        threads = torch.get_num_threads()
        try:
            return measure(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return run


def steady_allocator() -> bool:
    """glibc's ``mallopt``: no ``mmap`` for large blocks, no trimming (``MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=...`` in ``make bench``), once per process; False where there is no glibc. The
    process then keeps the memory it freed for its later allocations."""
    if "set" not in _allocator:
        try:
            libc = ctypes.CDLL(None)
            _allocator["set"] = bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
        except (OSError, AttributeError):
            _allocator["set"] = False
        log.info("benchmark allocator: %s", "glibc mallopt: no mmap, no trim" if _allocator["set"] else "unchanged")
    return _allocator["set"]


def abba(dense_fn, sparse_fn, min_rounds: int, scale: float = 1.0, block_s: float = 1e-3):
    """Median per-round ratio dense/sparse and median times (seconds). Each timed block repeats a call for
    >= ``block_s`` seconds (timer noise; for whole training steps, a steady state as in training, where one
    variant runs step after step, instead of every step starting in the caches the other variant left).
    The allocator is made steady first (``steady_allocator``)."""
    steady_allocator()
    for _ in range(3):  # warm-up
        dense_fn()
        sparse_fn()
    t_est = max(_time_call(dense_fn, 1), 1e-6)
    inner = max(1, int(block_s / t_est))
    rounds = max(min_rounds, 30 if t_est < 1e-3 else (7 if t_est > 0.1 else 15))
    rounds = max(3, int(rounds * scale))
    ratios, td, ts = [], [], []
    for _ in range(rounds):
        d1 = _time_call(dense_fn, inner)
        s1 = _time_call(sparse_fn, inner)
        s2 = _time_call(sparse_fn, inner)
        d2 = _time_call(dense_fn, inner)
        ratios.append((d1 + d2) / (s1 + s2))
        td += [d1, d2]
        ts += [s1, s2]
    return statistics.median(ratios), statistics.median(td), statistics.median(ts), rounds


def two_backwards(out_d, params_d, out_o, params_o, y, scale: float, clear_other: bool):
    """Dense against another model of the same outputs, interleaved A-B-B-A, measured twice: ``loss.backward()``
    of the cross-entropy (a training step's backward, gradients accumulated into ``.grad``), and the model
    backward from the output gradient, ``torch.autograd.grad(out, params, g)`` on a graph built once, as
    PERFORMANCE.md prescribes for layers (no loss nodes, no accumulation into ``.grad``). ``clear_other``: set the other
    model's ``.grad`` to None before each call (a model that writes gradients). Returns (ratio, dense s, other s,
    rounds) of the first and (ratio, dense s, other s) of the second."""
    loss_d, loss_o = F.cross_entropy(out_d, y), F.cross_entropy(out_o, y)

    def run_dense():
        for p in params_d:
            p.grad = None
        loss_d.backward(retain_graph=True)

    def run_other():
        if clear_other:
            for p in params_o:
                p.grad = None
        loss_o.backward(retain_graph=True)

    ratio, td, to, rounds = abba(run_dense, run_other, 15, scale)
    g = torch.autograd.grad(loss_d, out_d, retain_graph=True)[0]

    def grad_dense():
        torch.autograd.grad(out_d, params_d, g, retain_graph=True)

    def grad_other():
        if clear_other:
            for p in params_o:
                p.grad = None
        torch.autograd.grad(out_o, params_o, g, retain_graph=True, allow_unused=True)

    g_ratio, g_td, g_to, _ = abba(grad_dense, grad_other, 15, scale)
    return ratio, td, to, rounds, g_ratio, g_td, g_to

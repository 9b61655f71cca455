"""What a meProp layer remembers of its backward passes, for the plots and widgets: ``MePropStats``.

Taught in notebook 01 (rows touched, multiply-adds of one step) and 02 / 04 (how often each unit is selected,
``counts``). ``record`` is what the linear layer's backward calls after each step; the hit it counts is
``selection.hit_mask``'s. A ``kernel="native"`` layer records in C++ instead, into ``NativeMePropStats``.
"""

from __future__ import annotations

import torch

from .selection import all_indices, hit_mask

__all__ = ["MePropStats", "NativeMePropStats", "record"]


class MePropStats:
    """What a meProp layer remembers for plots and widgets (updated in backward).

    counts[j]          examples whose selected set contained unit j (per example, also in
                       unified mode; entries whose gradient is exactly 0 are not counted
                       unless ``count_zero_hits``: then per-example top-k counts the zero
                       fillers of the authors' C# heap, ``heap_hits``, and random / unified
                       selection every selected entry)
    last_indices       the indices kept in the last backward: (B, k) per example / random,
                       (k,) unified; a dense backward (k None, 0 or >= width) keeps every
                       entry: (B, width) per example / random, (width,) unified; None before
                       the first backward. ``counts`` records top-k / random selections only.
    rows_touched       rows of W that received a non-zero-able gradient, last step and sum
    macs_done / dense  backward multiply-adds really performed vs a dense backward
    """

    def __init__(self, width: int, device=None):
        self.reset(width, device)

    def reset(self, width: int | None = None, device=None) -> None:
        width = self.width if width is None else width
        device = self.counts.device if device is None and hasattr(self, "counts") else device
        self.width = width
        self.counts = torch.zeros(width, dtype=torch.int64, device=device)
        self.backward_calls = 0
        self.examples = 0
        self.last_indices: torch.Tensor | None = None
        self.last_rows_touched = 0
        self.rows_touched_total = 0
        self.macs_done = 0
        self.macs_dense = 0

    @property
    def mean_rows_touched_frac(self) -> float:
        """Average share of W's rows with a gradient per backward call."""
        if self.backward_calls == 0:
            return 0.0
        return self.rows_touched_total / (self.backward_calls * self.width)

    @property
    def macs_ratio(self) -> float:
        """Multiply-adds done / multiply-adds of a dense backward (1.0 = dense)."""
        return self.macs_done / self.macs_dense if self.macs_dense else 1.0

    def __repr__(self) -> str:
        return (
            f"MePropStats(width={self.width}, backward_calls={self.backward_calls}, "
            f"examples={self.examples}, rows_touched={self.mean_rows_touched_frac:.3f}, "
            f"macs_ratio={self.macs_ratio:.3f})"
        )


class _Slot:
    """A ``NativeMePropStats`` counter: slot ``i`` of its int64 tensor ``_native``, the one place the value lives
    (the C++ backward and the Python ``record`` both write it there)."""

    def __init__(self, i: int):
        self.i = i

    def __get__(self, obj, objtype=None):
        return self if obj is None else int(obj.__dict__["_native"][self.i])

    def __set__(self, obj, value) -> None:
        obj.__dict__["_native"][self.i] = value


class NativeMePropStats(MePropStats):
    """``MePropStats`` of a ``kernel="native"`` layer, kept where the C++ backward writes its record, so no Python
    runs per step: ``counts`` and the int64 tensor ``_native`` = [backward_calls, examples, last_rows_touched,
    rows_touched_total, macs_done, macs_dense, 1 if last_indices is set]; the last indices are the tensor
    ``_native_last`` (the kernel points it at its selection with ``set_``). A step recorded in Python (a layer with
    meSimp's hooks takes the fused Python path) writes the same places; the attributes read as ``MePropStats``'s."""

    backward_calls = _Slot(0)
    examples = _Slot(1)
    last_rows_touched = _Slot(2)
    rows_touched_total = _Slot(3)
    macs_done = _Slot(4)
    macs_dense = _Slot(5)

    def reset(self, width: int | None = None, device=None) -> None:
        self.__dict__["_native"] = torch.zeros(7, dtype=torch.int64)
        self._native_last = torch.empty(0, dtype=torch.int64)
        super().reset(width, device)

    @property
    def last_indices(self) -> torch.Tensor | None:
        return self._native_last if int(self._native[6]) else None

    @last_indices.setter
    def last_indices(self, value) -> None:
        if value is not None:
            self._native_last.set_(value)
        self._native[6] = int(value is not None)

    @classmethod
    def from_stats(cls, stats: MePropStats) -> "NativeMePropStats":
        """A native record continuing ``stats`` (same counts tensor and totals)."""
        new = cls(stats.width, stats.counts.device)
        new.counts = stats.counts
        for name in ("backward_calls", "examples", "last_rows_touched", "rows_touched_total", "macs_done",
                     "macs_dense", "last_indices"):
            setattr(new, name, getattr(stats, name))
        return new


def record(stats: MePropStats, g: torch.Tensor, idx, plan, in_f: int, touched: int, computed: int, need_x: bool,
           need_w: bool, counted: bool = False) -> None:
    """Add one backward of a linear layer to ``stats``: g (N, out) its output gradient, ``idx`` its selection
    (None dense, (k,) unified, or per example / random ``(indices (N, k), kept values (N, k))``), ``touched``
    rows of W with a gradient, ``computed`` rows really multiplied, ``counted``: the kernel added the counts."""
    n, out = g.shape
    products = int(need_x) + int(need_w)  # dx and dW are B*rows*in multiply-adds each
    sel = idx[0] if isinstance(idx, tuple) else idx
    stats.backward_calls += 1
    stats.examples += n
    stats.last_indices = sel if sel is not None else all_indices(n, out, plan.mode, g.device)
    stats.last_rows_touched = touched
    stats.rows_touched_total += touched
    stats.macs_dense += n * out * in_f * products
    stats.macs_done += n * computed * in_f * products
    if sel is None or counted:  # a dense backward records no counts (top-k / random selections only)
        return
    heap = (plan.k, out, None) if plan.mode == "per_example" else None  # the C# heap's record with count_zero_hits
    stats.counts += hit_mask(g, sel, plan.count_zero_hits, heap).sum(0)

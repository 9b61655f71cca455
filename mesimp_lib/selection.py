"""Which output-gradient entries meProp keeps, and which of them count as "hits".

Taught in notebook 01 (the k explorer: top-k per example, unified, random), 03 (random vs top-k) and 05 (meSimp's
activity record, which counts hits).

    resolve_k            k as given (None / 0 dense, a count, a fraction of the width) -> the count kept
    TopKWidth            k, k_effective and backprop_ratio of a layer (the linear layer and the LSTM)
    select_*             the k indices kept: per example (top-k of each row), unified (one top-k set for the
                         batch, by sum |g|), random (k distinct uniform indices per row)
    heap_*               the authors' C# top-k heap (``count_zero_hits``): in a row with fewer than k non-zeros
                         it also keeps some zero entries, its "fillers"
    hit_mask             THE rule for a hit, used by every record: the linear layer's ``stats.counts``, meSimp's
                         ``ActivityRecord`` and the LSTM's cell record (the C++ kernels count the same in
                         ``topk_backward``)
"""

from __future__ import annotations

import functools
import numbers

import torch

from .validate import ArgumentError

__all__ = [
    "TopKWidth",
    "WeightDim",
    "all_indices",
    "heap_fillers",
    "heap_hits",
    "heap_selected",
    "hit_mask",
    "resolve_k",
    "select_per_example",
    "select_random",
    "select_unified",
]


def resolve_k(k, width: int, name: str = "k") -> int | None:
    """The number of gradient entries kept per example for a layer of ``width`` outputs.

    Returns None for a dense backward. ``k`` may be None or 0 (dense), an int
    (count; ``k >= width`` is dense) or a float in (0, 1] (share of the width, rounded,
    never below 1).
    """
    allowed = (
        f"allowed: None or 0 (dense), an int count (>= {width} also means dense), "
        f"or a fraction of the width {width} in (0, 1]"
    )
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise ArgumentError(f"{name}={k!r} is not a number; {allowed}", name)
    if isinstance(k, numbers.Integral):
        k = int(k)
        if k < 0:
            raise ArgumentError(f"{name}={k} is negative; {allowed}", name)
        return None if k == 0 or k >= width else k
    k = float(k)
    if k == 0.0:
        return None
    if not 0.0 < k <= 1.0:
        raise ArgumentError(f"{name}={k} is a fraction outside (0, 1]; {allowed}", name)
    n = max(1, int(round(k * width)))
    return None if n >= width else n


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the k largest ``scores`` along the last dimension, in index order; among equal scores
    the lower indices (ties are common: a ReLU's dead units all have gradient 0). This is the compiled
    kernels' rule, so every kernel selects the same entries (``torch.topk`` leaves ties unspecified)."""
    vals, top = scores.topk(k, dim=-1, sorted=False)
    thr = vals.amin(-1, keepdim=True)  # the k-th largest score of each row
    tied = scores == thr
    if torch.equal(tied.sum(-1), (vals == thr).sum(-1)):  # no tie crosses the cut (the usual case): topk's set
        return top.sort(dim=-1).values
    above = scores > thr
    room = k - above.sum(-1, keepdim=True)  # how many tied entries are kept: the lowest-index ones
    keep = above | (tied & (tied.cumsum(-1) <= room))
    return keep.nonzero()[:, -1].view(*scores.shape[:-1], k)


def select_unified(g: torch.Tensor, k: int) -> torch.Tensor:
    """One index set for the whole batch: the k columns with the largest sum |g|. -> (k,)"""
    return top_k(g.abs().sum(0), k)


def select_per_example(g: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest |g| entries of every row. -> (B, k)"""
    return top_k(g.abs(), k)


def select_random(g: torch.Tensor, k: int) -> torch.Tensor:
    """k distinct uniform indices per row, drawn from torch's global RNG. -> (B, k)"""
    return torch.rand(g.shape, device=g.device).topk(k, dim=1, sorted=False).indices


def all_indices(n: int, width: int, mode: str, device=None) -> torch.Tensor:
    """The selection of a dense backward, which keeps every entry: (width,) unified, else (n, width)."""
    every = torch.arange(width, device=device)
    return every if mode == "unified" else every.expand(n, width)


@functools.lru_cache(maxsize=64)
def _preorder(k: int) -> tuple[int, ...]:
    """Positions 0..k-1 of an array-stored binary tree (children 2i+1, 2i+2) in preorder."""
    order, stack = [], [0]
    while stack:
        i = stack.pop()
        if i < k:
            order.append(i)
            stack += [2 * i + 2, 2 * i + 1]
    return tuple(order)


def heap_fillers(nonzero: torch.Tensor, k: int, width: int | None = None,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
    """The zero entries the authors' C# top-k heap keeps in rows with fewer than k non-zeros. -> bool like ``nonzero``

    The C# (``TopNHeap.GetAbsTop``) seeds a min-heap with positions 0..k-1, heapifies it (Floyd; a sift
    prefers the left child on ties) and lets a later entry replace the root only if strictly larger. In a
    row with fewer than k non-zeros every non-zero is kept and the other slots hold zeros of index < k.
    Which ones: with only "zero / non-zero" mattering, heapify and each replacement keep the zeros in an
    ancestor-closed tree whose preorder is the preorder of the zeros among positions 0..k-1 (children
    2i+1, 2i+2), and each of the m non-zeros at positions >= k evicts the next zero in that order. So the
    fillers are the zeros of positions < k after the first m in preorder (tested against a plain-Python
    copy of the heap in tests/test_meprop.py). Rows with >= k non-zeros have no fillers.

    Args:
        nonzero: bool (N, width): which entries of the gradient rows are non-zero.
        k: the heap's size (the C# k), 1 <= k <= width.
        width, positions: the columns of ``nonzero`` are ``positions`` of the layer's original ``width`` units
            (meSimp removed the others: they have no gradient, as under the C#'s mask); the heap runs over the
            original row and the fillers at ``positions`` are returned. Default: the columns are the whole row.
    """
    if positions is not None:
        full = nonzero.new_zeros(nonzero.shape[0], width)
        full[:, positions] = nonzero
        return heap_fillers(full, k)[:, positions]
    n, width = nonzero.shape
    if not 1 <= k <= width:
        raise ValueError(f"k={k} must be in [1, width={width}] for the heap's filler rule")
    low = nonzero[:, :k]
    m = nonzero[:, k:].sum(1, keepdim=True)  # non-zeros after the seed: each evicts one zero
    order = torch.tensor(_preorder(k), dtype=torch.long, device=nonzero.device)
    zeros = ~low[:, order]  # (N, k) in preorder
    keep = zeros & (zeros.cumsum(1) > m)
    out = torch.zeros_like(nonzero)
    out[:, order] = keep
    out[(nonzero.sum(1) >= k)] = False
    return out


def heap_selected(g: torch.Tensor, k: int, top: torch.Tensor | None = None, fill: torch.Tensor | None = None):
    """Which entries of the rows of ``g`` the authors' C# top-k heap selects. -> bool like ``g``

    A row with more than k non-zeros: its top-k (``top`` (N, k) if the caller selected it already). Any
    other row: all its non-zeros and the heap's zero fillers (``fill``, default ``heap_fillers(g != 0, k)``).
    Ties among equal non-zero magnitudes at the k-th place follow torch's top-k (or the native selection),
    not the C# heap's order.
    """
    nz = g != 0
    if fill is None:
        fill = heap_fillers(nz, k)
    many = nz.sum(1) > k  # these rows' top-k holds non-zeros only
    sel = (nz & ~many.unsqueeze(1)) | fill
    if bool(many.any()):
        top = top[many] if top is not None else select_per_example(g[many], k)
        sel[many] = sel[many].scatter(1, top, True)
    return sel


def heap_hits(g: torch.Tensor, k: int, top: torch.Tensor | None = None, fill: torch.Tensor | None = None):
    """Hits per unit as the authors' C# record counts them (``count_zero_hits``): ``heap_selected`` summed
    over the rows. -> (width,)"""
    return heap_selected(g, k, top, fill).sum(0)


def hit_mask(g: torch.Tensor, idx: torch.Tensor | None, count_zero_hits: bool = False, heap=None) -> torch.Tensor:
    """THE rule for "a hit": which entries of the output gradient ``g`` (N, width) a selection hits. -> bool like g

    Entry (b, j) is a hit when unit j is selected for example b and its gradient g[b, j] is non-zero, or
    ``count_zero_hits`` (then every selected entry counts, as the authors' C# record did).

    Args:
        idx: the selection: None = every entry (a dense backward), (k,) one set for the batch (unified), or
            (N, k) per example (top-k or random; distinct indices in each row).
        count_zero_hits: count selected entries whose gradient is exactly 0.
        heap: ``(k, width, positions)`` for a per-example top-k with ``count_zero_hits``: the selection is then
            the C# heap's (``heap_selected``: in a row with fewer than k non-zeros, every non-zero and the heap's
            zero fillers, found over the layer's original ``width`` units at ``positions``, or None: the columns
            of g are the whole row); ``idx`` (N, k) is the top-k already selected, or None to select it here.
            Ignored without ``count_zero_hits``.
    """
    if heap is not None and count_zero_hits:
        k, width, positions = heap
        fill = heap_fillers(g != 0, k, width, positions) if positions is not None else None
        return heap_selected(g, k, idx, fill)
    if idx is None:
        return torch.ones_like(g, dtype=torch.bool) if count_zero_hits else g != 0
    if idx.dim() == 1:  # unified: every example selected the batch's k units
        idx = idx.expand(g.shape[0], -1)  # (N, k)
    hit = torch.ones_like(idx, dtype=torch.bool) if count_zero_hits else g.gather(1, idx) != 0  # (N, k)
    return torch.zeros_like(g, dtype=torch.bool).scatter_(1, idx, hit)


class WeightDim:
    """A layer size read from a parameter's shape, ``in_features = WeightDim("weight", 1)``: it follows the weight
    when meSimp shrinks it."""

    def __init__(self, param: str, dim: int):
        self.param, self.dim = param, dim

    def __get__(self, obj, objtype=None) -> int:
        return self if obj is None else getattr(obj, self.param).shape[self.dim]


class TopKWidth:
    """``k`` as given (int, fraction or None; validated when set), ``k_effective`` (the resolved count, None =
    dense) and ``backprop_ratio`` (k / width) of a layer whose top-k picks from ``_topk_width`` entries (the
    output width of a linear layer, the hidden size of an LSTM gate; declare it with ``WeightDim``)."""

    @property
    def _topk_width(self) -> int:
        raise NotImplementedError

    @property
    def k(self):
        """The k as given (int, fraction or None); ``k_effective`` is the resolved count."""
        return self._k

    @k.setter
    def k(self, value) -> None:
        resolve_k(value, self._topk_width)  # validate now, not in the middle of training
        self._k = value

    @property
    def k_effective(self) -> int | None:
        """Entries kept per example (per gate for an LSTM) at the current width (None = dense)."""
        return resolve_k(self._k, self._topk_width)

    @property
    def backprop_ratio(self) -> float:
        """k / width: the share of the gradient that is back-propagated."""
        k = self.k_effective
        return 1.0 if k is None else k / self._topk_width

    def k_repr(self, per: str = "") -> str:
        """``k`` for a layer's repr: "k=dense", or "k=20 (4.0% of 500), mode=per_example" and the rescale /
        sparsify_bias flags that are on (``per``: what k counts in, e.g. " per gate")."""
        k, width = self.k_effective, self._topk_width
        if k is None:
            return "k=dense"
        s = f"k={k}{per} ({k / width:.1%} of {width}), mode={self.mode}"
        return s + "".join(f", {flag}=True" for flag in ("rescale", "sparsify_bias") if getattr(self, flag))

"""meSimp: simplify a model from the meProp record (METHODS.md section 2).

Taught in notebooks/05_mesimp.ipynb (the MLP) and notebooks/07_lstm_pos_tagging.ipynb (LSTM cells).

Importance -> selection -> action, as Torch-Pruning splits it:
    importance  ``ActivityRecord``: per hidden unit, how many examples had it among their
                top-k (``hits``) out of ``seen`` examples since the last prune
    selection   ``ActivityRecord.keep_mask``: unit j is removed if
                ``hits[j] < floor(prune_rate * seen)``; at least ``min_units`` stay
    action      ``mask`` (shapes kept, removed units held at zero, no compute saved; what the
                released code did) or ``physical`` (rows of W_l and b_l deleted *and* the
                matching input columns of W_{l+1}, with the optimizer state sliced along;
                the paper suggested this but did not implement it). A mask lives in the layer
                (``hooks.grad_mask``), not in ``state_dict``: a reloaded masked model keeps its zero
                rows, but a new ``Simplifier`` sees the full widths; keep a model's widths by saving
                the physical one (``checkpoint.save_model``)

The record is cleared only at a prune; removed units never come back; the output layer is
never pruned. ``Simplifier`` is the one prune loop, over per-layer units (``mesimp_lib.units``: the
rows of an MLP's hidden ``MePropLinear`` layers, the cells of LSTM directions, ``lstm.LSTMSimplifier``);
``cycle_phase`` gives the authors' cycle schedule (even cycles prune, odd cycles train with the
structure fixed). Taught in notebooks/05_mesimp.ipynb (the LSTM's cells: 07_lstm_pos_tagging.ipynb).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .meprop import MePropLinear
from .selection import hit_mask, select_per_example, top_k
from .units import LinearUnits
from .validate import check_bool, check_choice, check_device, check_float, check_int, check_size

__all__ = [
    "REALISATIONS",
    "RECORDS",
    "RESETS",
    "ActivityRecord",
    "Simplifier",
    "authors_reset_now",
    "cycle_phase",
    "reset_optimizer_state",
]

RECORDS = ("per_example", "unified")
REALISATIONS = ("mask", "physical")
RESETS = ("fresh", "moments", "authors")


def check_simplifier_args(prune_rate, realisation: str, record: str, count_zero_hits: bool,
                          min_units: int) -> tuple[float, int]:
    """Check the arguments every simplifier takes; returns (prune_rate as a float, min_units as an int)."""
    check_choice("realisation", realisation, REALISATIONS)
    check_choice("record", record, RECORDS)
    check_bool("count_zero_hits", count_zero_hits)
    return check_float("prune_rate", prune_rate, 0.0, 1.0), check_int("min_units", min_units, 1)


class ActivityRecord:
    """The meSimp record of one layer: ``hits[j]`` (examples whose top-k set held unit j)
    and ``seen`` (examples back-propagated), both since the last prune.

    Attached to its layer by a ``Simplifier``'s unit (``mesimp_lib.units``), it is updated in backward:
    a ``MePropLinear`` calls ``observe`` (one example = one row of the batch), a ``MePropLSTM``
    ``observe_cells`` (one example = one token; the units are memory cells).

    Args:
        width: units of the layer now.
        record: "per_example" (default): hits counted per example even when the layer
            selects in unified mode (then a per-example top-k is computed for the record
            only); "unified": in unified mode every example counts the batch's k units.
        count_zero_hits: count the zero-gradient "fillers" the authors' C# top-k heap keeps in a row
            with fewer than k non-zeros (``meprop.heap_fillers``), as its record did. Default False:
            only non-zero entries count. Needs ``k``; the rule is applied over the layer's original
            positions (``positions`` maps a physically shrunk layer's rows back to them), so the mask
            and physical realisations count the same hits, and it holds when the layer has become
            narrower than k (then its backward is dense, but the C# heap still ran over all positions).
            Random selection and the unified record count every selected entry instead.
        k: the layer's top-k count at its original width (None: dense; every unit then counts).
    """

    def __init__(self, width: int, record: str = "per_example", count_zero_hits: bool = False, device=None,
                 k: int | None = None):
        width = check_size("width", width)
        check_choice("record", record, RECORDS)
        check_bool("count_zero_hits", count_zero_hits)
        check_device("device", device, optional=True)
        k = check_int("k", k, 1, width, optional=True)
        self.record = record
        self.count_zero_hits = count_zero_hits
        self.k = k
        self.full_width = width
        self.positions: torch.Tensor | None = None  # original position of each current unit (None: unchanged)
        self.hits = torch.zeros(width, dtype=torch.int64, device=device)
        self.seen = 0

    @property
    def width(self) -> int:
        return self.hits.numel()

    def clear(self) -> None:
        self.hits.zero_()
        self.seen = 0

    def observe(self, g: torch.Tensor, selection, plan) -> None:
        """Called by the layer's backward with its (masked) output gradient and selection."""
        n = g.shape[0]
        self.seen += n
        per_example_topk = (isinstance(selection, tuple) and plan.mode == "per_example"
                            or not isinstance(selection, tuple) and self.record == "per_example")
        if self.count_zero_hits and self.k is not None and per_example_topk:
            top = selection[0] if isinstance(selection, tuple) else None
            self.hits += self._heap_hits(g, top)
            return
        if isinstance(selection, tuple):  # per example / random: (indices, kept values)
            idx = selection[0]
        elif selection is not None and self.record == "per_example":  # unified selection, per-example record
            idx = select_per_example(g, selection.numel())
        else:  # dense (None: every unit with a gradient) or the unified record (every example counts the k units)
            idx = selection
        self.hits += hit_mask(g, idx, self.count_zero_hits).sum(0).to(self.hits.dtype)

    def _heap_hits(self, g: torch.Tensor, top: torch.Tensor | None) -> torch.Tensor:
        """The C# heap's hits, its fillers found over the layer's original positions (removed units have no
        gradient, as under the C#'s mask). ``top``: the layer's per-example selection or None."""
        heap = (self.k, self.full_width, self.positions)
        return hit_mask(g, top, True, heap=heap).sum(0).to(self.hits.dtype)

    def observe_cells(self, hits) -> None:
        """Called by an ``MePropLSTM``'s backward with its ``lstm_function.CellHits``: every token is one
        example; the cells it hit under this record's rule (count_zero_hits, the original k, width and
        positions) count. The LSTM counts its selected sets (``record`` does not change that)."""
        cells = hits.cells(self.count_zero_hits, self.k, self.full_width, self.positions)  # (N, h) bool
        self.seen += cells.shape[0]
        self.hits += cells.sum(0).to(self.hits.dtype)

    def keep(self, idx: torch.Tensor) -> None:
        """The layer kept only units ``idx`` (physically): their hits and original positions stay."""
        self.positions = self.unit_ids[idx]
        self.hits = self.hits[idx]

    @property
    def unit_ids(self) -> torch.Tensor:
        """The original unit number of each current unit."""
        return self.positions if self.positions is not None else torch.arange(self.width, device=self.hits.device)

    def threshold(self, prune_rate: float) -> int:
        """Units with fewer hits than this are removed: ``floor(prune_rate * seen)``."""
        return math.floor(check_float("prune_rate", prune_rate, 0.0, 1.0) * self.seen)

    def keep_mask(self, prune_rate: float, min_units: int = 1, alive: torch.Tensor | None = None):
        """Which units survive a prune now. Returns (keep bool (width,), kept_minimum: bool).

        ``alive`` (mask realisation) marks units still in the model; removed ones stay removed.
        If fewer than ``min_units`` would survive, the ``min_units`` alive units with the most
        hits are kept (ties: lowest index) and ``kept_minimum`` is True.
        """
        keep = self.hits >= self.threshold(prune_rate)
        if alive is not None:
            keep &= alive
        n_alive = int(alive.sum()) if alive is not None else self.width
        need = min(min_units, n_alive)
        if int(keep.sum()) >= need:
            return keep, False
        score = self.hits if alive is None else self.hits.masked_fill(~alive, -1)  # hits >= 0: removed units last
        keep = torch.zeros_like(keep)
        keep[top_k(score, need)] = True  # selection's rule: among equal hits the lowest indices
        return keep, True

    def __repr__(self) -> str:
        return f"ActivityRecord(width={self.width}, seen={self.seen}, record={self.record})"


def cycle_phase(epoch: int, cycle_epochs: int) -> tuple[int, bool]:
    """(cycle index, prunes in this cycle?) for a 0-based epoch: even cycles simplify."""
    cycle = epoch // check_int("cycle_epochs", cycle_epochs, 1)
    return cycle, cycle % 2 == 0


def authors_reset_now(epoch: int, cycle_epochs: int) -> bool:
    """``reset="authors"``: the C# (``Mnist.cs``) zeroes Adam's moments after each of the parts of an epoch
    (``prunes_per_epoch``) when ``(epoch + 1) % cycle_epochs == 0``: in the last epoch of every cycle."""
    return (epoch + 1) % cycle_epochs == 0


def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """``reset="moments"`` / ``"authors"``: zero every state tensor (Adam's moments, AdaGrad's sums) but keep
    the step count, as the authors' C# ``Adam.Prepare`` does."""
    for state in optimizer.state.values():
        for key, v in state.items():
            if key != "step" and torch.is_tensor(v):
                v.zero_()


class Simplifier:
    """meSimp: one prune loop over per-layer units (importance -> selection -> action).

    Args:
        model: an ``mesimp_lib.MLP`` (anything with ``.hidden`` ``MePropLinear`` layers and ``.output``:
            each hidden layer's rows are units, the next layer's columns go with them), or a list of
            units (``mesimp_lib.units``: ``LinearUnits``, ``LSTMCells``; ``lstm.LSTMSimplifier`` builds them).
        prune_rate: in [0, 1]; unit j is removed if ``hits[j] < floor(prune_rate * seen)``.
        realisation: "physical" (delete rows/columns, slice optimizer state) or "mask".
        record, count_zero_hits: see ``ActivityRecord`` (one per unit block, attached to its layer).
        min_units: a prune never leaves a layer with fewer units (default 1).

    ``prune(optimizer)`` applies one prune step to every unit block and returns the event
    (widths, removed counts, thresholds, which layers were held at ``min_units``).
    ``unit_ids[l]`` maps the current units of block l to their original numbers; ``alive[l]`` says
    which are in the model (read from the layer's mask: the layer holds it, nothing else).
    """

    def __init__(
        self,
        model,
        prune_rate: float = 0.1,
        realisation: str = "physical",
        record: str = "per_example",
        count_zero_hits: bool = False,
        min_units: int = 1,
    ):
        self.prune_rate, self.min_units = check_simplifier_args(prune_rate, realisation, record, count_zero_hits,
                                                                min_units)
        self.realisation = realisation
        self.units = list(model) if isinstance(model, (list, tuple)) else mlp_units(model)
        if not self.units:
            raise ValueError("meSimp needs at least one layer of units to prune, got none")
        self.records = [ActivityRecord(u.width, record, count_zero_hits, u.device, u.k) for u in self.units]
        for unit, rec in zip(self.units, self.records):
            unit.attach(rec)
        self.events: list[dict] = []

    @property
    def widths(self) -> list[int]:
        """Units still in each block."""
        return [int(u.alive().sum()) for u in self.units]

    @property
    def alive(self) -> list[torch.Tensor]:
        """bool (width,) per block: the units still in the model."""
        return [u.alive() for u in self.units]

    @property
    def unit_ids(self) -> list[torch.Tensor]:
        """The original unit numbers of each block's current units."""
        return [rec.unit_ids for rec in self.records]

    def detach(self) -> None:
        """Stop recording (removes the records from the layers)."""
        for unit, rec in zip(self.units, self.records):
            unit.detach(rec)

    def prune(self, optimizer: torch.optim.Optimizer | None = None) -> dict:
        """One prune step on every unit block; clears the records."""
        event = {"widths_before": self.widths, "removed": [], "threshold": [], "seen": [], "kept_minimum": []}
        for i, (unit, rec) in enumerate(zip(self.units, self.records)):
            alive = unit.alive() if self.realisation == "mask" else None
            keep, held = rec.keep_mask(self.prune_rate, self.min_units, alive)
            event["threshold"].append(rec.threshold(self.prune_rate))
            event["seen"].append(rec.seen)
            event["kept_minimum"].append(held)
            offset = sum(u.width for u in self.units[:i] if u.next_layer is unit.next_layer)
            dead = (~keep if alive is None else alive & ~keep).nonzero().squeeze(1)
            if dead.numel() and self.realisation == "physical":
                idx = keep.nonzero().squeeze(1)
                unit.keep(idx, offset, optimizer)
                rec.keep(idx)
            elif dead.numel():
                unit.mask(dead, keep, offset, optimizer)
            event["removed"].append(dead.numel())
            rec.clear()
        event["widths"] = self.widths
        self.events.append(event)
        return event

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(prune_rate={self.prune_rate}, realisation={self.realisation}, "
            f"widths={self.widths}, prunes={len(self.events)})"
        )


def mlp_units(model: nn.Module) -> list[LinearUnits]:
    """The units of an ``MLP``: each hidden ``MePropLinear``'s rows, the next layer's columns with them."""
    layers = list(model.hidden)
    for layer in layers:
        if not isinstance(layer, MePropLinear):
            raise ValueError(f"meSimp needs MePropLinear hidden layers, got {type(layer).__name__}")
    return [LinearUnits(layer, nxt) for layer, nxt in zip(layers, layers[1:] + [model.output])]

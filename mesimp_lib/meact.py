"""meAct: minimal effort activation -- a RECONSTRUCTION from the meSimp paper's text.

Taught in notebooks/06_meact.ipynb.

The authors released no code for meAct; METHODS.md section 3 describes what is built here,
and every open point is a parameter:

- During training, for every training example e and hidden layer, accumulate the absolute
  output gradient per unit: ``S[e, j] += |dL/dy_j|`` (tables of ``[N_train, width]``,
  float16 by default).
- From epoch ``start_epoch`` on, a unit is *inactive* for example e when its statistic is
  below the threshold: ``statistic="share"``: ``S[e, j] / sum_i S[e, i] < threshold / width``
  (default); ``statistic="max_ratio"``: ``S[e, j] / max_i S[e, i] < threshold``.
- Then, in training forward passes, an inactive unit outputs the activation it had at the
  example's previous visit (stored, float16) and gets no gradient; active units are computed
  as usual. Dev/test forward passes are normal and dense.

Honest notes: this implementation computes every unit and then substitutes the stored
values (same outputs and gradients as computing only the active ones; it saves no time: meAct
is an analysis of *how much of the network each example needs*). Memory: two tables per
hidden layer, ``2 * N_train * width * 2`` bytes in float16 (MNIST, 55,000 x 500: 110 MB per
layer; ``memory_bytes`` reports it).
"""

from __future__ import annotations

import torch
from torch import nn

from .validate import check_choice, check_dtype, check_float, check_size

__all__ = ["STATISTICS", "MeAct"]

STATISTICS = ("share", "max_ratio")


class _ScoreObserver:
    """Adds |dL/dy| of the current batch's examples to layer i's table (from backward)."""

    def __init__(self, meact: "MeAct", i: int):
        self.meact, self.i = meact, i

    def observe(self, g: torch.Tensor, selection, plan) -> None:
        ids = self.meact.ids
        if ids is None or not self.meact.model.training:
            return
        table = self.meact.scores[self.i]
        table[ids] += g.abs().to(table.dtype)


class MeAct:
    """Attach meAct to an ``MLP`` (its hidden ``MePropLinear`` layers): an observer of each layer's
    backward (``layer.hooks.observers``, for the scores) and the model's activation observer
    (``MLP.observe_activations``, which calls ``activation``); ``detach()`` removes both.

    Call ``set_batch(example_ids)`` before each training forward pass and ``start()`` when
    active-path finding begins (the trainer does both). ``stats()`` reports the average
    number of active units per example and layer since ``start()``.
    """

    def __init__(self, model: nn.Module, n_examples: int, threshold: float = 1.0, statistic: str = "share",
                 dtype: torch.dtype = torch.float16):
        check_choice("statistic", statistic, STATISTICS)
        self.threshold = check_float("threshold", threshold, 0.0)
        n_examples = check_size("n_examples", n_examples)
        check_dtype("dtype", dtype, optional=False)
        self.model = model
        self.statistic = statistic
        dev = model.hidden[0].weight.device
        widths = model.widths
        self.scores = [torch.zeros(n_examples, w, dtype=dtype, device=dev) for w in widths]
        self.previous = [torch.zeros(n_examples, w, dtype=dtype, device=dev) for w in widths]
        self.visited = torch.zeros(n_examples, dtype=torch.bool, device=dev)
        self.ids: torch.Tensor | None = None
        self.enabled = False
        self._active_sum = [0.0] * len(widths)
        self._examples = 0
        self._observers = [_ScoreObserver(self, i) for i in range(len(widths))]
        for layer, obs in zip(model.hidden, self._observers):
            layer.hooks.observers.append(obs)
        model.observe_activations(self)  # the MLP hands each hidden activation to self.activation

    @property
    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.scores + self.previous)

    def set_batch(self, ids: torch.Tensor | None) -> None:
        self.ids = ids

    def start(self) -> None:
        """Switch active-path finding on (from now on inactive units reuse stored values)."""
        self.enabled = True

    def active_mask(self, i: int, ids: torch.Tensor) -> torch.Tensor:
        """(B, width) bool: which units of layer i are active for these examples."""
        s = self.scores[i][ids].float()
        if self.statistic == "share":
            share = s / s.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
            return share >= self.threshold / s.shape[1]
        return s / s.amax(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) >= self.threshold

    def activation(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """The activation observer the MLP calls (``MLP.observe_activations``): layer i's activation ``h``
        (B, width) of the current batch's examples -> what the next layer gets (stored values for the
        inactive units once started). Training forward passes only; dev/test pass ``h`` through."""
        ids = self.ids
        if ids is None or not self.model.training:
            return h
        if self.enabled:
            act = self.active_mask(i, ids) | ~self.visited[ids].unsqueeze(1)  # first visit: compute all
            h = torch.where(act, h, self.previous[i][ids].to(h.dtype))  # stored values carry no gradient
            self._active_sum[i] += float(act.sum())
            if i == 0:
                self._examples += len(ids)
        self.previous[i][ids] = h.detach().to(self.previous[i].dtype)
        if i == len(self.scores) - 1:
            self.visited[ids] = True
        return h

    def stats(self) -> dict:
        """Average active units per example per layer (since ``start()``) and memory."""
        n = max(1, self._examples)
        widths = [t.shape[1] for t in self.scores]
        return {
            "active_units_per_example": [round(a / n, 2) for a in self._active_sum] if self._examples else None,
            "active_share": [round(a / n / w, 4) for a, w in zip(self._active_sum, widths)] if self._examples else None,
            "examples_after_start": self._examples,
            "memory_bytes": self.memory_bytes,
        }

    def detach(self) -> None:
        for layer, obs in zip(self.model.hidden, self._observers):
            if obs in layer.hooks.observers:
                layer.hooks.observers.remove(obs)
        self.model.observe_activations(None)

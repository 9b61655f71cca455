"""The ``Task`` interface: what the training loop needs from an experiment, and nothing more.

A task holds its data, its model, its loss and its metric. ``training.fit(config, task)``
runs any task the same way (optimizer, evaluations, timings, the meSimp cycle schedule);
``training.train(config)`` picks the task class from ``config.task`` in ``tasks.TASKS``.
Adding a task is one new file with a ``Task`` subclass and one line in that registry.

A subclass builds everything in ``__init__(config, data=None)``, starting with
``super().__init__(config)`` (``config``, ``device``, the shuffling generator ``gen``; ``train`` has
seeded torch's global RNG just before: the model's initialisation draws from it) and provides:

    model             the ``nn.Module`` trained (its parameters go to the optimizer)
    steps_per_epoch   how many batches ``batches(epoch)`` yields
    batches(epoch)    the training batches of one epoch (called after a new meSimp cycle's reset)
    loss(batch)       forward pass and loss of one batch (the loss ``backward`` starts from)
    evaluate()        {"dev_acc": ..., "test_acc": ..., extra keys} at an evaluation point
    dev_score()       the dev score alone (right after a meSimp prune)
    row_weights()     the weight matrices whose rows are counted (read each time: a prune replaces them)
    stats_layers      the meProp layers whose ``stats`` / ``backprop_ratio`` are reported
    simplifier        a meSimp simplifier (``config.method == "mesimp"``) or None
    about, metric     class attributes: what the task trains (the CLI's help) and what its score measures
    desc              the progress bar's label (None: the method's name)

and may override the hooks ``start_epoch(epoch)``, ``before_step(batch)`` and
``finish(result)`` (add the task's own keys to the result dict).
"""

from __future__ import annotations

import math

import torch

from ..meprop import resolve_k
from ..validate import check_device, check_float

__all__ = ["Task", "check_head_args", "one_width", "shuffled_batches"]


class Task:
    """Base class of the tasks (see the module docstring for what a subclass sets)."""

    name = "task"
    about = "a task"  # what `--task NAME` trains, for the CLI's help
    metric = "accuracy"  # what dev_acc / test_acc measure, for the printed summary
    rows_note = "per hidden layer, share of weight rows"

    model: torch.nn.Module
    steps_per_epoch: int
    stats_layers: list
    simplifier = None
    desc: str | None = None

    def __init__(self, config):
        """What every task keeps: its config, its device and the generator of its shuffling."""
        self.config = config
        self.device = torch.device(config.device)
        self.gen = torch.Generator().manual_seed(config.seed)

    def batches(self, epoch: int):
        raise NotImplementedError

    def loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self) -> dict:
        raise NotImplementedError

    def dev_score(self) -> float:
        raise NotImplementedError

    def row_weights(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.stats_layers]

    def start_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (after a new meSimp cycle's optimizer reset)."""

    def before_step(self, batch) -> None:
        """Called before the forward pass of every training batch."""

    def finish(self, result: dict) -> dict:
        """The task's own keys added to ``fit``'s result (the model's hooks removed)."""
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__}, steps_per_epoch={self.steps_per_epoch})"


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator, device):
    """Index batches over a fresh permutation of ``range(n)`` (one epoch; ``gen`` seeds it)."""
    perm = torch.randperm(n, generator=gen).to(device)
    for i in range(math.ceil(n / batch_size)):
        yield perm[i * batch_size : (i + 1) * batch_size]


def check_head_args(out_features: int, k_out, dropout: float, device) -> None:
    """The arguments every task model shares: ``k_out`` for its output layer, ``dropout`` in [0, 1), ``device``."""
    resolve_k(k_out, out_features, "k_out")
    check_float("dropout", dropout, 0.0, 1.0, hi_open=True)
    check_device("device", device, optional=True)


def one_width(hidden, what: str) -> int:
    """``config.hidden`` for a model with one hidden layer: an int, or a list of one width."""
    if isinstance(hidden, list):
        if len(hidden) != 1:
            raise ValueError(f"hidden={hidden!r}: {what}; give one width")
        hidden = hidden[0]
    return hidden

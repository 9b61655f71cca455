"""Training: one ``train`` call (its config: ``config.TrainConfig``), a JSON-ready result.

``train(TrainConfig(...))`` seeds everything inside the call, sets the thread count,
trains with Adam or AdaGrad, evaluates dev (and test) several times per epoch, keeps the
test accuracy at the best dev point, and times forward / backward / optimizer update
separately. It also measures how many weight rows really change per step: with Adam a row
whose gradient is zero still moves (its moment estimates carry it), so "only k rows are
updated" is true for the gradient, not for the parameters.

``train`` builds the task ``config.task`` names (``tasks.TASKS``: its data, model, loss and
metric behind the ``tasks.base.Task`` interface) and runs it through ``fit(config, task)``,
the one loop every task shares.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from .config import AUTHORS, AUTHORS_MESIMP, METHODS, OPTIMIZERS, TrainConfig  # declared there; re-exported
from .mesimp import authors_reset_now, cycle_phase, reset_optimizer_state
from .fused import status as fused_status
from .results import environment, finite_or_none
from .tasks import TASKS as TASK_CLASSES
from .tasks import Task
from .tasks.mnist import MLP, build_mlp

__all__ = ["AUTHORS", "AUTHORS_MESIMP", "METHODS", "OPTIMIZERS", "TrainConfig", "build_model", "fit", "make_optimizer",
           "train"]


def build_model(config: TrainConfig) -> MLP:
    """The MNIST model ``config`` describes (``tasks.mnist.build_mlp``: a ``NativeMLP`` for kernel="native")."""
    return build_mlp(config)


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """Adam (the paper's lr 1e-3, betas 0.9/0.999, eps 1e-8) or AdaGrad, unmodified.

    PyTorch's fused implementation (one kernel for all parameters) is used: the same
    algorithm as the default loop, equal to float rounding, and 3-4x faster on a CPU at
    these sizes (0.54 ms vs 1.56 ms per Adam step for 784-500-500-10, 1 thread).
    """
    lr = config.learning_rate
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, fused=True)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    # lazy variants: a departure from the paper's unmodified optimizers (mesimp_lib/lazy.py); LazyAdam
    # makes one native call per step when the C++ kernels can be built (logged), the PyTorch loop otherwise
    from .lazy import LazyAdam, LazySGD

    return LazyAdam(params, lr=lr) if config.optimizer == "lazy_adam" else LazySGD(params, lr=lr)


class _Timer:
    """Wall-clock sections (CUDA-synchronised when the run is on a GPU)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.totals = {"forward_s": 0.0, "backward_s": 0.0, "update_s": 0.0, "eval_s": 0.0}
        self._t = 0.0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self._t = time.perf_counter()

    def stop(self, key: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.totals[key] += now - self._t
        self._t = now


def _rows_changed(before: list[torch.Tensor], weights: list[torch.Tensor]) -> list[float]:
    return [(w.detach() != b).any(1).float().mean().item() for b, w in zip(before, weights)]


def _rows_with_grad(weights: list[torch.Tensor]) -> list[float]:
    out = []
    for w in weights:
        g = w.grad
        if g is not None and g.is_sparse:  # weight_grad="sparse": the stored rows (zero rows are possible)
            g = g.to_dense()
        out.append(0.0 if g is None else (g != 0).any(1).float().mean().item())
    return out


def _mean_cols(rows: list[list[float]]) -> list[float]:
    return [round(sum(c) / len(c), 4) for c in zip(*rows)] if rows else []


class _Run:
    """The state of one ``fit``: the optimizer, the timer, the evaluation history and best point, the
    meSimp schedule and the sampled row / update measurements."""

    def __init__(self, config: TrainConfig, task: Task, on_eval, progress: bool):
        self.config, self.task, self.model, self.on_eval = config, task, task.model, on_eval
        self.opt = make_optimizer(config, self.model.parameters())
        steps = task.steps_per_epoch
        self.eval_every = max(1, math.ceil(steps / config.evals_per_epoch))
        self.timer = _Timer(config.device)
        self.history: list[dict] = []
        self.rows_changed: list[list[float]] = []
        self.rows_grad: list[list[float]] = []
        self.updates: list[dict] = []
        self.epoch_s: list[float] = []
        self.best = {"dev_acc": -1.0}
        self.loss_sum, self.loss_n, self.step = 0.0, 0, 0
        self.simp = task.simplifier
        self.resets: list[int] = []  # steps after which reset="authors" zeroed the optimizer's moments
        self.widths_history: list[dict] = []
        self.n_params_start = sum(p.numel() for p in self.model.parameters())
        self.prune_after: set[int] = set()
        if self.simp is not None:
            n_units = len(self.simp.widths)
            self.widths_history.append({"step": 0, "epoch": 0.0, "widths": self.simp.widths, "removed": [0] * n_units,
                                        "kept_minimum": [False] * n_units, "dev_acc": None})
            k_prunes = min(config.prunes_per_epoch, steps)
            self.prune_after = {round((p + 1) * steps / k_prunes) - 1 for p in range(k_prunes)}
        self.bar = tqdm(total=steps * config.epochs, desc=task.desc or config.method,
                        disable=not progress, mininterval=1.0)

    def start_epoch(self, epoch: int) -> bool:
        """A new meSimp cycle resets the optimizer; returns whether this epoch prunes."""
        config, pruning = self.config, False
        if self.simp is not None:
            _, pruning = cycle_phase(epoch, config.cycle_epochs)
            if epoch > 0 and epoch % config.cycle_epochs == 0 and config.reset != "authors":  # a new cycle
                if config.reset == "fresh":
                    self.opt = make_optimizer(config, self.model.parameters())
                else:
                    reset_optimizer_state(self.opt)
        self.task.start_epoch(epoch)
        return pruning

    def train_step(self, batch, epoch_float: float) -> None:
        """Forward, backward, (clip,) optimizer step; every ``rows_every`` steps the rows and update measured."""
        config, timer, model = self.config, self.timer, self.model
        self.task.before_step(batch)
        timer.start()
        loss = self.task.loss(batch)
        timer.stop("forward_s")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_value_(model.parameters(), config.grad_clip)
        timer.stop("backward_s")
        measure = config.rows_every and self.step % config.rows_every == 0
        if measure:
            weights = self.task.row_weights()
            before_all = [p.detach().clone() for p in model.parameters()]
            copies = {id(p): b for p, b in zip(model.parameters(), before_all)}  # the row weights are parameters
            before = [copies[id(w)] if id(w) in copies else w.detach().clone() for w in weights]
            self.rows_grad.append(_rows_with_grad(weights))
            timer.start()
        self.opt.step()
        timer.stop("update_s")
        if measure:
            self.rows_changed.append(_rows_changed(before, self.task.row_weights()))
            change = sum(float((p.detach() - q).abs().sum()) for p, q in zip(model.parameters(), before_all))
            self.updates.append({"step": self.step, "epoch": round(epoch_float, 4),
                                 "mean_abs_update": change / sum(q.numel() for q in before_all)})
        self.step += 1
        self.loss_sum += loss.item() / (len(batch) if config.loss_reduction == "sum" else 1)  # reported as a mean
        self.loss_n += 1
        self.bar.update(1)

    def evaluate_point(self, epoch_float: float) -> None:
        self.timer.start()
        scores = self.task.evaluate()
        self.timer.stop("eval_s")
        point = {"step": self.step, "epoch": round(epoch_float, 4),
                 "train_loss": round(self.loss_sum / max(1, self.loss_n), 6), **scores}
        self.loss_sum, self.loss_n = 0.0, 0
        self.history.append(point)
        if point["dev_acc"] > self.best["dev_acc"]:
            self.best.update(point)
        if self.on_eval is not None:
            self.on_eval(point, self.model)
        self.bar.set_postfix(dev=f"{point['dev_acc']:.4f}", refresh=False)

    def prune(self, epoch_float: float, evaluating: bool) -> None:
        event = self.simp.prune(self.opt)
        if evaluating:  # an evaluation follows at this very step: its dev score is the same number
            self.evaluate_point(epoch_float)
            dev = self.history[-1]["dev_acc"]
        else:
            self.timer.start()
            dev = self.task.dev_score()
            self.timer.stop("eval_s")
        self.widths_history.append({"step": self.step, "epoch": round(epoch_float, 4), "widths": event["widths"],
                                    "removed": event["removed"], "kept_minimum": event["kept_minimum"],
                                    "dev_acc": dev})

    def after_step(self, epoch: int, i: int, pruning: bool) -> None:
        """The evaluation, meSimp prune and reset="authors" optimizer reset due after step i of the epoch."""
        steps = self.task.steps_per_epoch
        evaluating = (i + 1) % self.eval_every == 0 or i + 1 == steps
        if pruning and i in self.prune_after:
            self.prune(epoch + (i + 1) / steps, evaluating)
        elif evaluating:
            self.evaluate_point(epoch + (i + 1) / steps)
        if self.simp is not None and self.config.reset == "authors" and i in self.prune_after and authors_reset_now(
                epoch, self.config.cycle_epochs):
            reset_optimizer_state(self.opt)  # the C#: after each part of the last epoch of a cycle
            self.resets.append(self.step)

    def simplifier_result(self) -> dict:
        """meSimp's keys of the result (the simplifier detached), or {} without one."""
        simp = self.simp
        if simp is None:
            return {}
        simp.detach()
        n_params = sum(p.numel() for p in self.model.parameters())
        extra = {
            "widths_history": self.widths_history,
            # units alive (in mask mode the tensors keep their shape; simp.widths counts the live units)
            "final_widths": simp.widths,
            "average_width": round(sum(simp.widths) / len(simp.widths), 2),
            "params": {"start": self.n_params_start, "final": n_params,
                       "ratio": round(n_params / self.n_params_start, 4)},
        }
        if self.config.reset == "authors":
            extra["optimizer_resets"] = self.resets
        return extra

    def result(self, env: dict, total_s: float) -> dict:
        config, best, history, layers = self.config, self.best, self.history, self.task.stats_layers
        stats = [layer.stats for layer in layers]
        timing = {k: round(v, 3) for k, v in self.timer.totals.items()}
        timing.update(total_s=round(total_s, 3), steps=self.step, epoch_s=self.epoch_s)
        updates = self.updates
        return {
            "config": asdict(config),
            "command": config.to_cli() + " --json OUT.json",
            "best_dev_acc": best["dev_acc"],
            "test_acc": best["test_acc"],
            "best_epoch": best["epoch"],
            "best_step": best["step"],
            "final_dev_acc": history[-1]["dev_acc"],
            "final_test_acc": history[-1]["test_acc"],
            "history": history,
            "timing": timing,
            "backprop_ratio": round(sum(layer.backprop_ratio for layer in layers) / len(layers), 6),
            "widths": self.model.widths,
            "rows": {
                "note": f"{self.task.rows_note}: with a non-zero gradient / really changed by the optimizer step "
                f"(sampled every {config.rows_every} steps)",
                "with_grad": _mean_cols(self.rows_grad),
                "changed": _mean_cols(self.rows_changed),
            },
            "updates": {
                "note": "mean |parameter change| per parameter of one optimizer step (the update the optimizer "
                f"really applied), sampled every {config.rows_every} steps",
                "samples": [{**u, "mean_abs_update": round(u["mean_abs_update"], 9)} for u in updates],
                "mean": round(sum(u["mean_abs_update"] for u in updates) / len(updates), 9) if updates else None,
            },
            "meprop": {
                "rows_touched_per_step": [round(s.mean_rows_touched_frac, 4) for s in stats],
                "backward_macs_ratio": [round(s.macs_ratio, 4) for s in stats],
            },
            "environment": env,
            **self.simplifier_result(),
        }


def fit(config: TrainConfig, task: Task, *, progress: bool = True, on_eval=None, return_model: bool = False) -> dict:
    """The training loop every task shares (``tasks.base.Task``); returns the JSON-ready result.

    Evaluates ``evals_per_epoch`` times per epoch, keeps the test score at the best dev point, times
    forward / backward / optimizer / evaluation, runs the meSimp cycle schedule (when the task has a
    simplifier), and measures every ``rows_every`` steps the rows with a gradient, the rows the optimizer
    really changed and the mean absolute update. ``on_eval(point, model)`` is called after every
    evaluation; ``return_model`` adds the trained model under ``"model"`` (not JSON-ready). The task adds
    its own keys last (``task.finish``).
    """
    if config.method == "mesimp" and task.simplifier is None:
        raise ValueError(f"method='mesimp' needs a simplifier, and the task {type(task).__name__} sets none "
                         "(tasks/base.py: a Task sets `simplifier` for method='mesimp')")
    env = environment()  # before training: the commit and machine that produced the numbers
    if config.kernel != "torch":  # build the compiled kernels now, outside the timers, and say which backward runs
        env["meprop_backward"] = fused_status()
    run = _Run(config, task, on_eval, progress)
    steps = task.steps_per_epoch
    t_total = time.perf_counter()
    task.model.train()
    for epoch in range(config.epochs):
        t_epoch, eval_before = time.perf_counter(), run.timer.totals["eval_s"]
        pruning = run.start_epoch(epoch)
        for i, batch in enumerate(task.batches(epoch)):
            run.train_step(batch, epoch + i / steps)
            run.after_step(epoch, i, pruning)
        run.epoch_s.append(round(time.perf_counter() - t_epoch - (run.timer.totals["eval_s"] - eval_before), 3))
    run.bar.close()
    result = run.result(env, time.perf_counter() - t_total)
    if return_model:
        result["model"] = task.model
    return task.finish(result)


def train(config: TrainConfig, data=None, progress: bool = True, on_eval=None, return_model: bool = False) -> dict:
    """Train one model as ``config`` says and return a JSON-ready result dict.

    The task is ``tasks.TASKS[config.task]``, built after seeding torch's global RNG with ``config.seed``.

    Args:
        data: the task's data (default: the shipped data set, cached): an ``MnistData`` for mnist, a
            ``tasks.pos.PosData`` for pos, a ``tasks.ud.Treebank`` for parse.
        progress: show a ``tqdm.auto`` progress bar.
        on_eval: optional callback ``on_eval(point: dict, model)`` after every evaluation
            (widgets use it for live plots).
        return_model: also return the trained model under ``"model"`` (not JSON-ready).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    # Denormal floats: Adam's moments of parameters whose gradient is zero for a while (meProp's
    # unselected rows, MNIST's always-black border pixels) decay into the denormal range, where
    # CPU arithmetic is ~15x slower (measured: fused Adam step 0.35 ms -> 5.3 ms on 500x784).
    # Flushing them to zero changes results only below 1.2e-38 and keeps timings honest.
    # (torch cannot report the previous setting; it is restored to PyTorch's default, off.)
    torch.set_flush_denormal(True)
    try:
        torch.manual_seed(config.seed)  # the model's initialisation; each task seeds its own shuffling
        task = TASK_CLASSES[config.task](config, data)
        return _record_non_finite(fit(config, task, progress=progress, on_eval=on_eval, return_model=return_model))
    finally:
        torch.set_num_threads(old_threads)
        torch.set_flush_denormal(False)


def _record_non_finite(result: dict) -> dict:
    """A run whose loss or scores became NaN / inf (a diverged run, e.g. a huge learning rate) is kept and
    says so: ``finite`` is False, the values are null in the result, ``non_finite_values`` says where."""
    result, bad = finite_or_none(result)
    result["finite"] = not bad
    if bad:
        result["non_finite_values"] = bad[:50]
        logging.getLogger(__name__).warning("the run diverged: %d non-finite value(s), first %s", len(bad), bad[0])
    return result

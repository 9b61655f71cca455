"""Training: one config dataclass, one ``train`` call, a JSON-ready result.

``train(TrainConfig(...))`` seeds everything inside the call, sets the thread count,
trains with Adam or AdaGrad, evaluates dev (and test) several times per epoch, keeps the
test accuracy at the best dev point, and times forward / backward / optimizer update
separately. It also measures how many weight rows really change per step: with Adam a row
whose gradient is zero still moves (its moment estimates carry it), so "only k rows are
updated" is true for the gradient, not for the parameters.
"""

from __future__ import annotations

import logging
import math
import shlex
import time
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import AUTHORS, AUTHORS_MESIMP, METHODS, OPTIMIZERS, TrainConfig  # declared there; re-exported
from .meprop import KERNELS, MODES, WEIGHT_GRADS, config_weight_grad, resolve_k
from .meact import STATISTICS, MeAct
from .mesimp import REALISATIONS, RECORDS, RESETS, Simplifier, authors_reset_now, cycle_phase, reset_optimizer_state
from .results import environment, finite_or_none
from .validate import (SEED_MAX, check_bool, check_choice, check_device, check_float, check_int,
                       check_sizes, plain_number, refuse)
from .tasks.mnist import INITS, MLP, accuracy, init_weights, load_mnist

__all__ = ["AUTHORS", "AUTHORS_MESIMP", "METHODS", "OPTIMIZERS", "TrainConfig", "build_model", "make_optimizer", "train"]


def build_model(config: TrainConfig) -> MLP:
    return MLP(
        hidden=config.hidden,
        layers=config.layers,
        k=config.hidden_k,
        mode=config.hidden_mode,
        k_out=config.k_out,
        dropout=config.dropout,
        rescale=config.rescale,
        weight_grad=config.weight_grad,
        kernel=config.kernel,
        device=config.device,
    )


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


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator, device):
    """Index batches over a fresh permutation of ``range(n)`` (one epoch; ``gen`` seeds it)."""
    perm = torch.randperm(n, generator=gen).to(device)
    for i in range(math.ceil(n / batch_size)):
        yield perm[i * batch_size : (i + 1) * batch_size]


def _mean_cols(rows: list[list[float]]) -> list[float]:
    return [round(sum(c) / len(c), 4) for c in zip(*rows)] if rows else []


def fit(config: TrainConfig, model: nn.Module, *, epoch_batches, steps_per_epoch: int, loss_fn, evaluate,
        prune_score, simplifier=None, row_weights, stats_layers, progress: bool = True, on_eval=None,
        return_model: bool = False, desc: str | None = None, before_step=None, on_epoch_start=None,
        rows_note: str = "per hidden layer, share of weight rows") -> dict:
    """The training loop every task shares; returns the JSON-ready result.

    The caller seeds, builds ``model`` and says how to get batches and scores:
      epoch_batches(epoch)  an iterable of ``steps_per_epoch`` batches (called once per epoch,
                            after the optimizer reset of a new meSimp cycle);
      loss_fn(batch)        forward pass and mean loss of one batch;
      evaluate()            {"dev_acc", "test_acc", ...} (extra keys go into the history);
      prune_score()         the dev score right after a meSimp prune;
      simplifier            a meSimp ``Simplifier`` / ``LSTMSimplifier`` or None;
      row_weights()         the weight matrices whose rows are counted (read each time: a
                            physical prune replaces them);
      stats_layers          the meProp layers whose ``stats`` / ``backprop_ratio`` are reported;
      before_step(batch), on_epoch_start(epoch)  optional hooks (meAct uses them).
    Evaluates ``evals_per_epoch`` times per epoch, keeps the test score at the best dev point,
    times forward / backward / optimizer / evaluation, runs the meSimp cycle schedule, and
    measures every ``rows_every`` steps the rows with a gradient, the rows the optimizer really
    changed and the mean absolute update.
    """
    env = environment()  # before training: the commit and machine that produced the numbers
    opt = make_optimizer(config, model.parameters())
    eval_every = max(1, math.ceil(steps_per_epoch / config.evals_per_epoch))
    timer = _Timer(config.device)
    history: list[dict] = []
    rows_changed: list[list[float]] = []
    rows_grad: list[list[float]] = []
    updates: list[dict] = []
    epoch_s: list[float] = []
    best = {"dev_acc": -1.0}
    loss_sum, loss_n, step = 0.0, 0, 0
    bar = None

    def evaluate_point(epoch_float: float) -> None:
        nonlocal loss_sum, loss_n
        timer.start()
        scores = evaluate()
        timer.stop("eval_s")
        point = {"step": step, "epoch": round(epoch_float, 4), "train_loss": round(loss_sum / max(1, loss_n), 6),
                 **scores}
        loss_sum, loss_n = 0.0, 0
        history.append(point)
        if point["dev_acc"] > best["dev_acc"]:
            best.update(point)
        if on_eval is not None:
            on_eval(point, model)
        if bar is not None:
            bar.set_postfix(dev=f"{point['dev_acc']:.4f}", refresh=False)

    simp = simplifier
    resets: list[int] = []  # steps after which reset="authors" zeroed the optimizer's moments
    widths_history: list[dict] = []
    n_params_start = sum(p.numel() for p in model.parameters())
    if simp is not None:
        n_units = len(simp.widths)
        widths_history.append({"step": 0, "epoch": 0.0, "widths": simp.widths, "removed": [0] * n_units,
                               "kept_minimum": [False] * n_units, "dev_acc": None})
        k_prunes = min(config.prunes_per_epoch, steps_per_epoch)
        prune_after = {round((p + 1) * steps_per_epoch / k_prunes) - 1 for p in range(k_prunes)}

    def prune(epoch_float: float, evaluating: bool) -> None:
        event = simp.prune(opt)
        if evaluating:  # an evaluation follows at this very step: its dev score is the same number
            evaluate_point(epoch_float)
            dev = history[-1]["dev_acc"]
        else:
            timer.start()
            dev = prune_score()
            timer.stop("eval_s")
        widths_history.append({"step": step, "epoch": round(epoch_float, 4), "widths": event["widths"],
                               "removed": event["removed"], "kept_minimum": event["kept_minimum"], "dev_acc": dev})

    bar = tqdm(total=steps_per_epoch * config.epochs, desc=desc or config.method, disable=not progress,
               mininterval=1.0)
    t_total = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        t_epoch, eval_before = time.perf_counter(), timer.totals["eval_s"]
        pruning = False
        if simp is not None:
            _, pruning = cycle_phase(epoch, config.cycle_epochs)
            if epoch > 0 and epoch % config.cycle_epochs == 0 and config.reset != "authors":  # a new cycle
                if config.reset == "fresh":
                    opt = make_optimizer(config, model.parameters())
                else:
                    reset_optimizer_state(opt)
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        for i, batch in enumerate(epoch_batches(epoch)):
            if before_step is not None:
                before_step(batch)
            timer.start()
            loss = loss_fn(batch)
            timer.stop("forward_s")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_value_(model.parameters(), config.grad_clip)
            timer.stop("backward_s")
            measure = config.rows_every and step % config.rows_every == 0
            if measure:
                weights = row_weights()
                before = [w.detach().clone() for w in weights]
                before_all = [p.detach().clone() for p in model.parameters()]
                rows_grad.append(_rows_with_grad(weights))
                timer.start()
            opt.step()
            timer.stop("update_s")
            if measure:
                rows_changed.append(_rows_changed(before, row_weights()))
                change = sum(float((p.detach() - q).abs().sum()) for p, q in zip(model.parameters(), before_all))
                updates.append({"step": step, "epoch": round(epoch + i / steps_per_epoch, 4),
                                "mean_abs_update": change / sum(q.numel() for q in before_all)})
            step += 1
            loss_sum += loss.item() / (len(batch) if config.loss_reduction == "sum" else 1)  # reported as a mean
            loss_n += 1
            bar.update(1)
            evaluating = (i + 1) % eval_every == 0 or i + 1 == steps_per_epoch
            if pruning and i in prune_after:
                prune(epoch + (i + 1) / steps_per_epoch, evaluating)
            elif evaluating:
                evaluate_point(epoch + (i + 1) / steps_per_epoch)
            if simp is not None and config.reset == "authors" and i in prune_after and authors_reset_now(
                    epoch, config.cycle_epochs):
                reset_optimizer_state(opt)  # the C#: after each part of the last epoch of a cycle
                resets.append(step)
        epoch_s.append(round(time.perf_counter() - t_epoch - (timer.totals["eval_s"] - eval_before), 3))
    bar.close()
    total_s = time.perf_counter() - t_total

    stats = [layer.stats for layer in stats_layers]
    timing = {k: round(v, 3) for k, v in timer.totals.items()}
    timing.update(total_s=round(total_s, 3), steps=step, epoch_s=epoch_s)
    extra = {}
    if simp is not None:
        simp.detach()
        n_params = sum(p.numel() for p in model.parameters())
        extra = {
            "widths_history": widths_history,
            # units alive (in mask mode the tensors keep their shape; simp.widths counts the live units)
            "final_widths": simp.widths,
            "average_width": round(sum(simp.widths) / len(simp.widths), 2),
            "params": {"start": n_params_start, "final": n_params, "ratio": round(n_params / n_params_start, 4)},
        }
        if config.reset == "authors":
            extra["optimizer_resets"] = resets
    if return_model:
        extra["model"] = model
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
        "backprop_ratio": round(sum(layer.backprop_ratio for layer in stats_layers) / len(stats_layers), 6),
        "widths": model.widths,
        "rows": {
            "note": f"{rows_note}: with a non-zero gradient / really changed by the optimizer step (sampled every "
            f"{config.rows_every} steps)",
            "with_grad": _mean_cols(rows_grad),
            "changed": _mean_cols(rows_changed),
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
        **extra,
    }


def train(config: TrainConfig, data=None, progress: bool = True, on_eval=None, return_model: bool = False) -> dict:
    """Train one model as ``config`` says and return a JSON-ready result dict.

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
    if config.task == "mnist":
        data = data if data is not None else load_mnist()
        run = _train
    elif config.task == "pos":
        from .tasks.pos import train_pos as run
    else:
        from .tasks.parser import train_parse as run
    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    # Denormal floats: Adam's moments of parameters whose gradient is zero for a while (meProp's
    # unselected rows, MNIST's always-black border pixels) decay into the denormal range, where
    # CPU arithmetic is ~15x slower (measured: fused Adam step 0.35 ms -> 5.3 ms on 500x784).
    # Flushing them to zero changes results only below 1.2e-38 and keeps timings honest.
    # (torch cannot report the previous setting; it is restored to PyTorch's default, off.)
    torch.set_flush_denormal(True)
    try:
        return _record_non_finite(run(config, data, progress, on_eval, return_model))
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


def _train(config: TrainConfig, data, progress: bool, on_eval, return_model: bool) -> dict:
    """The MNIST MLP through the shared loop (``fit``)."""
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = build_model(config).to(device)
    train_x, train_y = data.train_x, data.train_y
    if config.train_limit is not None:
        train_x, train_y = train_x[: config.train_limit], train_y[: config.train_limit]
    train_x, train_y = train_x.to(device), train_y.to(device)
    n = len(train_y)
    steps_per_epoch = math.ceil(n / config.batch_size)
    hidden = list(model.hidden)

    init_weights(model, config.init)  # "default" leaves nn.Linear's init

    def loss_fn(idx):
        return F.cross_entropy(model(train_x[idx]), train_y[idx], reduction=config.loss_reduction)

    def evaluate():
        return {"dev_acc": accuracy(model, data.dev_x, data.dev_y), "test_acc": accuracy(model, data.test_x, data.test_y)}

    simp = meact = None
    if config.method == "mesimp":
        simp = Simplifier(model, config.prune_rate, config.realisation, config.record, config.count_zero_hits,
                          config.min_units)
    if config.method == "meact":
        meact = MeAct(model, n, config.meact_threshold, config.meact_statistic)

    def on_epoch_start(epoch):
        if meact is not None and epoch == config.meact_start_epoch:
            meact.start()

    result = fit(
        config, model, epoch_batches=lambda _epoch: shuffled_batches(n, config.batch_size, gen, device),
        steps_per_epoch=steps_per_epoch, loss_fn=loss_fn,
        evaluate=evaluate, prune_score=lambda: accuracy(model, data.dev_x, data.dev_y), simplifier=simp,
        row_weights=lambda: [layer.weight for layer in hidden], stats_layers=hidden, progress=progress,
        on_eval=on_eval, return_model=return_model, on_epoch_start=on_epoch_start,
        before_step=(lambda idx: meact.set_batch(idx)) if meact is not None else None,
    )
    if meact is not None:
        meact.detach()
        result["meact"] = {**meact.stats(), "start_epoch": config.meact_start_epoch,
                           "note": "meAct is a reconstruction from the paper's text (no released code)"}
    return result

"""Training: one config dataclass, one ``train`` call, a JSON-ready result.

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
import shlex
import time
from dataclasses import asdict, dataclass, fields

import torch
from tqdm.auto import tqdm

from .meprop import KERNELS, MODES, WEIGHT_GRADS, config_weight_grad, resolve_k
from .meact import STATISTICS
from .mesimp import REALISATIONS, RECORDS, RESETS, authors_reset_now, cycle_phase, reset_optimizer_state
from .results import environment, finite_or_none
from .validate import (SEED_MAX, check_bool, check_choice, check_device, check_float, check_int,
                       check_sizes, plain_number, refuse)
from .tasks import TASKS as TASK_CLASSES
from .tasks import Task
from .tasks.mnist import INITS, MLP, build_mlp

__all__ = ["AUTHORS", "AUTHORS_MESIMP", "METHODS", "OPTIMIZERS", "TrainConfig", "build_model", "fit", "make_optimizer",
           "train"]

METHODS = ("dense", "meprop", "random", "mesimp", "meact")
OPTIMIZERS = ("adam", "adagrad", "sgd", "lazy_adam", "lazy_sgd")
TASKS = ("mnist", "pos", "parse")
TAGSETS = ("upos", "xpos")
ACTIVATIONS = ("cube", "relu")
NLP_FIELDS = ("tagset", "embed_dim", "min_count", "activation")
MESIMP_FIELDS = ("prune_rate", "cycle_epochs", "prunes_per_epoch", "realisation", "reset", "record",
                 "count_zero_hits", "min_units")
MEACT_FIELDS = ("meact_start_epoch", "meact_threshold", "meact_statistic")
LOSS_REDUCTIONS = ("mean", "sum")
# authors=True: the authors' C# MNIST configuration (METHODS.md 1b and 2, read from lancopku/meProp's C#);
# the dev set is always the first 5,000 training images
AUTHORS = dict(init="csharp", loss_reduction="sum", grad_clip=5.0, optimizer="adam", lr=1e-3, evals_per_epoch=8)
AUTHORS_MESIMP = dict(batch_size=100, k=160, prune_rate=0.1, cycle_epochs=5, prunes_per_epoch=8, reset="authors",
                      count_zero_hits=True)  # and for method="mesimp" (its released default.json)


@dataclass
class TrainConfig:
    """One training run. ``print(config)`` gives the CLI command that reproduces it."""

    task: str = "mnist"  # mnist (MLP) | pos (BiLSTM tagger, UD EWT) | parse (Chen & Manning parser, UD EWT)
    method: str = "meprop"  # dense | meprop (top-k) | random (random-k) | mesimp (top-k + pruning)
    k: int | float | None = 20  # kept gradient entries per example (int) or share of width (0, 1]
    mode: str = "per_example"  # meprop selection: per_example | unified (random uses per-example draws)
    rescale: bool = False  # random-k only: scale kept entries by width/k (not in the paper)
    k_out: int | float | None = None  # meProp on the output layer (None = dense, as the papers)
    hidden: int | list[int] = 500  # hidden width (the papers: 500), or one width per layer
    layers: int = 2  # hidden layers (the papers: 2)
    dropout: float = 0.0  # dropout after every hidden activation
    optimizer: str = "adam"  # adam (lr 1e-3, betas 0.9/0.999, eps 1e-8) | adagrad | sgd | lazy_adam | lazy_sgd
    lr: float | None = None  # None = 1e-3 for (lazy) Adam, 1e-2 for AdaGrad, 0.1 for (lazy) SGD
    epochs: int = 20  # the papers: 20
    batch_size: int = 10  # the ICML C# code: 10; authors' PyTorch: 50; meSimp: 100
    evals_per_epoch: int = 5  # dev (and test) evaluations per epoch
    grad_clip: float | None = None  # element-wise gradient clip (meSimp config: 5)
    init: str = "default"  # default (nn.Linear's) | csharp (authors' C#: W ~ N(0, sqrt(6/(fan_in+fan_out))), b = 0) | pytorch_old (their old PyTorch port: W, b ~ U(+-1/sqrt(fan_out)))
    loss_reduction: str = "mean"  # mean | sum (the gradient summed over the mini-batch, as the C#; the reported loss stays a mean)
    # authors=True: the authors' C# configuration (AUTHORS, and AUTHORS_MESIMP for mesimp) for every field left at
    # its plain default; a field given another value keeps it (so the plain default itself cannot be asked for)
    authors: bool = False
    seed: int = 1  # seeds init, shuffling, dropout and random-k inside the call
    threads: int = 1  # torch threads during the run (1 = reproducible digits)
    train_limit: int | None = None  # use only the first N training images (quick runs)
    weight_grad: str | None = None  # how meProp hands dW to the optimizer: dense (any optimizer) | sparse (SGD, lazy_*); None = sparse with a lazy optimizer, else dense; a stored "buffer" reads as dense
    kernel: str = "auto"  # meProp backward: auto (the compiled kernels where they build and apply, else PyTorch) | torch (the readable reference) | fused (compiled, error if unavailable) | native
    rows_every: int = 50  # measure rows really changed by the optimizer every N steps (0 = never)
    device: str = "cpu"  # "cpu" or "cuda"
    # meSimp (method="mesimp"; METHODS.md section 2)
    prune_rate: float = 0.1  # remove unit j if hits[j] < floor(prune_rate * seen)
    cycle_epochs: int = 5  # epochs per cycle; even cycles prune, odd cycles only train
    prunes_per_epoch: int = 8  # prune steps per epoch in a pruning cycle
    realisation: str = "physical"  # physical (delete rows/columns) | mask (hold at zero)
    reset: str = "fresh"  # optimizer at each cycle start: fresh (new) | moments (zero, keep step) | authors (zero, keep step, after each part of the last epoch of every cycle, as the C#)
    record: str = "per_example"  # meSimp hit counting: per_example | unified
    count_zero_hits: bool = False  # count the zero-gradient fillers the C# top-k heap keeps (rows with < k non-zeros)
    min_units: int = 1  # a prune never leaves a layer smaller than this
    # meAct (method="meact"; a reconstruction, METHODS.md section 3; dense backprop otherwise)
    meact_start_epoch: int = 5  # epochs of normal training before active-path finding starts
    meact_threshold: float = 1.0  # inactive if S[e,j]/sum_i S[e,i] < threshold/width ("share")
    meact_statistic: str = "share"  # share | max_ratio (S[e,j]/max_i S[e,i] < threshold)
    # POS tagging and parsing on UD English EWT (task="pos" | "parse"; METHODS.md section 4)
    tagset: str = "upos"  # pos: upos (17 universal tags) | xpos (Penn Treebank tags, as the paper's PTB)
    embed_dim: int | None = None  # word embedding size (None: pos 100; parse 50, as Chen & Manning)
    min_count: int = 2  # unknown-word policy: training words seen fewer times become <unk>
    activation: str | None = None  # parse: hidden activation cube (Chen & Manning) | relu (None = cube)

    def __post_init__(self) -> None:
        def bad(name, allowed):
            refuse(name, getattr(self, name), allowed)

        check_bool("authors", self.authors)
        if self.authors:
            self._apply_authors()
        self.weight_grad = config_weight_grad(self.weight_grad, self.lazy)  # None: by optimizer; "buffer": dense
        for name, allowed in (("task", TASKS), ("method", METHODS), ("mode", MODES), ("optimizer", OPTIMIZERS),
                              ("weight_grad", WEIGHT_GRADS), ("kernel", KERNELS), ("realisation", REALISATIONS),
                              ("reset", RESETS), ("record", RECORDS), ("meact_statistic", STATISTICS),
                              ("tagset", TAGSETS), ("init", INITS),
                              ("loss_reduction", LOSS_REDUCTIONS)):
            check_choice(name, getattr(self, name), allowed)
        check_choice("activation", self.activation, ACTIVATIONS, optional=True)
        for name in ("rescale", "count_zero_hits"):
            check_bool(name, getattr(self, name))
        if isinstance(self.hidden, (list, tuple)):
            self.hidden = check_sizes("hidden", self.hidden)
            self.layers = len(self.hidden)
        for name in ("layers", "epochs", "batch_size", "evals_per_epoch", "threads", "cycle_epochs",
                     "prunes_per_epoch", "min_units", "meact_start_epoch", "min_count") + (
                         () if isinstance(self.hidden, list) else ("hidden",)):
            setattr(self, name, check_int(name, getattr(self, name), 1))
        self.rows_every = check_int("rows_every", self.rows_every, 0)
        self.seed = check_int("seed", self.seed, 0, SEED_MAX)
        self.train_limit = check_int("train_limit", self.train_limit, 1, optional=True)
        self.embed_dim = check_int("embed_dim", self.embed_dim, 1, optional=True)
        # plain Python numbers (a NumPy scalar would not go into the result JSON)
        self.dropout = check_float("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        self.lr = check_float("lr", self.lr, 0.0, lo_open=True, optional=True)
        self.grad_clip = check_float("grad_clip", self.grad_clip, 0.0, lo_open=True, optional=True)
        self.prune_rate = check_float("prune_rate", self.prune_rate, 0.0, 1.0)
        self.meact_threshold = check_float("meact_threshold", self.meact_threshold, 0.0)
        self.device = str(check_device("device", self.device))  # a torch.device becomes its name
        # k None / 0 / >= width means a dense backward through the meProp path (allowed)
        resolve_k(self.k, max(self.hidden) if isinstance(self.hidden, list) else self.hidden)
        resolve_k(self.k_out, 10, "k_out")
        self.k, self.k_out = plain_number(self.k), plain_number(self.k_out)
        if self.task != "mnist" and (self.init != "default" or self.loss_reduction != "mean"):
            bad("task", "'mnist' with init / loss_reduction other than the defaults (implemented for the MNIST MLP)")
        if self.rescale and self.method != "random":
            bad("rescale", "False unless method='random' (rescaling by width/k makes random-k an unbiased estimate; "
                "top-k is not an estimate)")
        if self.task != "mnist" and self.method not in ("dense", "meprop", "random", "mesimp"):
            bad("method", "dense, meprop, random, mesimp (meAct is implemented for the MNIST MLP only)")
        if self.weight_grad == "sparse" and self.optimizer not in ("sgd", "lazy_adam", "lazy_sgd"):
            bad("optimizer", "sgd, lazy_adam or lazy_sgd with weight_grad='sparse' (Adam and AdaGrad need a dense "
                "gradient: use weight_grad='dense')")
        if self.weight_grad == "sparse" and self.grad_clip is not None:
            bad("grad_clip", "None with weight_grad='sparse' (element-wise clipping needs a dense gradient)")
        if self.task == "pos" and self.kernel not in ("auto", "torch"):
            bad("kernel", "'auto' (the default) or 'torch' for task='pos': the LSTM layers pick their own backward "
                "(the native kernel when it builds, else PyTorch; the result's data.lstm_kernel says which)")
        if self.task != "mnist" and self.lazy and self.grad_clip is not None:
            bad("grad_clip", f"None with a lazy optimizer on task={self.task!r} (its embeddings then have row-sparse "
                "gradients, which element-wise clipping cannot take)")

    def _apply_authors(self) -> None:
        """authors=True: the preset values for every field still at its plain default (see ``AUTHORS``)."""
        if self.task != "mnist":
            raise ValueError(f"authors=True is the authors' MNIST configuration; task={self.task!r} is not allowed "
                             "with it (allowed: 'mnist')")
        plain = {f.name: f.default for f in fields(TrainConfig)}
        preset = {**AUTHORS, **(AUTHORS_MESIMP if self.method == "mesimp" else {})}
        for name, value in preset.items():
            if name == "lr" and self.optimizer != "adam":
                continue  # the authors' lr is Adam's; another optimizer keeps its own default
            if getattr(self, name) == plain[name]:
                setattr(self, name, value)

    @property
    def hidden_k(self):
        """The k the hidden layers get (None for the dense method and meAct)."""
        return None if self.method in ("dense", "meact") else self.k

    @property
    def hidden_mode(self) -> str:
        return "random" if self.method == "random" else self.mode

    @property
    def lazy(self) -> bool:
        """A lazy optimizer (not the paper's): the NLP models then give their embeddings row-sparse gradients,
        so that only the rows looked up in a step are updated."""
        return self.optimizer in ("lazy_adam", "lazy_sgd")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return {"adam": 1e-3, "lazy_adam": 1e-3, "adagrad": 1e-2, "sgd": 0.1, "lazy_sgd": 0.1}[self.optimizer]

    def to_cli(self) -> str:
        """The ``python -m mesimp_lib train`` command for this config."""
        parts = ["python", "-m", "mesimp_lib", "train"]
        default = TrainConfig()
        for f in fields(self):
            v = getattr(self, f.name)
            if v == getattr(default, f.name) and f.name not in ("task", "method", "k", "seed"):
                continue
            if f.name in MESIMP_FIELDS and self.method != "mesimp" or f.name in MEACT_FIELDS and self.method != "meact":
                continue
            if f.name in NLP_FIELDS and self.task == "mnist":
                continue
            if f.name == "k" and self.method in ("dense", "meact") and v == default.k:
                continue  # k is not used by these methods
            flag = "--" + f.name.replace("_", "-")
            if isinstance(v, bool):
                if v:
                    parts.append(flag)
                continue
            if isinstance(v, list):
                v = ",".join(map(str, v))
            parts += [flag, "none" if v is None else str(v)]
        return " ".join(shlex.quote(p) for p in parts)

    def __str__(self) -> str:
        return self.to_cli()


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
            before = [w.detach().clone() for w in weights]
            before_all = [p.detach().clone() for p in model.parameters()]
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
    env = environment()  # before training: the commit and machine that produced the numbers
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

"""The training config: every field of ``TrainConfig`` declared once, with its help, its choices or bounds.

``option(default, help, kind, ...)`` declares a field; ``__post_init__`` checks every field by its declaration
(through ``validate``, the one validation helper), and the ``train`` command line (``cli.py``) generates one
flag per field from the same declarations (``--batch-size`` for ``batch_size``, the help and choices as
declared here). ``print(config)`` (``to_cli``) gives the command that reproduces the config.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields

from .meact import STATISTICS
from .meprop import KERNELS, MODES, WEIGHT_GRADS, config_weight_grad, resolve_k
from .mesimp import REALISATIONS, RECORDS, RESETS
from .tasks import TASKS as TASK_CLASSES
from .tasks.mnist import INITS
from .validate import (MAX_SIZE, SEED_MAX, check_bool, check_choice, check_device, check_float, check_int, check_sizes,
                       plain_number, refuse)

__all__ = ["AUTHORS", "AUTHORS_MESIMP", "KINDS", "METHODS", "OPTIMIZERS", "TrainConfig", "option",
           "stored_config"]

METHODS = ("dense", "meprop", "random", "mesimp", "meact")
OPTIMIZERS = ("adam", "adagrad", "sgd", "lazy_adam", "lazy_sgd")
LAYERS_DEFAULT = 2  # hidden layers, as the papers
TASKS = tuple(TASK_CLASSES)  # the registered tasks (tasks.TASKS): mnist, pos, parse
TAGSETS = ("upos", "xpos")
ACTIVATIONS = ("cube", "relu")
LOSS_REDUCTIONS = ("mean", "sum")
NLP_FIELDS = ("tagset", "embed_dim", "min_count", "activation")
MESIMP_FIELDS = ("prune_rate", "cycle_epochs", "prunes_per_epoch", "realisation", "reset", "record",
                 "count_zero_hits", "min_units")
MEACT_FIELDS = ("meact_start_epoch", "meact_threshold", "meact_statistic")
# authors=True: the authors' C# MNIST configuration (METHODS.md 1b and 2, read from lancopku/meProp's C#);
# the dev set is always the first 5,000 training images
AUTHORS = dict(init="csharp", loss_reduction="sum", grad_clip=5.0, optimizer="adam", lr=1e-3, evals_per_epoch=8)
AUTHORS_MESIMP = dict(batch_size=100, k=160, prune_rate=0.1, cycle_epochs=5, prunes_per_epoch=8, reset="authors",
                      count_zero_hits=True)  # and for method="mesimp" (its released default.json)

# fields added after results were stored, with the value every run stored without them had (kernel: the
# PyTorch backward, the only one before the field existed); the other added fields' defaults are those values
STORED_BEFORE = {"kernel": "torch"}

# how a field of each kind is checked: (name, value, the field's declaration) -> the value in its plain type;
# "k" (k, k_out: a count or a share of a width) is checked after the loop, once the widths are known
KINDS = {
    "choice": lambda name, v, s: check_choice(name, v, s["choices"], optional=s["optional"]),
    "bool": lambda name, v, s: check_bool(name, v),
    "int": lambda name, v, s: check_int(name, v, s["lo"], s["hi"], optional=s["optional"]),
    "float": lambda name, v, s: check_float(name, v, s["lo"], s["hi"], lo_open=s["lo_open"], hi_open=s["hi_open"],
                                            optional=s["optional"]),
    "sizes": lambda name, v, s: check_sizes(name, v) if isinstance(v, (list, tuple)) else check_int(name, v, 1),
    "device": lambda name, v, s: str(check_device(name, v)),  # a torch.device becomes its name
    "k": lambda name, v, s: v,
}


def option(default, help: str, kind: str, *, choices=None, lo=None, hi=None, lo_open: bool = False,
           hi_open: bool = False, optional: bool = False):
    """A config field declared once: its default, its help (the CLI's too), its kind (``KINDS``) and its
    choices or bounds; ``optional``: None is allowed too."""
    if kind not in KINDS:
        refuse("kind", kind, ", ".join(KINDS))
    if kind == "int" and hi is None:
        hi = MAX_SIZE  # widths and counts: the kernels index with 32-bit ints
    return field(default=default, metadata=dict(help=help, kind=kind, choices=choices, lo=lo, hi=hi,
                                                lo_open=lo_open, hi_open=hi_open, optional=optional))


@dataclass
class TrainConfig:
    """One training run. ``print(config)`` gives the CLI command that reproduces it."""

    task: str = option("mnist", "data set and model: " + ", ".join(f"{name} ({task.about})" for name, task in
                                                                  TASK_CLASSES.items()), "choice", choices=TASKS)
    method: str = option("meprop", "dense, meprop (top-k backprop), random (random-k backprop), mesimp (top-k + "
                         "pruning) or meact (active paths, MNIST only)", "choice", choices=METHODS)
    k: int | float | None = option(20, "gradient entries kept per example: an int, a share of the width in (0, 1], "
                                   "or none (dense)", "k")
    mode: str = option("per_example", "meprop top-k selection: per_example (the paper) or unified (one set per "
                       "batch); random is what --method random uses", "choice", choices=MODES)
    rescale: bool = option(False, "random-k only: multiply kept entries by width/k (not in the paper)", "bool")
    k_out: int | float | None = option(None, "meProp on the output layer too: none = dense, as the papers",
                                       "k")
    hidden: int | list[int] = option(500, "hidden width (the papers: 500), or one width per layer, e.g. 150,140",
                                     "sizes")
    layers: int = option(LAYERS_DEFAULT, "number of hidden layers (the papers: 2)", "int", lo=1)
    dropout: float = option(0.0, "dropout rate after every hidden activation", "float", lo=0.0, hi=1.0,
                            hi_open=True)
    optimizer: str = option("adam", "adam (lr 1e-3, betas 0.9/0.999, eps 1e-8) or adagrad (unmodified, as the "
                            "paper), sgd, or lazy_adam / lazy_sgd (update only rows with a gradient: NOT the paper's "
                            "optimizer; on pos / parse the embeddings then get row-sparse gradients, so only the rows "
                            "looked up move)", "choice", choices=OPTIMIZERS)
    lr: float | None = option(None, "learning rate (none = 1e-3 for adam and lazy_adam, 1e-2 for adagrad, 0.1 for "
                              "sgd and lazy_sgd)", "float", lo=0.0, lo_open=True, optional=True)
    epochs: int = option(20, "training epochs (the papers: 20)", "int", lo=1)
    batch_size: int = option(10, "mini-batch size (the ICML C# code: 10; authors' PyTorch: 50; meSimp: 100)", "int",
                             lo=1)
    evals_per_epoch: int = option(5, "dev (and test) evaluations per epoch", "int", lo=1)
    grad_clip: float | None = option(None, "element-wise gradient clip value (none = off; meSimp config: 5)", "float",
                                     lo=0.0, lo_open=True, optional=True)
    init: str = option("default", "weights: default (nn.Linear's), csharp (authors' C#: W ~ N(0, sqrt(6/(fan_in+"
                       "fan_out))), bias 0) or pytorch_old (authors' old PyTorch: W, b ~ U(+-1/sqrt(fan_out)))",
                       "choice", choices=INITS)
    loss_reduction: str = option("mean", "mean, or sum (the gradient summed over the mini-batch as the authors' C#; "
                                 "so --grad-clip acts on the summed gradient; the reported loss stays a mean)",
                                 "choice", choices=LOSS_REDUCTIONS)
    authors: bool = option(False, "the authors' C# configuration: --init csharp --loss-reduction sum --grad-clip 5 "
                           "--optimizer adam --lr 0.001 --evals-per-epoch 8, and for mesimp --batch-size 100 --k 160 "
                           "--prune-rate 0.1 --cycle-epochs 5 --prunes-per-epoch 8 --reset authors --count-zero-hits, "
                           "for every field left at its plain default; a flag given with another value wins (so the "
                           "plain default itself cannot be asked for)", "bool")
    seed: int = option(1, "random seed (init, shuffling, dropout, random-k), inside the call", "int", lo=0,
                       hi=SEED_MAX)
    threads: int = option(1, "torch threads during the run (1 = reproducible digits)", "int", lo=1)
    train_limit: int | None = option(None, "use only the first N training images (quick runs)", "int", lo=1,
                                     optional=True)
    weight_grad: str | None = option(None, "how meProp hands dW to the optimizer, always through autograd: dense (any "
                                     "optimizer) or sparse (row-sparse; sgd / lazy_adam / lazy_sgd only; fastest with "
                                     "lazy_adam; not under DDP); default: sparse with a lazy optimizer, else dense; a "
                                     "stored \"buffer\" reads as dense", "choice", choices=WEIGHT_GRADS)
    kernel: str = option("auto", "meProp backward: auto (the compiled kernels where they build and apply, else "
                         "PyTorch; logged), torch (the readable pure-PyTorch reference), fused (native C++ kernels, "
                         "built on first use; error if they cannot be built) or native (the whole layer as a C++ "
                         "autograd function; train then builds the NativeMLP, the whole MLP as one C++ node)",
                         "choice", choices=KERNELS)
    rows_every: int = option(50, "measure weight rows really changed by the optimizer every N steps (0 = never)",
                             "int", lo=0)
    device: str = option("cpu", "cpu or cuda (or cuda:N)", "device")
    # meSimp (method="mesimp"; METHODS.md section 2)
    prune_rate: float = option(0.1, "meSimp: remove unit j if hits[j] < floor(prune_rate * seen)", "float", lo=0.0,
                               hi=1.0)
    cycle_epochs: int = option(5, "meSimp: epochs per cycle (even cycles prune, odd cycles only train)", "int", lo=1)
    prunes_per_epoch: int = option(8, "meSimp: prune steps per epoch in a pruning cycle", "int", lo=1)
    realisation: str = option("physical", "meSimp: physical (delete rows/columns) or mask (hold removed units at "
                              "zero)", "choice", choices=REALISATIONS)
    reset: str = option("fresh", "meSimp: optimizer at each cycle start: fresh (new) or moments (zero moments, keep "
                        "step); or authors (zero moments, keep step, after each of the prunes-per-epoch parts of the "
                        "last epoch of every cycle, as the C#)", "choice", choices=RESETS)
    record: str = option("per_example", "meSimp: count hits per_example or unified", "choice", choices=RECORDS)
    count_zero_hits: bool = option(False, "meSimp: also count the zero-gradient fillers the authors' C# top-k heap "
                                   "keeps in rows with fewer than k non-zeros (their record did)", "bool")
    min_units: int = option(1, "meSimp: never prune a layer below this many units", "int", lo=1)
    # meAct (method="meact"; a reconstruction, METHODS.md section 3; dense backprop otherwise)
    meact_start_epoch: int = option(5, "meAct (reconstruction): epochs of normal training before active paths are "
                                    "used", "int", lo=1)
    meact_threshold: float = option(1.0, "meAct: inactive if S[e,j]/sum S[e,:] < threshold/width (statistic share)",
                                    "float", lo=0.0)
    meact_statistic: str = option("share", "meAct: share or max_ratio (S[e,j]/max S[e,:] < threshold)", "choice",
                                  choices=STATISTICS)
    # POS tagging and parsing on UD English EWT (task="pos" | "parse"; METHODS.md section 4)
    tagset: str = option("upos", "pos: upos (17 universal tags) or xpos (Penn Treebank tags, as the paper's PTB)",
                         "choice", choices=TAGSETS)
    embed_dim: int | None = option(None, "pos/parse: word embedding size (none = pos 100, parse 50 as Chen & "
                                   "Manning)", "int", lo=1, optional=True)
    min_count: int = option(2, "pos/parse: training words seen fewer times become <unk>", "int", lo=1)
    activation: str | None = option(None, "parse: hidden activation cube (Chen & Manning) or relu (none = cube)",
                                    "choice", choices=ACTIVATIONS, optional=True)

    def __post_init__(self) -> None:
        check_bool("authors", self.authors)
        if self.authors:
            self._apply_authors()
        self.weight_grad = config_weight_grad(self.weight_grad, self.lazy)  # None: by optimizer; "buffer": dense
        if isinstance(self.hidden, (list, tuple)):
            widths = check_sizes("hidden", self.hidden)
            if self.layers not in (LAYERS_DEFAULT, len(widths)):
                refuse("layers", self.layers, f"{len(widths)} (the number of widths in hidden={widths}) or leave it out")
            # one width per layer; a single width is the plain int (so the printed command reads back equal)
            self.hidden, self.layers = (widths if len(widths) > 1 else widths[0]), len(widths)
        # every field by its declaration, returned in its plain Python type (a NumPy scalar would not go into
        # the result JSON)
        for f in fields(self):
            setattr(self, f.name, KINDS[f.metadata["kind"]](f.name, getattr(self, f.name), f.metadata))
        # k None / 0 / >= width means a dense backward through the meProp path (allowed)
        resolve_k(self.k, max(self.hidden) if isinstance(self.hidden, list) else self.hidden)
        resolve_k(self.k_out, 10, "k_out")
        self.k, self.k_out = plain_number(self.k), plain_number(self.k_out)
        self._check_combinations()

    def _check_combinations(self) -> None:
        """The rules between fields (each field alone is checked by its declaration)."""
        def bad(name, allowed):
            refuse(name, getattr(self, name), allowed)

        if self.task != "mnist" and (self.init != "default" or self.loss_reduction != "mean"):
            bad("task", "'mnist' with init / loss_reduction other than the defaults (implemented for the MNIST MLP)")
        if self.mode == "random" and self.method != "random":
            bad("mode", f"per_example or unified with method={self.method!r} (random-k is method='random')")
        if self.method == "random" and self.mode != "per_example":
            bad("mode", "per_example (the default) with method='random': random-k draws k entries per example")
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
        """The ``python -m mesimp_lib train`` command for this config (fields the method or task does not use
        are left out)."""
        parts = ["python", "-m", "mesimp_lib", "train"]
        default = TrainConfig()
        for f in fields(self):
            v = getattr(self, f.name)
            if v == getattr(default, f.name) and f.name not in ("task", "method", "k", "seed") and not (
                    f.name == "weight_grad" and self.lazy):  # a lazy optimizer's default is "sparse", not "dense"
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


def stored_config(stored: dict, **override) -> TrainConfig:
    """The config of a stored result's ``config`` dict: keys that are no longer fields are dropped, and fields
    added since it was written take the value the run had (``STORED_BEFORE``) or their default."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{**STORED_BEFORE, **{k: v for k, v in stored.items() if k in names}, **override})

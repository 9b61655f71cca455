"""Why per-example top-k stumbles with Adam: the measurements behind notebook 10.

METHODS.md section 1b records the mechanism; this module measures it on a live run, in
plain torch (no plots):

* :func:`hidden_output_grads` and :func:`topk_mass_share`: how much of a real gradient's
  squared L2 norm the k largest entries carry, against k (and :func:`random_mass_share`
  for k random entries);
* :func:`adam_first_step`: one Adam step from a fresh state moves every coordinate with a
  gradient by about ``lr``, whatever the gradient's size;
* :func:`probe_run`: a short MNIST run with a k per hidden layer and any of the library's
  optimizers, recording every step what the watched layer's selected rows receive (how
  many examples feed a row, the sign coherence of its gradient against the full
  mini-batch gradient of the same rows, how far the step moves the pre-activations) and,
  every few steps, activation size and dead units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .meprop import MODES
from .tasks.mnist import MLP, MnistTask, load_mnist
from .training import OPTIMIZERS, TrainConfig, fit
from .validate import check_choice, check_int

__all__ = ["ProbeConfig", "RowProbe", "adam_first_step", "hidden_output_grads", "probe_run",
           "random_mass_share", "sign_coherence", "topk_mass_share"]


# --------------------------------------------------------------------------- gradients and their mass


def hidden_output_grads(model: MLP, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The exact (dense) ``g = dL/dy`` of every hidden layer for the batch ``(x, y)``, mean loss.

    Computed with plain autograd on the model's weights, so meProp settings of the model do
    not change it. Returns one ``(N, width)`` tensor per hidden layer."""
    pre, h = [], x
    for layer in model.hidden:
        z = F.linear(h, layer.weight, layer.bias)  # (N, width) pre-activation
        pre.append(z)
        h = torch.relu(z)
    loss = F.cross_entropy(F.linear(h, model.output.weight, model.output.bias), y)
    return [g.detach() for g in torch.autograd.grad(loss, pre)]


def _nonzero_rows(g: torch.Tensor) -> torch.Tensor:
    sq = g.double() ** 2
    return sq[sq.sum(1) > 0]  # (R, width) squared entries of the rows with a gradient


def topk_mass_share(g: torch.Tensor, ks) -> torch.Tensor:
    """For each row b of ``g`` with a non-zero gradient and each k in ``ks``: the share of
    ``sum_j g[b, j]**2`` that the k largest ``|g[b, j]|`` carry. -> (R, len(ks)) float64"""
    sq = _nonzero_rows(g)
    if len(sq) == 0:
        raise ValueError("g has no row with a non-zero entry: no gradient mass to share")
    width = g.shape[1]
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= width:
            raise ValueError(f"k={k!r} must be an int in [1, {width}] (the width of g)")
    cum = sq.sort(1, descending=True).values.cumsum(1)  # (R, width)
    return cum[:, [k - 1 for k in ks]] / cum[:, -1:]


def random_mass_share(g: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per row with a non-zero gradient: the share of its squared mass carried by k uniformly
    random entries (one draw per row). -> (R,); its expectation is k / width."""
    sq = _nonzero_rows(g)
    idx = torch.rand(sq.shape, generator=generator).topk(k, dim=1).indices  # (R, k) random entries
    return sq.gather(1, idx).sum(1) / sq.sum(1)


def adam_first_step(grad: torch.Tensor, lr: float = 1e-3) -> torch.Tensor:
    """The update ``w_1 - w_0`` of ``torch.optim.Adam(lr)`` (default betas and eps) after one step
    from a fresh state on a parameter whose gradient is ``grad``."""
    w = torch.zeros_like(grad, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    w.grad = grad.clone()
    opt.step()
    return w.detach().clone()


def sign_coherence(rows: torch.Tensor) -> torch.Tensor:
    """Per row: the share of its non-zero elements that have the row's majority sign (1 = all
    one sign, about 0.5 = mixed). Rows without a non-zero element give NaN. -> (R,)"""
    pos = (rows > 0).sum(1).double()
    neg = (rows < 0).sum(1).double()
    return torch.maximum(pos, neg) / (pos + neg)


# --------------------------------------------------------------------------- per-step probe of one layer


def _kept(g: torch.Tensor, selection) -> torch.Tensor:
    """The gradient meProp back-propagated: ``g`` with the unselected entries zeroed. (N, out)"""
    if selection is None:  # dense backward
        return g
    if isinstance(selection, tuple):  # per example / random: (indices (N, k), kept values (N, k))
        idx, kept = selection
        return g.new_zeros(g.shape).scatter_(1, idx, kept)
    mask = g.new_zeros(g.shape[1])
    mask[selection] = 1.0  # unified: the batch's k columns
    return g * mask


class RowProbe:
    """Watches one ``MePropLinear`` during training (an observer of its backward, see
    ``LayerHooks``): every step, for the rows of W whose weight gradient is non-zero, records

    feeders           mean number of examples whose kept gradient entry feeds the row
    one_feeder        share of the rows fed by a single example
    coherence         mean sign coherence of the rows' weight gradient (``sign_coherence``)
    coherence_full    the same for the full mini-batch gradient of the same rows
    agreement         share of the rows' non-zero gradient elements whose sign agrees with
                      the full mini-batch gradient
    rows              how many rows got a gradient
    preact_move       after the optimizer step: mean |change| of those units' pre-activations
                      on the same batch
    weight_step       mean |change| of the weights that had a non-zero gradient
    """

    KEYS = ("feeders", "one_feeder", "coherence", "coherence_full", "agreement", "rows", "preact_move", "weight_step")

    def __init__(self, layer):
        self.layer = layer
        self.history = {key: [] for key in self.KEYS}
        self._x = self._rows = self._w = self._b = self._mask = None
        self._pre_hook = layer.register_forward_pre_hook(self._remember_input)
        layer.hooks.observers.append(self)

    def _remember_input(self, _module, args) -> None:
        if torch.is_grad_enabled():
            self._x = args[0].detach()

    def observe(self, g: torch.Tensor, selection, plan) -> None:
        x = self._x  # (N, in) the layer's input of this step
        gk = _kept(g, selection)  # (N, out)
        rows = (gk != 0).any(0).nonzero().flatten()  # rows of W with a gradient
        sparse = gk[:, rows].t() @ x  # (R, in) the rows' meProp weight gradient
        full = g[:, rows].t() @ x  # (R, in) the same rows' full mini-batch gradient
        both = (sparse != 0) & (full != 0)
        h = self.history
        feeders = (gk[:, rows] != 0).sum(0)  # (R,) examples whose kept entry feeds each row
        h["feeders"].append(float(feeders.double().mean()))
        h["one_feeder"].append(float((feeders == 1).double().mean()))
        h["coherence"].append(float(sign_coherence(sparse).nanmean()))
        h["coherence_full"].append(float(sign_coherence(full).nanmean()))
        h["agreement"].append(float((sparse.sign() == full.sign())[both].double().mean()))
        h["rows"].append(int(rows.numel()))
        self._rows, self._mask = rows, sparse != 0

    def before_step(self) -> None:
        """Snapshot the watched rows before the optimizer step (call after backward)."""
        self._w = self.layer.weight.detach()[self._rows].clone()
        self._b = self.layer.bias.detach()[self._rows].clone()

    def after_step(self) -> None:
        """Measure how far the step moved the watched rows and their pre-activations."""
        w = self.layer.weight.detach()[self._rows]
        b = self.layer.bias.detach()[self._rows]
        move = self._x @ (w - self._w).t() + (b - self._b)  # (N, R) change of the pre-activations
        self.history["preact_move"].append(float(move.abs().mean()))
        self.history["weight_step"].append(float((w - self._w).abs()[self._mask].mean()))

    def detach(self) -> None:
        self._pre_hook.remove()
        self.layer.hooks.observers.remove(self)


# --------------------------------------------------------------------------- a short run


@dataclass
class ProbeConfig:
    """A short MNIST run for the diagnosis; ``print`` shows the settings."""

    k: tuple = (20, 20)  # k per hidden layer (None = dense backward on that layer); the output layer is dense
    mode: str = "per_example"  # per_example (top-k, the paper) | unified | random (random-k)
    optimizer: str = "adam"  # any of training.OPTIMIZERS, with their default learning rates
    lr: float | None = None  # None = the optimizer's default (Adam 1e-3, SGD 0.1)
    hidden: int = 500  # width of each hidden layer
    epochs: int = 2  # passes over the training images
    batch_size: int = 50  # mini-batch size
    train_limit: int = 10_000  # first N training images
    evals_per_epoch: int = 4  # dev evaluations per epoch; test accuracy is taken at the best one (as ``train``)
    watch: int = -1  # the hidden layer the per-step probe watches (-1: the last, under the output layer)
    probe_every: int = 25  # steps between activation / dead-unit measurements
    probe_images: int = 1000  # dev images for those measurements
    seed: int = 1  # seeds the initialisation, the shuffling and random-k

    def __post_init__(self) -> None:
        self.k = tuple(self.k)
        if not self.k:
            raise ValueError("k=() must give one k per hidden layer, e.g. (20, 20) or (None, 20)")
        check_choice("mode", self.mode, MODES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not -len(self.k) <= self.watch < len(self.k):
            raise ValueError(f"watch={self.watch} is not a hidden layer index for {len(self.k)} layers")
        for name in ("epochs", "batch_size", "train_limit", "evals_per_epoch", "probe_every", "probe_images"):
            check_int(name, getattr(self, name), 1)


def _activity(model: MLP, x: torch.Tensor) -> dict:
    """Dead units (zero on every image of ``x``) per hidden layer, mean activation of the last
    hidden layer, largest |logit|."""
    dead, h = [], x
    with torch.no_grad():
        for layer in model.hidden:
            h = torch.relu(layer(h))
            dead.append(float((h.amax(0) == 0).double().mean()))
        logits = model.output(h)
    return {"dead": dead, "mean_act": float(h.mean()), "max_logit": float(logits.abs().max())}


class _SteppedProbe(RowProbe):
    """A ``RowProbe`` that snapshots the watched rows itself as soon as their gradient is known (in backward,
    when the weights are still those before the optimizer step), so the loop needs no call of its own."""

    def observe(self, g: torch.Tensor, selection, plan) -> None:
        super().observe(g, selection, plan)
        self.before_step()


class _ProbeTask(MnistTask):
    """The MNIST task with the diagnosis's instruments: the per-step loss, the watched layer's ``RowProbe``
    and the activity every ``probe_every`` steps. ``training.fit`` runs it like any task."""

    def __init__(self, config: ProbeConfig, data):
        random = config.mode == "random"  # random-k is method="random" (its layers then draw per example)
        train_config = TrainConfig(method="random" if random else "meprop", k=None,
                                   hidden=[config.hidden] * len(config.k), mode="per_example" if random else config.mode,
                                   optimizer=config.optimizer, lr=config.lr, weight_grad="dense", epochs=config.epochs,
                                   batch_size=config.batch_size, train_limit=config.train_limit,
                                   evals_per_epoch=config.evals_per_epoch, seed=config.seed, rows_every=0)
        super().__init__(train_config, data)
        for layer, k in zip(self.model.hidden, config.k):
            layer.k = k
        self.probe = _SteppedProbe(self.model.hidden[config.watch])
        self.probe_every, self.look = config.probe_every, self.data.dev_x[: config.probe_images]
        self.losses: list[float] = []
        self.activity = {"step": [], "dead": [], "mean_act": [], "max_logit": []}
        self._record(0)

    def _record(self, step: int) -> None:
        self.activity["step"].append(step)
        for key, value in _activity(self.model, self.look).items():
            self.activity[key].append(value)

    def _after_update(self) -> None:
        """The previous step's measurements after its optimizer update (taken before the next forward pass:
        the weights are still the updated ones; an evaluation does not change them)."""
        self.probe.after_step()
        if len(self.losses) % self.probe_every == 0:
            self._record(len(self.losses))

    def before_step(self, idx: torch.Tensor) -> None:
        if self.losses:
            self._after_update()

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        loss = super().loss(idx)
        self.losses.append(loss.item())
        return loss

    def finish(self, result: dict) -> dict:
        self._after_update()
        self.probe.detach()
        return result


def probe_run(config: ProbeConfig, data=None) -> dict:
    """Train ``config``'s MLP and return its per-step loss, the watched layer's ``RowProbe``
    history, the activity measured every ``probe_every`` steps, the dev accuracy at each
    evaluation, the test accuracy at the best dev point and the model. The run is
    ``training.fit`` on the MNIST task (the same schedule and seeding as ``training.train``, so
    equal settings give equal numbers). Seeded and single-threaded inside the call."""
    data = load_mnist() if data is None else data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(config.seed)
        task = _ProbeTask(config, data)
        result = fit(task.config, task, progress=False)
    finally:
        torch.set_num_threads(threads)
    evals = [{"epoch": p["epoch"], "dev_acc": p["dev_acc"]} for p in result["history"]]
    best = {"epoch": result["best_epoch"], "dev_acc": result["best_dev_acc"], "test_acc": result["test_acc"]}
    return {"config": asdict(config), "loss": task.losses, "probe": task.probe.history, "activity": task.activity,
            "history": evals, "best": best, "test_acc": best["test_acc"], "model": task.model}

"""Interactive apps (ipywidgets + plain plotly figures in ``panes.FigurePane``; no FigureWidget,
see panes.py for why). Each factory returns an object with ``controls`` (name -> widget),
``figures`` (name -> the ``go.Figure`` shown now), ``panes`` (name -> FigurePane) and
``widget`` (the box to display); displaying the object shows the box. Tests drive them by
setting ``app.controls["k"].value`` (observers fire at once) and reading ``app.figures[...]``.

    active_paths()     the layered network: units coloured by how often meProp selected
                       them; one example's top-k path drawn (sliders: dropout, k, example, step)
    layer_shrinkage()  meSimp widths over training, prune events, dev accuracy (sliders:
                       prune rate, k; play through the prunes; "run live")
    k_explorer()       accuracy against k (top-k, random, dense h = k) and one example's
                       gradient at that k
"""

from __future__ import annotations

from functools import lru_cache

import ipywidgets as W
import torch
import torch.nn.functional as F
from torch import nn

from .. import experiments
from ..grid import KS
from ..recordings import PathObserver, load_active_paths
from ..results import read_json
from ..tasks.mnist import MLP, load_mnist
from ..training import TrainConfig, train
from . import app_figures as figs
from .panes import FigurePane, figure_bundle, row
from .static import stepped_figure

__all__ = ["ActivePathsApp", "KExplorerApp", "LayerShrinkageApp", "active_paths", "k_explorer", "layer_shrinkage"]


class _App:
    """Displaying an app shows the live widget, then (``static=True``, the default) its
    ``static_figure()``: the same view stepped by a plotly slider, stored in the notebook, so
    the course reads without a kernel (any viewer, ``make site``). The Voila app, always live,
    passes ``static=False``."""

    controls: dict
    panes: dict
    widget: W.Widget
    static: bool = True
    WITHOUT_KERNEL = ("[live widget: run the cell in Jupyter to use it; the figure below is the same view over "
                      "the stored runs, with a slider that works without Python]")

    @property
    def figures(self) -> dict:
        """name -> the plotly figure each pane shows now."""
        return {name: pane.figure for name, pane in self.panes.items()}

    def static_figure(self):
        raise NotImplementedError

    def _ipython_display_(self):
        from IPython.display import display

        bundle = self.widget._repr_mimebundle_()
        bundle["text/plain"] = self.WITHOUT_KERNEL if self.static else repr(self.widget)
        display(bundle, raw=True)
        if self.static:
            display(figure_bundle(self.static_figure()), raw=True)


# ----------------------------------------------------------------------------- active paths


def compute_path(model: MLP, x: torch.Tensor, y: torch.Tensor) -> dict:
    """One example through ``model``: per hidden layer the gradient and the selected units."""
    observers = [PathObserver() for _ in model.hidden]
    for layer, obs in zip(model.hidden, observers):
        layer.hooks.observers.append(obs)
    try:
        model.zero_grad(set_to_none=True)
        out = model(x)
        F.cross_entropy(out, y).backward()
    finally:
        for layer, obs in zip(model.hidden, observers):
            layer.hooks.observers.remove(obs)
    layers = []
    for obs in observers:
        sel = obs.selection
        idx = sel[0][0] if isinstance(sel, tuple) else (sel if sel is not None else torch.arange(obs.g.shape[1]))
        layers.append({"g": obs.g[0].tolist(), "selected": sorted(int(i) for i in idx if obs.g[0, int(i)] != 0)})
    return {"layers": layers, "pred": int(out.argmax(1)), "label": int(y)}


class _FixedDropout(nn.Module):
    """Dropout with given masks (one per hidden layer, in order): the widget draws the units
    dropout removed for an example, the same ones every time it is redrawn."""

    def __init__(self, masks: list[torch.Tensor], p: float):
        super().__init__()
        self.masks, self.p, self.calls = masks, p, 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mask = self.masks[self.calls % len(self.masks)]
        self.calls += 1
        return h * mask / (1 - self.p)


class ActivePathsApp(_App):
    """The active-paths view over a recorded run (``recordings.record_active_paths``), for each
    recorded dropout rate (``dropout``: the one shown first, default no dropout)."""

    def __init__(self, recording: dict | None = None, n_examples: int = 20, static: bool = True,
                 dropout: float = 0.0):
        self.static = static
        self.rec = recording or load_active_paths()
        if dropout not in self.rec["dropouts"]:
            raise ValueError(f"dropout={dropout!r} was not recorded; the recording has dropout in "
                             f"{self.rec['dropouts']} (re-make it with `python -m mesimp_lib experiment widgets`)")
        data = load_mnist()
        self.x, self.y = data.dev_x[:n_examples], data.dev_y[:n_examples]
        self.model = MLP(hidden=self.rec["width"], layers=2, k=self.rec["ks"][0], mode="per_example",
                         kernel="torch")  # the recording's kernel
        ks, steps = self.rec["ks"], self.rec["steps"]
        # one colour scale for every dropout, k and step: the largest selection share in the recording
        self.cmax = max(round(100 * float(c.max()) / max(1, int(snap["examples"])), 2)
                        for by_k in self.rec["runs"].values() for runs in by_k.values() for snap in runs
                        for c in snap["counts"])
        first_ok = next((e for e in range(n_examples)
                         if (p := self.state(ks[1], e, steps[-1], dropout))["pred"] == p["label"]), 0)
        self.controls = {
            "dropout": W.SelectionSlider(options=self.rec["dropouts"], value=dropout, description="dropout"),
            "k": W.SelectionSlider(options=ks, value=ks[1], description="k"),
            "example": W.IntSlider(min=0, max=n_examples - 1, value=first_ok, description="example"),
            "step": W.SelectionSlider(options=steps, value=steps[-1], description="step"),
        }
        if len(self.rec["dropouts"]) == 1:  # an old recording: a slider with one value moves nothing
            self.controls["dropout"].layout.display = "none"
        first = self.state()
        self.panes = {
            "digit": FigurePane(figs.digit_figure(self.x[first_ok], first), min_width="220px", max_width="280px",
                                flex="0 1 260px"),
            "network": FigurePane(figs.network_figure(first), min_width="420px", flex="1 1 560px"),
        }
        for c in self.controls.values():
            c.observe(lambda _change: self.update(), names="value")
        self.widget = W.VBox([
            row(list(self.controls.values())),
            row([self.panes["digit"].widget, self.panes["network"].widget]),
            W.HTML(figs.NETWORK_CAPTION + figs.DROPOUT_CAPTION),
        ])

    def state(self, k: int | None = None, example: int | None = None, step: int | None = None,
              dropout: float | None = None) -> dict:
        """The path of one example (default: the controls' k, example, step and dropout). With
        dropout, the example's step drops units with a mask seeded by the example (``dropped``)."""
        k = k if k is not None else self.controls["k"].value
        e = example if example is not None else self.controls["example"].value
        step = step if step is not None else self.controls["step"].value
        p = dropout if dropout is not None else self.controls["dropout"].value
        snap = self.rec["runs"][p][k][self.rec["steps"].index(step)]
        self.model.load_state_dict(snap["state_dict"])
        for layer in self.model.hidden:
            layer.k = k
        width = self.rec["width"]
        gen = torch.Generator().manual_seed(1000 + e)
        masks = [(torch.rand(width, generator=gen) >= p).float() for _ in self.model.hidden]
        self.model.dropout = _FixedDropout(masks, p) if p > 0 else nn.Identity()
        path = compute_path(self.model, self.x[e : e + 1], self.y[e : e + 1])
        seen = max(1, int(snap["examples"]))
        path.update(k=k, step=step, example=e, width=width, cmax=getattr(self, "cmax", None), dropout=p,
                    dropped=[[j for j in range(width) if m[j] == 0] for m in masks],
                    shares=[(c.double() / seen).tolist() for c in snap["counts"]], examples_seen=int(snap["examples"]),
                    edges=self._strongest_edges(path, k))
        return path

    def _strongest_edges(self, path: dict, k: int) -> list[tuple[int, int, float]]:
        """The k strongest weights |W2[b, a]| between the path's units of hidden 1 (a) and hidden 2
        (b), scaled to the strongest: drawing every pair (k^2 lines) hides the path at k = 16."""
        sel1, sel2 = path["layers"][0]["selected"], path["layers"][1]["selected"]
        w = self.model.hidden[1].weight.detach().abs()  # (out = hidden 2, in = hidden 1)
        pairs = sorted(((a, b, float(w[b, a])) for a in sel1 for b in sel2), key=lambda t: -t[2])[:k]
        top = pairs[0][2] if pairs else 1.0
        return [(a, b, round(v / top, 3)) for a, b, v in pairs]

    def static_figure(self):
        """The network at every recorded dropout and k (final step, the opening example), with a slider."""
        e, step = self.controls["example"].value, self.rec["steps"][-1]
        steps = {f"dropout {p}, k {k}": figs.network_figure(self.state(k, e, step, p))
                 for p in self.rec["dropouts"] for k in self.rec["ks"]}
        active = f"dropout {self.controls['dropout'].value}, k {self.controls['k'].value}"
        return stepped_figure(steps, "run", active,
                              f"slider: dropout and k; stored weights after {step} steps, example {e}; no kernel needed")

    def update(self) -> None:
        s = self.state()
        self.panes["network"].show(figs.network_figure(s))
        self.panes["digit"].show(figs.digit_figure(self.x[self.controls["example"].value], s))


def active_paths(**kwargs) -> ActivePathsApp:
    return ActivePathsApp(**kwargs)


# ----------------------------------------------------------------------------- layer shrinkage


def _load_shrinkage_runs() -> dict:
    runs = {}
    folder = experiments.results_dir("widget_shrinkage")
    for p in experiments.WIDGET_PRUNE_RATES:
        for k in experiments.WIDGET_KS:
            f = folder / f"mesimp-p{p}-k{k}.json"
            if f.exists():
                runs[(p, k)] = read_json(f)
    if not runs:
        raise FileNotFoundError(f"no recorded meSimp runs in {folder}: run `python -m mesimp_lib experiment widgets`")
    return runs


# the dense reference of the MNIST widget runs: the same data, epochs, batch, evaluations and seed
# (kept beside the widget recordings, not in the widget_shrinkage suite, whose table counts meSimp runs)
DENSE_REFERENCE = "shrinkage-dense-reference.json"
SAME_SETTING = ("task", "train_limit", "epochs", "batch_size", "evals_per_epoch", "seed", "hidden", "layers")


def _load_dense_reference() -> dict | None:
    f = experiments.results_dir("widgets") / DENSE_REFERENCE
    return read_json(f) if f.exists() else None


class LayerShrinkageApp(_App):
    """meSimp's layer widths over training, from precomputed runs (prune rate x k)."""

    def __init__(self, runs: dict | None = None, dense: dict | None = None, static: bool = True):
        """``runs``: {(prune rate, k): stored meSimp result} (default: the MNIST widget runs);
        ``dense``: a stored dense run drawn as the reference wherever its setting (data, epochs,
        batch, seed, network) equals a run's (default for the MNIST runs: widgets/
        shrinkage-dense-reference.json). The "run live" button trains small MNIST runs, so it is shown
        for MNIST runs only."""
        self.static = static
        self.dense = dense if runs else (dense or _load_dense_reference())
        self.runs = runs or _load_shrinkage_runs()
        rates = sorted({p for p, _ in self.runs})
        ks = sorted({k for _, k in self.runs})
        self.controls = {
            "prune_rate": W.SelectionSlider(options=rates, value=0.1 if 0.1 in rates else rates[0], description="prune rate"),
            "k": W.SelectionSlider(options=ks, value=80 if 80 in ks else ks[0], description="k"),
            "prune": W.IntSlider(min=0, max=1, value=1, description="prune #"),
            "play": W.Play(min=0, max=1, value=1, interval=400, description="play"),
            "run_live": W.Button(description="run live (small)", icon="play",
                                 tooltip="train this prune rate and k on 5,000 images for 2 epochs (~15 s)"),
        }
        W.jslink((self.controls["play"], "value"), (self.controls["prune"], "value"))
        caption = figs.SHRINKAGE_CAPTION
        if any(r["config"].get("task", "mnist") != "mnist" for r in self.runs.values()):
            self.controls["run_live"].layout.display = "none"
            caption = caption.replace("; <i>run live</i> trains the current setting on a small subset.", ".")
            if any(r["config"].get("task") == "pos" for r in self.runs.values()):
                caption = caption.replace("the width of each hidden layer", "the memory cells left in each "
                                          "direction of the LSTM").replace("a unit is deleted", "a cell is deleted")
        if len(ks) == 1:  # a slider with one value moves nothing: say why instead
            self.controls["k"].layout.display = "none"
            caption += (f" <b>k:</b> only k = {ks[0]} was run for these stored runs, so there is no k slider; "
                        "more values of k need more stored runs (see the suite's command in each run's JSON).")
        self.progress = W.IntProgress(min=0, max=1, value=0, description="live run", layout=W.Layout(visibility="hidden"))
        self.live: dict = {}
        self.panes = {"widths": FigurePane(self.figure(marker_at=None))}
        self._sync_prune_range()
        for name in ("prune_rate", "k", "prune"):
            self.controls[name].observe(lambda _c: self.update(), names="value")
        self.controls["run_live"].on_click(lambda _b: self.run_live())
        self.widget = W.VBox([
            row([self.controls["prune_rate"], self.controls["k"]]),
            row([self.controls["play"], self.controls["prune"], self.controls["run_live"], self.progress]),
            self.panes["widths"].widget,
            W.HTML(caption),
        ])
        self.update()

    def current(self) -> dict:
        key = (self.controls["prune_rate"].value, self.controls["k"].value) if hasattr(self, "controls") else None
        if key is None:
            key = (0.1, 80) if (0.1, 80) in self.runs else next(iter(self.runs))
        return self.live.get(key) or self.runs[key]

    def _sync_prune_range(self) -> None:
        """A newly chosen run starts at its last prune (the final widths); play steps from 0."""
        r = self.current()
        key = (self.controls["prune_rate"].value, self.controls["k"].value, bool(r.get("live")))
        if key == getattr(self, "_key", None):
            return
        self._key = key
        n = len(r["widths_history"]) - 1
        for name in ("prune", "play"):  # both: the browser link copies play's value onto prune
            self.controls[name].max = max(1, n)
            self.controls[name].value = n

    def update(self) -> None:
        self._sync_prune_range()
        self.panes["widths"].show(self.figure(marker_at=self.controls["prune"].value))

    def static_figure(self):
        """Every stored run's final widths, with a slider over (prune rate, k)."""
        steps = {f"rate {p}, k {k}": self.figure(None, self.runs[(p, k)]) for p, k in sorted(self.runs)}
        key = (self.controls["prune_rate"].value, self.controls["k"].value)
        return stepped_figure(steps, "run", f"rate {key[0]}, k {key[1]}",
                              "slider: the stored runs (prune rate, k); no kernel needed")

    def figure(self, marker_at: int | None, result: dict | None = None):
        """The current run's figure, with the dense reference when it was trained the same way."""
        r = result or self.current()
        same = self.dense is not None and not r.get("live") and all(
            self.dense["config"].get(f) == r["config"].get(f) for f in SAME_SETTING)
        return figs.shrinkage_figure(r, marker_at=marker_at, dense=self.dense if same else None)

    def run_live(self, train_limit: int = 5000, epochs: int = 2) -> dict:
        """Train the current (prune rate, k) on a small subset and show it instead of the stored run."""
        p, k = self.controls["prune_rate"].value, self.controls["k"].value
        cfg = TrainConfig(method="mesimp", k=k, prune_rate=p, seed=1, batch_size=50, epochs=epochs,
                          train_limit=train_limit, cycle_epochs=1, prunes_per_epoch=4, evals_per_epoch=5, rows_every=0)
        self.progress.layout.visibility = "visible"
        self.progress.max, self.progress.value = epochs * 5, 0

        def tick(_point, _model):
            self.progress.value += 1

        result = train(cfg, progress=False, on_eval=tick)
        result["live"] = True
        self.live[(p, k)] = result
        self.update()
        return result


def layer_shrinkage(**kwargs) -> LayerShrinkageApp:
    return LayerShrinkageApp(**kwargs)


# ----------------------------------------------------------------------------- k explorer


@lru_cache(maxsize=1)
def _demo_model() -> MLP:
    """A 784-500-500-10 MLP trained densely for one quick epoch (5,000 images, seed 1) with plain
    SGD (lr 0.1): the gradient the k explorer shows is backprop's own, shaped by no optimizer state."""
    cfg = TrainConfig(method="dense", optimizer="sgd", epochs=1, train_limit=5000, batch_size=50, rows_every=0,
                      evals_per_epoch=1)
    return train(cfg, progress=False, return_model=True)["model"]


def accuracy_curves() -> dict:
    """Mean test accuracy (and sd) by k for top-k, random-k and dense h = k, from stored runs."""
    import statistics

    out = {}
    for label, suite, name in (("meProp top-k", "k_grid", "topk-k{k}"), ("random-k", "k_grid", "random-k{k}"),
                               ("dense MLP, h = k", "dense_h_k", "dense-h{k}")):
        xs, ys, sds = [], [], []
        for k in KS:
            vals = [100 * read_json(f)["test_acc"] for s in (1, 2, 3)
                    if (f := experiments.results_dir(suite) / f"{name.format(k=k)}-s{s}.json").exists()]
            if vals:
                xs.append(k)
                ys.append(round(statistics.mean(vals), 2))
                sds.append(round(statistics.stdev(vals), 2) if len(vals) > 1 else 0.0)
        out[label] = (xs, ys, sds)
    return out


def dense_accuracy() -> tuple[float, float] | None:
    """Mean and sd of the test accuracy of the dense 784-500-500-10 runs of the k grid."""
    import statistics

    vals = [100 * read_json(f)["test_acc"] for f in sorted(experiments.results_dir("k_grid").glob("dense-s*.json"))]
    if not vals:
        return None
    return round(statistics.mean(vals), 2), round(statistics.stdev(vals), 2) if len(vals) > 1 else 0.0


class KExplorerApp(_App):
    def __init__(self, n_examples: int = 20, static: bool = True):
        self.static = static
        data = load_mnist()
        self.x, self.y = data.dev_x[:n_examples], data.dev_y[:n_examples]
        self.curves = accuracy_curves()
        self.dense = dense_accuracy()
        self.model = _demo_model()
        self.controls = {
            "k": W.SelectionSlider(options=list(KS), value=20, description="k"),
            "example": W.IntSlider(min=0, max=n_examples - 1, value=0, description="example"),
        }
        self.panes = {
            "accuracy": FigurePane(figs.k_curves_figure(self.curves, 20, self.dense)),
            "gradient": FigurePane(figs.gradient_figure(self.gradient())),
        }
        for c in self.controls.values():
            c.observe(lambda _c: self.update(), names="value")
        self.readout = W.HTML(self._readout())
        self.widget = W.VBox([row(list(self.controls.values())), self.readout,
                              row([self.panes["accuracy"].widget, self.panes["gradient"].widget]),
                              W.HTML(figs.K_CAPTION)])

    def static_figure(self):
        """The example's sorted gradient at every k of the grid, with a k slider."""
        e = self.controls["example"].value
        steps = {str(k): figs.gradient_figure(self.gradient(k, e)) for k in KS}
        return stepped_figure(steps, "k", str(self.controls["k"].value),
                              f"k slider: example {e} of the live-trained network (computed when the cell ran); "
                              "no kernel needed")

    def gradient(self, k: int | None = None, e: int | None = None) -> dict:
        k = k if k is not None else (self.controls["k"].value if hasattr(self, "controls") else 20)
        e = e if e is not None else (self.controls["example"].value if hasattr(self, "controls") else 0)
        layer = self.model.hidden[1]
        old = layer.k
        layer.k, layer.mode = k, "per_example"
        try:
            path = compute_path(self.model, self.x[e : e + 1], self.y[e : e + 1])
        finally:
            layer.k = old
        g = path["layers"][1]["g"]
        return {"g": g, "selected": path["layers"][1]["selected"], "k": k, "example": e, "label": path["label"]}

    def update(self) -> None:
        self.panes["accuracy"].show(figs.k_curves_figure(self.curves, self.controls["k"].value, self.dense))
        self.panes["gradient"].show(figs.gradient_figure(self.gradient()))
        self.readout.value = self._readout()

    def _readout(self) -> str:
        grad = self.panes["gradient"].figure
        return f"<b>{grad.layout.title.text.replace('<br>', ' ')}</b>"


def k_explorer(**kwargs) -> KExplorerApp:
    return KExplorerApp(**kwargs)

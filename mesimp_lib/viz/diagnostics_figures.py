"""Figures for notebook 10 (why per-example top-k stumbles with Adam), over the results of
``mesimp_lib.diagnostics``. Every plotted number is rounded (nbval compares the JSON)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import PALETTE as _SHARED, rounded as _r

PALETTE = [*_SHARED, "#7f7f7f", "#bcbd22"]  # two more lines than the shared palette
LAYOUT = {"template": "plotly_white", "autosize": True, "margin": {"l": 60, "r": 20, "t": 70, "b": 50}}


def _smooth(values, window: int, every: int = 4) -> tuple[list[int], list[float]]:
    """Steps (1-based) and the trailing moving average over ``window`` steps (the first points
    average what exists so far), kept at every ``every``-th step and the last one."""
    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    steps = np.arange(1, len(v) + 1)
    lo = np.maximum(steps - window, 0)
    avg = (c[1:] - c[lo]) / (steps - lo)
    keep = sorted(set(range(every - 1, len(v), every)) | {len(v) - 1}) if len(v) else []
    return [int(steps[i]) for i in keep], [float(avg[i]) for i in keep]


def mass_share_figure(ks, shares: dict[str, list[float]], width: int) -> go.Figure:
    """Share of the gradient's squared L2 norm that the k largest entries carry, against k, one
    line per label; the dotted line is k random entries' expected share, k / width."""
    fig = go.Figure()
    for i, (label, ys) in enumerate(shares.items()):
        fig.add_trace(go.Scatter(x=list(ks), y=_r(ys), mode="lines+markers", name=label,
                                 line={"color": PALETTE[i % len(PALETTE)]},
                                 hovertemplate=f"{label}<br>k=%{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.add_trace(go.Scatter(x=list(ks), y=_r([k / width for k in ks]), mode="lines", name="k random entries (k/n)",
                             line={"color": "#7f7f7f", "dash": "dot"}))
    fig.update_layout(title="How much of the gradient the k largest entries carry (real MNIST gradients)",
                      xaxis={"title": f"k (of n = {width} units)", "type": "log"},
                      yaxis={"title": "share of squared L2 norm", "range": [0, 1.02]}, height=380, **LAYOUT)
    return fig


def loss_figure(runs: dict[str, dict], window: int = 20) -> go.Figure:
    """Training loss per step (moving average over ``window`` steps) for each run, in two panels
    split by optimizer; the dashed line is ln 10, the loss of a uniform guess."""
    opts = list(dict.fromkeys(r["config"]["optimizer"] for r in runs.values()))
    fig = make_subplots(rows=1, cols=len(opts), shared_yaxes=True, subplot_titles=[o.upper() if o == "sgd" else o.title()
                                                                                    for o in opts])
    colors = {}
    for label, r in runs.items():
        col = opts.index(r["config"]["optimizer"]) + 1
        name = label.split(",")[0]
        color = colors.setdefault(name, PALETTE[len(colors) % len(PALETTE)])
        x, y = _smooth(r["loss"], window)
        fig.add_trace(go.Scatter(x=x, y=_r(y, 3), mode="lines", name=name, legendgroup=name,
                                 showlegend=col == 1, line={"color": color},
                                 hovertemplate=f"{label}<br>step %{{x}}: loss %{{y:.3f}}<extra></extra>"), row=1, col=col)
        fig.add_hline(y=round(float(np.log(10)), 4), line={"dash": "dash", "color": "#7f7f7f", "width": 1}, row=1, col=col)
    fig.update_yaxes(title_text=f"training loss ({window}-step average)", type="log", row=1, col=1)
    fig.update_xaxes(title_text="step (mini-batch of 50)")
    fig.update_layout(title="Training loss, k = 20: the same runs with SGD and with Adam (dashed: ln 10)", height=400,
                      **LAYOUT)
    return fig


PROBE_PANELS = (
    ("feeders", "examples feeding a row", False),
    ("coherence", "sign coherence of a row's gradient", False),
    ("agreement", "sign agreement with the full gradient", False),
    ("preact_move", "|change| of pre-activations per step", True),
)


def probe_figure(runs: dict[str, dict], window: int = 10) -> go.Figure:
    """The watched layer's selected rows, step by step (moving average over ``window`` steps):
    examples feeding a row, sign coherence (dotted: the full mini-batch gradient of the same
    rows), sign agreement with the full gradient, and how far a step moves the pre-activations."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=[p[1] for p in PROBE_PANELS], vertical_spacing=0.16)
    for i, (label, r) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)]
        for j, (key, _title, _log) in enumerate(PROBE_PANELS):
            x, y = _smooth(r["probe"][key], window)
            kw = {"row": j // 2 + 1, "col": j % 2 + 1}
            fig.add_trace(go.Scatter(x=x, y=_r(y), mode="lines", name=label, legendgroup=label, showlegend=j == 0,
                                     line={"color": color}, hovertemplate=f"{label}<br>step %{{x}}: %{{y:.4f}}<extra></extra>"),
                          **kw)
            if key == "coherence":
                _, full = _smooth(r["probe"]["coherence_full"], window)
                fig.add_trace(go.Scatter(x=x, y=_r(full), mode="lines", name=f"{label}, full gradient", legendgroup=label,
                                         showlegend=False, line={"color": color, "dash": "dot"},
                                         hovertemplate=f"{label}, full gradient<br>step %{{x}}: %{{y:.4f}}<extra></extra>"),
                              **kw)
    for j, (_key, _title, log) in enumerate(PROBE_PANELS):
        fig.update_yaxes(type="log" if log else "linear", row=j // 2 + 1, col=j % 2 + 1)
    fig.update_xaxes(title_text="step", row=2)
    fig.update_layout(title=f"The last hidden layer's rows that get a gradient ({window}-step averages)", height=620,
                      **LAYOUT)
    return fig


def activity_figure(runs: dict[str, dict], layer: int = -1) -> go.Figure:
    """Every few steps, on dev images: the mean activation of the last hidden layer (log scale)
    and the share of dead units of hidden layer ``layer`` (zero on every image)."""
    layers = len(next(iter(runs.values()))["activity"]["dead"][0])
    fig = make_subplots(rows=1, cols=2, subplot_titles=["mean activation, last hidden layer",
                                                        f"dead units, hidden layer {layer % layers + 1}"])
    for i, (label, r) in enumerate(runs.items()):
        a = r["activity"]
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=a["step"], y=_r(a["mean_act"]), mode="lines+markers", name=label, legendgroup=label,
                                 line={"color": color}), row=1, col=1)
        fig.add_trace(go.Scatter(x=a["step"], y=_r([100 * d[layer] for d in a["dead"]], 2), mode="lines+markers",
                                 name=label, legendgroup=label, showlegend=False, line={"color": color},
                                 hovertemplate=f"{label}<br>step %{{x}}: %{{y:.1f}}% dead<extra></extra>"), row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(title_text="% of units", range=[0, 100], row=1, col=2)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title="Activation growth and dead units", height=380, **LAYOUT)
    return fig

"""Static plotly figures that carry their message without a widget."""

from __future__ import annotations

import plotly.graph_objects as go

COLORS = {"dense": "#636efa", "meprop": "#ef553b", "random": "#00cc96"}
PALETTE = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3"]


def _r(values, digits=4):
    return [round(float(v), digits) for v in values]


def learning_curves(results: dict[str, dict], metric: str = "dev_acc", title: str | None = None) -> go.Figure:
    """Accuracy (dev by default) at every evaluation point of each run, against epochs.

    ``results`` maps a legend label to a result dict of ``mesimp_lib.training.train``.
    """
    fig = go.Figure()
    for i, (label, r) in enumerate(results.items()):
        h = r["history"]
        fig.add_trace(
            go.Scatter(
                x=_r([p["epoch"] for p in h], 3),
                y=_r([100 * p[metric] for p in h], 2),
                mode="lines+markers",
                name=label,
                line={"color": PALETTE[i % len(PALETTE)]},
                hovertemplate=f"{label}<br>epoch %{{x}}<br>{metric.replace('_', ' ')} %{{y:.2f}}%<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or f"{metric.replace('_acc', '').title()} accuracy during training",
        xaxis_title="epoch (fraction of a pass over the training images)",
        yaxis_title=f"{metric.replace('_acc', '')} accuracy (%)",
        legend_title="run",
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def time_split_bars(results: dict[str, dict], title: str = "Where the training time goes") -> go.Figure:
    """Stacked bars: forward, backward and optimizer seconds per run (measured, so they vary)."""
    parts = [("forward_s", "forward", "#9ecae1"), ("backward_s", "backward", "#ef553b"), ("update_s", "optimizer step", "#bdbdbd")]
    labels = list(results)
    fig = go.Figure()
    for key, name, color in parts:
        fig.add_trace(
            go.Bar(
                x=labels,
                y=_r([results[k]["timing"][key] for k in labels], 3),
                name=name,
                marker_color=color,
                hovertemplate=f"%{{x}}<br>{name}: %{{y:.3f}} s<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="stack",
        title=title,
        yaxis_title="seconds (whole run)",
        xaxis_title="run",
        legend_title="part of a training step",
        template="plotly_white",
        height=360,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig

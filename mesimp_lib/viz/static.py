"""The apps as plain plotly figures with their own slider: readable without a kernel.

Each app's ``static_figure()`` steps one of its figures through the stored runs (plotly frames,
one per slider position), so a notebook on disk, in any viewer, or as HTML (``make site``) still
shows the interactive view; the live widget adds what needs Python (every example, run live).
``stepped_figure`` is the generic part: a dict of figures of the same shape -> one figure.
"""

from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["stepped_figure"]

# layout parts that change from step to step (the rest is the first figure's)
STEPPED_LAYOUT = ("title", "shapes", "annotations", "xaxis", "yaxis", "yaxis2")


def stepped_figure(figures: dict[str, go.Figure], label: str, active: str, note: str) -> go.Figure:
    """One figure whose slider (``label``: value) steps through ``figures`` (value -> figure,
    in slider order; every figure with the same number of traces), starting at ``active``.
    ``note`` is a line under the title saying what the slider does and that it needs no kernel."""
    names = list(figures)
    if active not in figures:
        raise ValueError(f"active={active!r} is not one of the steps {names}")
    counts = {name: len(f.data) for name, f in figures.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every step needs the same number of traces to be animated, got {counts}")

    def layout_of(f: go.Figure) -> dict:
        full = f.layout.to_plotly_json()
        out = {k: full[k] for k in STEPPED_LAYOUT if k in full}
        title = (full.get("title") or {}).get("text", "")
        out["title"] = {"text": f"{title}<br><sup>{note}</sup>"}
        return out

    first = figures[active]
    fig = go.Figure(data=first.data, layout=first.layout,
                    frames=[go.Frame(name=name, data=f.data, layout=layout_of(f)) for name, f in figures.items()])
    fig.update_layout(layout_of(first))
    fig.update_layout(
        # the slider goes under the legend (which sits at about y = -0.2 in the apps' figures)
        sliders=[{"active": names.index(active), "currentvalue": {"prefix": f"{label}: "}, "y": -0.3,
                  "yanchor": "top", "pad": {"t": 10},
                  "steps": [{"label": name, "method": "animate",
                             "args": [[name], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                                               "transition": {"duration": 0}}]} for name in names]}],
        height=(first.layout.height or 420) + 150,
        margin={**(first.layout.margin.to_plotly_json() if first.layout.margin else {}), "t": 90, "b": 170},
    )
    return fig

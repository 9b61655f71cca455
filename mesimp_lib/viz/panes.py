"""How the apps show a plotly figure inside ipywidgets without a per-figure widget model.

plotly 7's ``FigureWidget`` is an anywidget, and anywidget 0.11 gives each model 2 s to load
plotly's 5 MB widget bundle; past that the model silently drops every later update from the
kernel (the plot is drawn once and never follows a slider again). On a busy machine, or in
Voila, which creates all of a page's models at once, that happened to half the figures.

A ``FigurePane`` has no such race: it is a core ``ipywidgets.Output`` whose content is a plain
plotly figure (the ``application/vnd.plotly.v1+json`` mime bundle, drawn by the plotly
renderer JupyterLab and Voila load with the page). Each update replaces the output with the new
figure in one widget-state message, so a slow browser draws late but never loses an update.
Every figure is sized by its container (``autosize``, plotly's ``responsive`` config).
"""

from __future__ import annotations

import json
import re

import ipywidgets as W
import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["PLOTLY_CONFIG", "FigurePane", "figure_bundle", "row"]

# the mode bar stays hidden until the pointer is over a plot, and then sits beside the plot area
# (the layouts keep a top margin for it), never on a title; no plotly logo
PLOTLY_CONFIG = {"responsive": True, "displaylogo": False, "displayModeBar": "hover",
                 "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
MIME = "application/vnd.plotly.v1+json"


def figure_bundle(fig: go.Figure) -> dict:
    """The mime bundle of ``fig`` as the plotly renderer wants it (JSON-safe), sized by its
    container: any fixed width is dropped."""
    d = json.loads(pio.to_json(fig, validate=False, remove_uids=True))
    d.setdefault("layout", {}).pop("width", None)
    d["layout"]["autosize"] = True
    d["config"] = dict(PLOTLY_CONFIG)
    title = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (d["layout"].get("title") or {}).get("text") or "plotly figure"))
    return {MIME: d, "text/plain": f"[plotly figure: {title.strip()}]"}


class FigurePane:
    """One plotly figure in an ``ipywidgets.Output``: ``.figure`` is the figure now shown
    (a plain ``go.Figure``, read it in tests), ``.show(fig)`` replaces it, ``.widget`` is the
    Output to put in a box. ``min_width``/``max_width``/``flex`` size it inside an HBox."""

    def __init__(self, fig: go.Figure, min_width: str = "340px", max_width: str | None = None,
                 flex: str = "1 1 0"):
        self.widget = W.Output(layout=W.Layout(flex=flex, min_width=min_width, max_width=max_width, width="auto"))
        self.figure = fig
        self.show(fig)

    def show(self, fig: go.Figure) -> None:
        self.figure = fig
        self.widget.outputs = ({"output_type": "display_data", "data": figure_bundle(fig), "metadata": {}},)


def row(children: list, wrap: bool = True) -> W.HBox:
    """An HBox that shares its width among ``children`` and wraps them under each other when
    the container is too narrow (a 1280 px window with JupyterLab's sidebar open)."""
    return W.HBox(children, layout=W.Layout(flex_flow="row wrap" if wrap else "row", width="100%",
                                            align_items="flex-start"))

"""Plotly figures and ipywidgets apps. The only part of mesimp_lib that imports them."""

from .figures import (
    digit_figure,
    gradient_figure,
    k_curves_figure,
    learning_curves,
    network_figure,
    shrinkage_figure,
    time_split_bars,
    update_curves,
)

__all__ = [
    "active_paths",
    "digit_figure",
    "gradient_figure",
    "k_curves_figure",
    "k_explorer",
    "layer_shrinkage",
    "learning_curves",
    "network_figure",
    "shrinkage_figure",
    "time_split_bars",
    "update_curves",
]


def __getattr__(name):  # the apps import ipywidgets; load them only when asked for
    if name in ("active_paths", "layer_shrinkage", "k_explorer"):
        from . import apps

        return getattr(apps, name)
    raise AttributeError(name)

"""Plotly figures and ipywidgets apps. The only part of mesimp_lib that imports them."""

from .app_figures import digit_figure, gradient_figure, k_curves_figure, network_figure, shrinkage_figure
from .figures import (
    bench_facts,
    learning_curves,
    run_time_figure,
    speedup_figure,
    step_time_figure,
    time_split_bars,
    update_curves,
)

__all__ = [
    "active_paths",
    "bench_facts",
    "digit_figure",
    "gradient_figure",
    "k_curves_figure",
    "k_explorer",
    "layer_shrinkage",
    "learning_curves",
    "network_figure",
    "run_time_figure",
    "shrinkage_figure",
    "speedup_figure",
    "step_time_figure",
    "time_split_bars",
    "update_curves",
]


def __getattr__(name):  # the apps import ipywidgets; load them only when asked for
    if name in ("active_paths", "layer_shrinkage", "k_explorer"):
        from . import apps

        return getattr(apps, name)
    raise AttributeError(name)

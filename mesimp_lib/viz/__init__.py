"""Plotly figures and ipywidgets apps. The only part of mesimp_lib that imports them."""

from .figures import learning_curves, time_split_bars

__all__ = ["learning_curves", "time_split_bars"]

"""Colours shared by every figure."""

COLORS = {"dense": "#636efa", "meprop": "#ef553b", "random": "#00cc96"}
PALETTE = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3"]

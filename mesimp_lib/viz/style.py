"""Colours shared by every figure."""

PALETTE = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3"]


def rounded(values, digits: int = 4) -> list[float]:
    """Plotted numbers rounded (nbval compares the plotly JSON exactly)."""
    return [round(float(v), digits) for v in values]

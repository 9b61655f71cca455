"""PNG pictures of the interactive views, for the docs: ``make docs`` or

    python -m mesimp_lib.viz.export [OUT_DIR]        (default: docs/)

writes ``active_paths.png`` (the active-paths network of ``active_paths()`` at its default
k, example and step) and ``layer_shrinkage.png`` (the widths plot of ``layer_shrinkage()`` at
its default prune rate and k). Plotly's ``write_image`` renders them with kaleido, which needs a
Chrome or Chromium: Debian's ``/usr/bin/chromium`` is used (``BROWSER_PATH`` overrides it).
Needs the ``notebook`` and ``ui`` extras (ipywidgets for the apps, kaleido for the export).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["export_docs", "find_chromium"]

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"active_paths": (760, 480), "layer_shrinkage": (900, 440)}


def find_chromium() -> str | None:
    """``$BROWSER_PATH``, else Debian's chromium, else a chromium or chrome on PATH."""
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"]
    for cand in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(cand)
        if path:
            return path
    return None


def export_docs(out_dir: str | Path = ROOT / "docs", scale: float = 2.0) -> list[Path]:
    """Render the two views to ``out_dir``; returns the written paths."""
    import plotly.graph_objects as go
    import torch

    from . import app_figures
    from .apps import active_paths, layer_shrinkage

    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chrome/Chromium for kaleido: `apt-get install -y chromium` or set BROWSER_PATH")
    os.environ["BROWSER_PATH"] = chromium  # kaleido 1.x looks here before downloading anything
    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    paths = active_paths()
    shrink = layer_shrinkage()
    views = {
        "active_paths": app_figures.network_figure(paths.state()),
        "layer_shrinkage": go.Figure(shrink.figures["widths"]),
    }
    written = []
    for name, fig in views.items():
        width, height = SIZES[name]
        fig.update_layout(width=width, height=height, paper_bgcolor="white")
        target = out / f"{name}.png"
        fig.write_image(target, width=width, height=height, scale=scale)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    for p in export_docs(args[0] if args else ROOT / "docs"):
        print(f"wrote {p} ({p.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()

"""``make site``: the whole course as static HTML, readable without Python or a network.

    python -m mesimp_lib.viz.site [OUT_DIR]        (default: build/site)

Converts every ``notebooks/NN_*.ipynb`` with its stored outputs (nbconvert, the lab template)
into ``OUT_DIR/NN_*.html``, plus ``index.html`` listing them. Each stored plotly figure (the
``application/vnd.plotly.v1+json`` outputs, the apps' static figures with their sliders
included) is drawn by the plotly.js shipped with the plotly package, copied next to the pages;
live-widget outputs show their text line (they need a kernel). Links between notebooks point
at the HTML pages. Math is left as TeX (MathJax would need a network).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
from pathlib import Path

__all__ = ["build_site"]

ROOT = Path(__file__).resolve().parents[2]
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PLOTLY_JS = "plotly.min.js"


def _plot_html(fig: dict, div_id: str) -> str:
    """A div and the script that draws ``fig`` (data, layout, frames, config) into it."""
    height = (fig.get("layout") or {}).get("height") or 450
    payload = json.dumps({k: fig[k] for k in ("data", "layout", "frames", "config") if k in fig})
    payload = payload.replace("</", "<\\/")  # no premature </script>
    return (f'<div id="{div_id}" class="mesimp-plot" style="width:100%;height:{height}px"></div>\n'
            f'<script>Plotly.newPlot("{div_id}", {payload});</script>')


def _convert_outputs(nb: dict, stem: str) -> int:
    """Give each plotly output an HTML rendering, drop live-widget views; returns the plot count."""
    n = 0
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            data.pop(WIDGET_MIME, None)
            if PLOTLY_MIME in data:
                script = f'<script src="{PLOTLY_JS}"></script>\n' if n == 0 else ""
                data["text/html"] = script + _plot_html(data.pop(PLOTLY_MIME), f"{stem}-plot-{n}")
                n += 1
    return n


def build_site(out_dir: str | Path = ROOT / "build" / "site", notebooks: list[Path] | None = None) -> list[Path]:
    """Write the course's HTML pages, index.html and plotly.min.js to ``out_dir``; returns the pages."""
    import nbformat
    import plotly
    from nbconvert import HTMLExporter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(plotly.__file__).parent / "package_data" / PLOTLY_JS, out / PLOTLY_JS)
    nbs = notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not nbs:
        raise FileNotFoundError(f"no notebooks NN_*.ipynb under {ROOT / 'notebooks'}")
    exporter = HTMLExporter(template_name="lab")
    pages, rows = [], []
    for path in nbs:
        nb = nbformat.read(path, as_version=4)
        plots = _convert_outputs(nb, path.stem)
        body, _ = exporter.from_notebook_node(nb)
        body = re.sub(r'href="([^"#:]+)\.ipynb', r'href="\1.html', body)
        page = out / f"{path.stem}.html"
        tmp = page.with_suffix(".html.tmp")
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(page)  # atomic: no half-written page
        pages.append(page)
        title = next((c["source"].splitlines()[0].lstrip("# ") for c in nb.cells if c["cell_type"] == "markdown"
                      and c["source"].strip()), path.stem)
        rows.append(f'<li><a href="{page.name}">{html.escape(title)}</a> <small>({plots} figures)</small></li>')
    index = ("<!doctype html><meta charset='utf-8'><title>meSimp Lab: the course</title>"
             "<body style='font-family:sans-serif;max-width:760px;margin:2em auto'>"
             "<h1>meSimp Lab: the course, readable without Python</h1>"
             "<p>The notebooks with their stored outputs. The figures are interactive (hover, zoom, and the "
             "sliders under the apps' figures step through the stored runs); the live widgets need Jupyter "
             "(<code>make lab</code>). Built by <code>make site</code>.</p><ol>" + "\n".join(rows) + "</ol>")
    (out / "index.html").write_text(index, encoding="utf-8")
    return pages


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    pages = build_site(args[0]) if args else build_site()
    sys.stderr.write(f"wrote {len(pages)} pages and index.html to {pages[0].parent}\n")


if __name__ == "__main__":
    main()

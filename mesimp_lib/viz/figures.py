"""Static plotly figures that carry their message without a widget."""

from __future__ import annotations

import plotly.graph_objects as go

from .style import PALETTE, rounded as _r


def learning_curves(results: dict[str, dict], metric: str = "dev_acc", title: str | None = None) -> go.Figure:
    """Accuracy (dev by default) at every evaluation point of each run, against epochs.

    ``results`` maps a legend label to a result dict of ``mesimp_lib.training.train``.
    """
    fig = go.Figure()
    tasks = {r.get("config", {}).get("task", "mnist") for r in results.values()}
    what = "training images" if tasks <= {"mnist"} else "training sentences" if not tasks & {"mnist"} else "training data"
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
        xaxis_title=f"epoch (passes over the {what})",
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


def update_curves(results: dict[str, dict], start_epoch: float | None = None,
                  title: str = "Average absolute parameter change per step") -> go.Figure:
    """The optimizer's real step size over training (mean |delta theta| per parameter), per run."""
    fig = go.Figure()
    for i, (label, r) in enumerate(results.items()):
        s = r["updates"]["samples"]
        fig.add_trace(go.Scatter(
            x=_r([u["epoch"] for u in s], 3), y=[float(f"{u['mean_abs_update']:.4g}") for u in s],
            mode="lines", name=label, line={"color": PALETTE[i % len(PALETTE)]},
            hovertemplate=f"{label}<br>epoch %{{x}}<br>mean |update| %{{y:.3g}}<extra></extra>"))
    shapes = []
    if start_epoch is not None:
        shapes.append({"type": "line", "x0": start_epoch, "x1": start_epoch, "y0": 0, "y1": 1, "yref": "paper",
                       "line": {"dash": "dot", "color": "#d62728"}})
    fig.update_layout(
        title=title, xaxis_title="epoch", yaxis={"title": "mean |parameter change| per step", "type": "log"},
        shapes=shapes, template="plotly_white", height=380, legend_title="run",
        margin={"l": 70, "r": 20, "t": 50, "b": 50},
    )
    return fig


# ----------------------------------------------------------------------------- speed (notebook 09)

STEP_PARTS = (("forward_ms", "forward", "#9ecae1"), ("backward_ms", "backward", "#ef553b"),
              ("optimizer_ms", "optimizer step", "#bdbdbd"))
MAKE_BENCH = "run <code>make bench</code> to fill this"


def _env_line(bench: dict) -> str:
    """Machine, torch and allocator facts of a benchmark file, for a figure's subtitle."""
    env = bench.get("environment") or {}
    malloc = env.get("malloc_env")
    return (f"{env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores, torch {env.get('torch', '?')}, 1 thread "
            f"unless marked, allocator {'tuned (MALLOC_*)' if malloc else 'glibc defaults'}"
            + (" (quick run)" if bench.get("quick") else ""))


def _note_figure(title: str, note: str, height: int = 300) -> go.Figure:
    """An empty figure that says what is missing and how to get it."""
    fig = go.Figure()
    fig.add_annotation(text=note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 15})
    fig.update_layout(title=title, template="plotly_white", height=height, xaxis={"visible": False},
                      yaxis={"visible": False}, margin={"l": 40, "r": 20, "t": 60, "b": 30})
    return fig


def _split_bars(bars: dict[str, dict], title: str, yaxis: str, labels: dict[str, str] | None = None) -> go.Figure:
    """Stacked forward / backward / optimizer bars, one per entry of ``bars`` (values in ms)."""
    names = list(bars)
    fig = go.Figure()
    for key, name, color in STEP_PARTS:
        fig.add_trace(go.Bar(x=names, y=_r([bars[b][key] for b in names], 4), name=name, marker_color=color,
                             hovertemplate=f"%{{x}}<br>{name}: %{{y:.3f}} ms<extra></extra>"))
    totals = [sum(bars[b][k] for k, _, _ in STEP_PARTS) for b in names]
    fig.add_trace(go.Scatter(
        x=names, y=_r(totals, 4), mode="text", textposition="top center", showlegend=False, hoverinfo="skip",
        text=[f"{t:.2f} ms" + (f"<br>{labels[b]}" if labels and b in labels else "") for b, t in zip(names, totals)]))
    fig.update_layout(barmode="stack", title=title, yaxis={"title": yaxis, "rangemode": "tozero"},
                      yaxis_range=[0, round(1.25 * max(totals), 4)] if totals else None,
                      legend_title="part of a training step", template="plotly_white", height=420,
                      margin={"l": 60, "r": 20, "t": 100, "b": 50})
    return fig


def step_time_figure(bench: dict, mode: str = "per_example", batch: int = 10, k: int = 20) -> go.Figure:
    """Where the time of one training step goes, from the benchmark's whole-step section.

    ``bench`` is the dict of ``benchmarks/results.json`` (``mesimp_lib.bench.run_benchmark``).
    One stacked bar (forward / backward / optimizer, median ms of each section, each variant timed
    alone) for dense + Adam and for every meProp variant at ``mode``, ``batch`` and ``k`` (the
    784-500-500-10 MLP); above each bar its total and the whole-step speedup over dense measured
    interleaved A-B-B-A (more reliable than the ratio of the section medians). A note instead of
    bars when the file has no such section (an older or ``--quick`` benchmark).
    """
    import statistics

    title = f"One training step of 784-500-500-10, mini-batch {batch}, k={k} ({mode.replace('_', ' ')})"
    rows = [r for r in bench.get("step") or [] if r.get("mode") == mode and r.get("batch") == batch
            and r.get("k") == k and r.get("sections")]
    if not rows:
        return _note_figure(title, f"no whole-step section timings in this benchmark file:<br>{MAKE_BENCH}")
    dense = {key: statistics.median(r["sections"]["dense"][key] for r in rows) for key, _, _ in STEP_PARTS}
    bars = {"dense + Adam": dense}
    labels = {"dense + Adam": "(baseline)"}
    for r in rows:
        bars[r["variant"]] = r["sections"]["meprop"]
        labels[r["variant"]] = f"{r['speedup']:.2f}x vs dense"
    limit = rows[0].get("limit_fwd_bwd")
    sub = f"FLOP limit of forward + backward: {limit:.2f}x (the optimizer not counted)" if limit else ""
    return _split_bars(bars, f"{title}<br><sup>{sub}<br>{_env_line(bench)}</sup>",
                       "milliseconds per step (median)", labels)


def run_time_figure(groups: dict[str, list[dict]], title: str | None = None) -> go.Figure:
    """Where the time went in stored training runs: forward / backward / optimizer milliseconds per
    step (each run's totals divided by its steps, mean over the runs of a group).

    ``groups`` maps a bar label to the result dicts of ``mesimp_lib.training.train`` (e.g. the 3
    seeds of one setting). The runs were timed on a shared machine, so the split is more telling
    than the absolute height.
    """
    bars = {}
    for label, runs in groups.items():
        runs = [r for r in runs if r.get("timing", {}).get("steps")]
        if runs:
            bars[label] = {key: sum(1e3 * r["timing"][src] / r["timing"]["steps"] for r in runs) / len(runs)
                           for (key, _, _), src in zip(STEP_PARTS, ("forward_s", "backward_s", "update_s"))}
    title = title or "Stored training runs: milliseconds per step"
    if not bars:
        return _note_figure(title, "no stored runs with timing found")
    counts = {label: f"mean of {len(groups[label])} runs" for label in bars}
    return _split_bars(bars, title, "milliseconds per step (mean over runs)", counts)


def speedup_figure(bench: dict) -> go.Figure:
    """Backward speedup over dense against n/k, log-log, beside the FLOP limit y = n/k.

    From ``benchmarks/results.json``: the single square layer rows (unified top-k, one colour per
    width n, the symbol gives the batch; hollow = all cores), the per-example layer rows, and the
    784-500-500-10 MLP's whole backward (x = that backward's own FLOP limit, since its dense output
    layer and the first layer's missing dx make it smaller than 500/k). Points on the dashed line
    would reach the limit; below the dotted line meProp is slower than dense.
    """
    from ..bench import _mlp_backward_limit  # the MLP's FLOP limit, for files written before it was stored

    layer = bench.get("layer") or []
    mlp = bench.get("mlp") or []
    title = "Backward speedup over dense against n/k"
    if not layer and not mlp:
        return _note_figure(title, f"no benchmark rows in this file: {MAKE_BENCH}")
    symbols = {1: "circle", 32: "square", 256: "diamond"}
    widths = sorted({r["n"] for r in layer if r["mode"] == "unified"})
    traces = []

    def hover(r, what):
        return (f"{what}<br>kernel {r.get('kernel', 'torch')}, dW {r.get('weight_grad', 'buffer')}<br>"
                f"batch {r['batch']}, n={r['n']}, k={r['k']}, threads {r['threads']}<br>"
                f"dense {r['dense_ms']:.3f} ms, meProp {r['meprop_ms']:.3f} ms<br>speedup {r['speedup']:.2f}x")

    for i, n in enumerate(widths):
        for multi in (False, True):
            rows = [r for r in layer if r["mode"] == "unified" and r["n"] == n and (r["threads"] > 1) == multi]
            if not rows:
                continue
            traces.append(go.Scatter(
                x=_r([r["n"] / r["k"] for r in rows], 3), y=_r([r["speedup"] for r in rows], 3), mode="markers",
                name=f"one layer, unified, n={n}", legendgroup=f"n{n}", showlegend=not multi or not any(
                    t.legendgroup == f"n{n}" for t in traces),
                marker={"size": 11, "color": "white" if multi else PALETTE[i % len(PALETTE)],
                        "symbol": [symbols.get(r["batch"], "cross") for r in rows],
                        "line": {"width": 2, "color": PALETTE[i % len(PALETTE)]}},
                text=[hover(r, "one layer, unified") for r in rows], hovertemplate="%{text}<extra></extra>"))
    for compiled in (False, True):  # filled: the PyTorch reference; hollow: the compiled kernels
        pe = [r for r in layer if r["mode"] != "unified" and (r.get("kernel", "torch") != "torch") == compiled]
        if pe:
            traces.append(go.Scatter(
                x=_r([r["n"] / r["k"] for r in pe], 3), y=_r([r["speedup"] for r in pe], 3), mode="markers",
                name=f"one layer, per example, {'compiled' if compiled else 'PyTorch'} kernel",
                marker={"size": 12, "color": "white" if compiled else "#222", "symbol": "triangle-up",
                        "line": {"width": 2, "color": "#222"}},
                text=[hover(r, "one layer, per example") for r in pe], hovertemplate="%{text}<extra></extra>"))
    for mode, color in (("per_example", "#d62728"), ("unified", "#ff7f0e")):
        rows = [r for r in mlp if r["mode"] == mode]
        if rows:
            traces.append(go.Scatter(
                x=_r([r.get("limit_backward") or _mlp_backward_limit(r["k"]) for r in rows], 3),
                y=_r([r["speedup"] for r in rows], 3), mode="markers",
                name=f"784-500-500-10 whole backward, {mode.replace('_', ' ')}",
                marker={"size": 12, "color": color, "symbol": "star", "line": {"width": 1, "color": "#444"}},
                text=[hover(r, f"MLP backward, {mode}, kernel {r.get('kernel', 'torch')}, "
                               f"dW {r.get('weight_grad', 'buffer')}") for r in rows],
                hovertemplate="%{text}<extra></extra>"))
    xs = [x for t in traces for x in t.x if x is not None]
    top = max(xs + [2.0]) * 1.5
    traces.append(go.Scatter(x=[1, top], y=[1, top], mode="lines", name="FLOP limit y = n/k",
                             line={"dash": "dash", "color": "#444"}, hoverinfo="skip"))
    traces.append(go.Scatter(x=[1, top], y=[1, 1], mode="lines", name="as fast as dense (y = 1)",
                             line={"dash": "dot", "color": "#999"}, hoverinfo="skip"))
    fig = go.Figure(traces)
    fig.update_layout(
        title=f"{title}: one layer's backward and the paper's MLP<br><sup>{_env_line(bench)}<br>one-layer "
              "symbols: circle batch 1, square batch 32, diamond batch 256; hollow: all cores; each point the "
              "median of interleaved rounds</sup>",
        xaxis={"type": "log", "title": "n / k (how many times fewer backward multiply-adds)"},
        yaxis={"type": "log", "title": "backward speedup over dense", "automargin": True},
        template="plotly_white", height=540, legend={"font": {"size": 11}},
        margin={"l": 80, "r": 20, "t": 110, "b": 50},
    )
    return fig


def bench_facts(bench: dict) -> list[str]:
    """The benchmark numbers the speed notebook discusses, as printable lines (a line saying
    ``make bench`` is needed where the file has no such rows)."""
    from ..bench import _mlp_backward_limit, _mlp_step_limit

    missing = "not in this benchmark file: run `make bench`"
    env = bench.get("environment") or {}
    out = [f"machine: {env.get('cpu', '?')}, torch {env.get('torch', '?')}, allocator "
           f"{env.get('malloc_env') or 'glibc defaults'}, native kernels: {env.get('meprop_kernels', 'not recorded')}"]
    one = [r for r in bench.get("layer") or [] if r["mode"] == "unified" and r["threads"] == 1]
    small = {}
    for r in one:
        if r["n"] == 500:
            small[r["batch"]] = min(small.get(r["batch"], r["dense_ms"]), r["dense_ms"])
    out.append("one 500x500 layer, dense backward (what a paper-sized product costs in MKL): "
               + (", ".join(f"batch {b} {ms:.3f} ms" for b, ms in sorted(small.items())) if small else missing))
    out.append("784-500-500-10 whole backward, batch 10, k=20, FLOP limit "
               f"{_mlp_backward_limit(20):.1f}x:")
    rows = [r for r in bench.get("mlp") or [] if r["batch"] == 10 and r["k"] == 20]
    out += [f"  {r['mode']:11s} kernel {r.get('kernel', 'torch'):6s} dW {r.get('weight_grad', 'buffer'):6s}: "
            f"dense {r['dense_ms']:.3f} ms, meProp {r['meprop_ms']:.3f} ms, speedup {r['speedup']:.2f}x"
            + (f" (model backward alone: {r['grad_speedup']:.2f}x)" if "grad_speedup" in r else "")
            for r in rows] or [f"  {missing}"]
    floor = [r for r in bench.get("floor") or [] if r["batch"] == 10]
    out += [f"  the floor: a loss.backward() whose model is one node doing no work: {r['floor_ms']:.3f} ms, "
            f"{r['speedup']:.1f}x faster than dense (the ceiling of any backward through loss.backward() here)"
            + (f"; the model backward alone: {r['grad_speedup']:.1f}x" if "grad_speedup" in r else "")
            for r in floor]
    out.append(f"whole training step, batch 10, k=20, FLOP limit of forward + backward {_mlp_step_limit(20):.2f}x:")
    rows = [r for r in bench.get("step") or [] if r["batch"] == 10 and r["k"] == 20]
    out += [f"  {r['mode']:11s} {r['variant']:38s}: speedup {r['speedup']:.2f}x" for r in rows] or [f"  {missing}"]
    if one:
        best = max(one, key=lambda r: r["speedup"])
        out.append(f"largest one-layer speedup (unified, 1 thread): {best['speedup']:.1f}x at batch {best['batch']}, "
                   f"n={best['n']}, k={best['k']} (limit {best['n'] / best['k']:.0f}x)")
    else:
        out.append(f"one-layer unified rows: {missing}")
    return out


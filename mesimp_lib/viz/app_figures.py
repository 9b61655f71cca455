"""The figures of the three apps (active paths, layer shrinkage, k explorer), each a plain
plotly figure built from a state dict; ``apps`` shows them in FigurePanes, ``static`` steps
them with plotly sliders for readers without a kernel. Sizes come from the container."""

from __future__ import annotations

import plotly.graph_objects as go

from .style import PALETTE

# ----------------------------------------------------------------------------- active paths

NETWORK_CAPTION = (
    "<b>How to read it.</b> Left: the input digit. Right: each dot is a hidden unit (two hidden layers of 64, "
    "then the 10 outputs). "
    "Its colour is the share of training examples, so far, whose top-k gradient contained it (one scale for "
    "every k, step and dropout rate): bright units are chosen often, dark ones seldom (meSimp would delete "
    "those). Red rings mark the units on <i>this</i> example's path, in both hidden layers (its k largest "
    "output-gradient entries per layer, zero entries excluded). Grey lines: the k strongest weights between "
    "the path's units of layer 1 and layer 2 (darker = larger |weight|), and the path's layer-2 units to the "
    "example's true class. The widget opens on an example the network classifies correctly. Hover a unit for "
    "its id, share and gradient."
)
DROPOUT_CAPTION = (
    " <b>Dropout.</b> The dropout slider switches between two recorded runs: the same network, data order and "
    "seed, trained without dropout (0.0) and with dropout 0.2 after each hidden layer (0.2: the rate with the best "
    "mean dev accuracy of the dense network in the stored dropout suite). With dropout, grey crosses mark the "
    "units this example's training step drops (a fixed mask per example; the prediction shown is made with "
    "that mask): their gradient is zero, so they cannot be on its path, and fewer than k units may light "
    "up. Over training, dropout spreads the choice: "
    "compare the colours at 0.0 and 0.2, where the most-chosen unit is chosen less often and no unit of "
    "layer 2 is left never chosen."
)


def _ys(n: int) -> list[float]:
    return [round(i / max(1, n - 1), 4) for i in range(n)]


def _path_edges(state: dict, y_hidden: list[float], y_out: list[float]) -> list[go.Scatter]:
    """Grey lines of the path: given ``state["edges"]`` (a, b, strength 0..1) the strongest
    connections, shaded by strength; else every pair of selected units."""
    sel = [layer["selected"] for layer in state["layers"]]
    edges = state.get("edges")
    if edges is None:
        edges = [(a, b, 1.0) for a in sel[0] for b in sel[1]]
    traces = []
    for lo, hi, alpha in ((0.0, 0.34, 0.2), (0.34, 0.67, 0.45), (0.67, 1.01, 0.8)):  # three shades
        ex, ey = [], []
        for a, b, v in edges:
            if lo <= v < hi:
                ex += [1, 2, None]
                ey += [y_hidden[a], y_hidden[b], None]
        traces.append(go.Scatter(x=ex, y=ey, mode="lines", line={"color": f"rgba(90,90,90,{alpha})", "width": 1.5},
                                 hoverinfo="skip", showlegend=False, legendgroup="edges"))
    ex, ey = [], []
    for b in sel[1]:
        ex += [2, 3, None]
        ey += [y_hidden[b], y_out[state["label"]], None]
    traces.append(go.Scatter(x=ex, y=ey, mode="lines", line={"color": "rgba(90,90,90,0.35)", "width": 1},
                             hoverinfo="skip", name="path connections (strongest)", legendgroup="edges"))
    return traces


def _dropout_words(state: dict) -> tuple[str, str]:
    """The title's words on dropout: (first line, end of the second line)."""
    p = state.get("dropout", 0.0)
    if not p:
        return "no dropout", ""
    return f"dropout {p}", f"; {sum(len(d) for d in state['dropped'])} of {2 * state['width']} units dropped"


def network_figure(state: dict) -> go.Figure:
    """Layered view: units coloured by selection share, the example's top-k path highlighted."""
    width = state["width"]
    y_hidden = _ys(width)
    y_out = [round(0.1 + 0.8 * i / 9, 4) for i in range(10)]
    sel = [layer["selected"] for layer in state["layers"]]
    cmax = state.get("cmax") or max(1.0, round(100 * max(max(state["shares"][0]), max(state["shares"][1])), 2))
    traces = _path_edges(state, y_hidden, y_out)
    for li, x in enumerate((1, 2)):
        share = state["shares"][li]
        g = state["layers"][li]["g"]
        on = set(sel[li])
        dropped = set(state.get("dropped", [[], []])[li])
        text = [f"hidden layer {li + 1}, unit {j}<br>chosen for {100 * share[j]:.1f}% of examples so far"
                f"<br>this example's gradient: {g[j]:.2e}<br>{'ON' if j in on else 'off'} this example's top-k path"
                + ("<br>dropped by dropout for this example" if j in dropped else "")
                for j in range(width)]
        traces.append(go.Scatter(
            x=[x] * width, y=y_hidden, mode="markers", name=f"hidden layer {li + 1} units",
            marker={"size": 9, "color": [round(100 * s, 2) for s in share], "colorscale": "Viridis", "cmin": 0,
                    "cmax": cmax, "showscale": li == 0,
                    "colorbar": {"title": "% of examples<br>choosing unit", "x": 1.02} if li == 0 else None},
            text=text, hovertemplate="%{text}<extra></extra>", showlegend=False))
        traces.append(go.Scatter(
            x=[x] * len(sel[li]), y=[y_hidden[j] for j in sel[li]], mode="markers",
            name="on this example's path (both hidden layers)", showlegend=li == 0, legendgroup="path",
            marker={"size": 14, "color": "rgba(0,0,0,0)", "line": {"color": "#d62728", "width": 2.5}},
            hoverinfo="skip"))
    dropped = state.get("dropped", [[], []])
    traces.append(go.Scatter(  # always present (maybe empty): every figure has the same traces, for the sliders
        x=[x for x, d in zip((1, 2), dropped) for _ in d], y=[y_hidden[j] for d in dropped for j in d],
        mode="markers", name=f"dropped by dropout {state.get('dropout', 0.0)} for this example",
        showlegend=any(dropped), marker={"symbol": "x-thin", "size": 11, "line": {"color": "#555555", "width": 2}},
        hoverinfo="skip"))
    traces.append(go.Scatter(
        x=[3] * 10, y=y_out, mode="markers+text", text=[str(c) for c in range(10)], textposition="middle right",
        marker={"size": 12, "color": ["#d62728" if c == state["label"] else "#bbbbbb" for c in range(10)]},
        name="output (true class red)", hovertemplate="class %{text}<extra></extra>"))
    fig = go.Figure(traces)
    verdict = "correct" if state["pred"] == state["label"] else f"wrong: predicted {state['pred']}"
    drop = _dropout_words(state)
    fig.update_layout(
        title=f"k = {state['k']} of {width} units per layer, {drop[0]}, after {state['step']} training steps<br>"
              f"example {state['example']}: digit {state['label']}, {verdict}{drop[1]}",
        xaxis={"tickvals": [1, 2, 3], "ticktext": ["hidden 1", "hidden 2", "output"], "range": [0.6, 3.5],
               "title": "layer"},
        yaxis={"visible": False, "range": [-0.05, 1.05]},
        template="plotly_white", height=480, legend={"orientation": "h", "y": -0.15},
        margin={"l": 20, "r": 20, "t": 70, "b": 40},
    )
    return fig


def digit_figure(x, state: dict) -> go.Figure:
    img = x.reshape(28, 28).flip(0)
    fig = go.Figure(go.Heatmap(z=[[round(float(v), 3) for v in row] for row in img], colorscale="gray_r",
                               showscale=False, hovertemplate="pixel value %{z}<extra></extra>"))
    fig.update_layout(title=f"input: digit {state['label']}", height=280, template="plotly_white",
                      xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"},
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


# ----------------------------------------------------------------------------- layer shrinkage

SHRINKAGE_CAPTION = (
    "<b>How to read it.</b> Solid lines: the width of each hidden layer (left axis) after every meSimp prune; "
    "dotted vertical lines: prune events (a unit is deleted when fewer than <i>prune rate</i> x examples seen "
    "chose it since the last prune); black dots: dev accuracy, measured right after each prune (right axis; "
    "no line between them: nothing was measured there); grey dotted line: the dev accuracy of the same network "
    "trained densely on the same data for the same epochs, where it is stored. "
    "<b>Why it can collapse:</b> each example selects k units, so between two prunes the counts add up to "
    "k x examples, and at most k / prune rate units can reach the threshold: k=20 at rate 0.2 keeps at most "
    "100 units, and usually far fewer (a unit chosen by a few % of examples is deleted), which is why that run "
    "ends with a handful of units and a low accuracy. "
    "Shaded epochs only train (odd cycles): the structure is fixed there. Move the sliders to switch between "
    "stored runs; press play to step through the prunes; <i>run live</i> trains the current setting on a small "
    "subset."
)
DENSE_REF = {"color": "#888888", "dash": "dot", "width": 2}


def shrinkage_figure(result: dict, marker_at: int | None = None, dense: dict | None = None) -> go.Figure:
    """meSimp's widths after every prune, the dev accuracy where it was measured, the prune
    marked by ``marker_at``, and a dense run's dev accuracy (``dense``, a stored result) if given."""
    hist = result["widths_history"]
    cfg = result["config"]
    epochs = [h["epoch"] for h in hist]
    n_layers = len(hist[0]["widths"])
    traces = []
    if cfg.get("task") == "pos":  # a BiLSTM: one width per direction
        names = hover = ["forward LSTM cells", "backward LSTM cells"]
    else:
        names = [f"hidden layer {li + 1}" for li in range(n_layers)]
        hover = [f"layer {li + 1}" for li in range(n_layers)]
    for li in range(n_layers):
        traces.append(go.Scatter(x=epochs, y=[h["widths"][li] for h in hist], mode="lines+markers",
                                 line={"shape": "hv", "color": PALETTE[li]}, name=f"{names[li]} width",
                                 hovertemplate=f"{hover[li]}<br>epoch %{{x}}<br>%{{y}} units<extra></extra>"))
    acc = [(h["epoch"], round(100 * h["dev_acc"], 2)) for h in hist if h.get("dev_acc") is not None]
    traces.append(go.Scatter(x=[a for a, _ in acc], y=[b for _, b in acc], yaxis="y2", mode="markers",
                             marker={"color": "#222222", "size": 8}, name="dev accuracy after prune (%)",
                             hovertemplate="epoch %{x}<br>dev %{y:.2f}%<extra></extra>"))
    if dense is not None:
        pts = [(round(p["epoch"], 3), round(100 * p["dev_acc"], 2)) for p in dense["history"]]
        traces.append(go.Scatter(x=[a for a, _ in pts], y=[b for _, b in pts], yaxis="y2", mode="lines+markers",
                                 line=DENSE_REF, marker={"size": 5}, name="dense, same data and epochs: dev (%)",
                                 hovertemplate="dense<br>epoch %{x}<br>dev %{y:.2f}%<extra></extra>"))
    m = marker_at if marker_at is not None else len(hist) - 1
    m = max(0, min(m, len(hist) - 1))
    traces.append(go.Scatter(x=[epochs[m]] * n_layers, y=hist[m]["widths"], mode="markers",
                             marker={"size": 14, "symbol": "diamond", "color": "#d62728"},
                             name=f"prune #{m}: widths {hist[m]['widths']}", hoverinfo="skip"))
    shapes = [{"type": "line", "x0": e, "x1": e, "y0": 0, "y1": 1, "yref": "paper",
               "line": {"dash": "dot", "width": 1, "color": "#bbbbbb"}} for e in epochs[1:]]
    ce = cfg["cycle_epochs"]
    for c in range(1, cfg["epochs"] // ce + 1, 2):
        shapes.append({"type": "rect", "x0": c * ce, "x1": min(cfg["epochs"], (c + 1) * ce), "y0": 0, "y1": 1,
                       "yref": "paper", "fillcolor": "rgba(100,100,100,0.08)", "line": {"width": 0}})
    fig = go.Figure(traces)
    live = " (live run)" if result.get("live") else ""
    cap = int(cfg["k"] / cfg["prune_rate"])
    fig.update_layout(
        title=f"meSimp, k={cfg['k']}, prune rate {cfg['prune_rate']}{live}: final widths {hist[-1]['widths']}"
              f"<br><sup>at most k / rate = {cap} units can survive a prune; last dev accuracy "
              f"{f'{acc[-1][1]:.1f}%' if acc else 'not measured'}</sup>",
        xaxis_title="epoch", yaxis={"title": "units in the layer", "rangemode": "tozero"},
        yaxis2={"title": "dev accuracy (%)", "overlaying": "y", "side": "right", "range": [0, 100],
                "tickmode": "linear", "tick0": 0, "dtick": 20, "showgrid": False},
        shapes=shapes, template="plotly_white", height=440, legend={"orientation": "h", "y": -0.2},
        margin={"l": 60, "r": 60, "t": 70, "b": 40},
    )
    return fig


# ----------------------------------------------------------------------------- k explorer

K_CAPTION = (
    "<b>How to read it.</b> Left: test accuracy against k (log axis; 500 = every unit) for meProp top-k (blue), "
    "random-k (green) and a dense network whose hidden layers have only k units (purple), mean over 3 seeds with "
    "the spread as error bars, from the stored experiment grid; the grey dotted line is the ordinary dense "
    "network of 500 units; the black dashed line marks the chosen k. Right: one dev example's output gradient "
    "in the second hidden layer, its 500 entries <i>sorted by magnitude</i>: blue bars are the k entries meProp "
    "keeps (the largest), grey the ones it drops; the black curve (right axis) is the share of the gradient's "
    "L2 mass (sum of squares) the largest entries carry, read at the dashed line for the chosen k. Only the kept "
    "units' weight rows get a gradient. The network on the right is trained live when the widget opens: one "
    "dense epoch on 5,000 images with plain SGD (lr 0.1), so the gradient is the one backprop computes and no "
    "optimizer state shapes it; the stored accuracy runs on the left used Adam, like the paper."
)
K_COLORS = {"meProp top-k": "#636efa", "random-k": "#00cc96", "dense MLP, h = k": "#ab63fa"}
K_MARK = {"color": "#222222", "width": 2, "dash": "dash"}  # the chosen k, in both panels


def k_curves_figure(curves: dict, k: int, dense: tuple[float, float] | None = None) -> go.Figure:
    """Accuracy against k per method (``curves``: label -> (ks, means, sds)), the chosen ``k``
    marked, and the dense 500-unit network's (mean, sd) as a horizontal line when given."""
    traces = []
    for i, (label, (xs, ys, sds)) in enumerate(curves.items()):
        traces.append(go.Scatter(x=xs, y=ys, error_y={"type": "data", "array": sds, "visible": True},
                                 mode="lines+markers", name=label, line={"color": K_COLORS.get(label, PALETTE[i])},
                                 hovertemplate=f"{label}<br>k=%{{x}}<br>%{{y:.2f}}%<extra></extra>"))
    ks = sorted({x for xs, _, _ in curves.values() for x in xs} | {k})
    if dense is not None:
        traces.append(go.Scatter(x=[min(ks), 500], y=[round(dense[0], 2)] * 2, mode="lines",
                                 line={"color": "#888888", "dash": "dot", "width": 2},
                                 name=f"dense, 500 units: {dense[0]:.2f}%",
                                 hovertemplate=f"dense 500 units<br>{dense[0]:.2f} ± {dense[1]:.2f}%<extra></extra>"))
    empty = not any(xs for xs, _, _ in curves.values())
    fig = go.Figure(traces)
    fig.update_layout(
        title=f"Test accuracy against k (k = {k} marked)" + (": no stored grid results yet" if empty else ""),
        xaxis={"type": "log", "title": "k (entries kept per example, of 500)", "tickvals": ks + [500],
               "ticktext": [str(v) for v in ks + [500]], "minor": {"showgrid": False}},
        yaxis={"title": "test accuracy (%)"},
        shapes=[{"type": "line", "x0": k, "x1": k, "y0": 0, "y1": 1, "yref": "paper", "line": K_MARK}],
        template="plotly_white", height=400, legend={"orientation": "h", "y": -0.22},
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
    )
    return fig


def kept_share(g: list[float]) -> list[float]:
    """Cumulative share of the squared L2 norm carried by the 1, 2, ... largest entries of ``g``."""
    sq = sorted((v * v for v in g), reverse=True)
    total = sum(sq) or 1.0
    out, acc = [], 0.0
    for v in sq:
        acc += v
        out.append(acc / total)
    return out


def gradient_figure(grad: dict) -> go.Figure:
    """One example's output gradient sorted by |entry|: the kept ones coloured, the cumulative
    share of the L2 mass on a second axis, the chosen k marked; the kept share in the title."""
    g = grad["g"]
    on = set(grad["selected"])
    order = sorted(range(len(g)), key=lambda j: -abs(g[j]))
    share = kept_share(g)
    kept = sum(g[j] ** 2 for j in on) / (sum(v * v for v in g) or 1.0)
    rank = list(range(1, len(g) + 1))
    fig = go.Figure([
        go.Bar(x=rank, y=[round(abs(g[j]), 6) for j in order], name="|dL/dy| of an entry",
               marker={"color": ["#636efa" if j in on else "#c7c7c7" for j in order], "line": {"width": 0}},
               customdata=order, hovertemplate="rank %{x}: unit %{customdata}<br>|dL/dy| = %{y:.2e}<extra></extra>"),
        go.Scatter(x=rank, y=[round(100 * v, 2) for v in share], yaxis="y2", mode="lines", name="share of L2 mass",
                   line={"color": "#222222", "width": 2},
                   hovertemplate="largest %{x} entries: %{y:.1f}% of the sum of squares<extra></extra>"),
    ])
    fig.update_layout(
        title=f"Example {grad['example']} (digit {grad['label']}): k = {grad['k']} of {len(g)} entries kept<br>"
              f"carry {100 * kept:.1f}% of the gradient's L2 mass",
        xaxis={"title": "entries of hidden layer 2, largest |gradient| first (rank)", "type": "log",
               "range": [-0.05, 2.75], "tickvals": [1, 2, 5, 10, 20, 50, 100, 200, 500]},
        yaxis={"title": "|dL/dy| (kept: blue)", "rangemode": "tozero"},
        yaxis2={"title": "cumulative share of L2 mass (%)", "overlaying": "y", "side": "right", "range": [0, 101],
                "tickvals": [0, 20, 40, 60, 80, 100], "showgrid": False},
        shapes=[{"type": "line", "x0": grad["k"] + 0.5, "x1": grad["k"] + 0.5, "y0": 0, "y1": 1, "yref": "paper",
                 "line": K_MARK}],
        template="plotly_white", height=400, showlegend=False, margin={"l": 60, "r": 60, "t": 60, "b": 40},
    )
    return fig



"""The house rules of issue 18, measured: module sizes, function sizes, import circles, upward imports.

    python tools/house.py            # a report; exit 1 when a rule is broken

Layers (each may import only from its own layer or below):
    0 base: validate, files, children, notebook
    1 methods: fused, selection, stats, meprop, lstm*, mesimp, simplifier*, units*, meact, lazy, native*
    2 tasks: tasks.*, checkpoint
    3 training: config, training, results
    4 experiments: experiments*, grid, nlp_grid, recordings, runner, tables, suites*
    5 top: bench*, diagnostics, cli, viz.*, exercises.*, __main__, __init__
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "mesimp_lib"
MAX_MODULE, MAX_FUNCTION = 500, 100
LAYERS = [
    ("base", ("validate", "files", "children", "notebook")),
    ("methods", ("fused", "selection", "stats", "meprop", "lstm", "mesimp", "simplifier", "units", "meact", "lazy",
                 "native")),
    ("tasks", ("tasks", "checkpoint")),
    ("training", ("config", "training", "results")),
    ("experiments", ("experiments", "grid", "nlp_grid", "recordings", "runner", "tables", "suites")),
    ("top", ("bench", "diagnostics", "cli", "viz", "exercises", "__main__", "__init__")),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(mod: str) -> int:
    """The layer of a module: the first layer one of whose names starts the module's first part."""
    head = mod.split(".")[0]
    return next((i for i, (_name, prefixes) in enumerate(LAYERS) if head.startswith(prefixes)), len(LAYERS) - 1)


def imports(path: Path, mod: str) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg = mod.split(".")[:-1] if path.name != "__init__.py" else mod.split(".")
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("mesimp_lib"):
                target = node.module[len("mesimp_lib."):] if node.module != "mesimp_lib" else ""
            else:
                continue
            names = [a.name for a in node.names]
            for n in names if not node.module or target == "" else [None]:
                t = ".".join(x for x in (target, n) if x) if n else target
                out.add(t)
            if node.module:
                out.add(target)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("mesimp_lib."):
                    out.add(a.name[len("mesimp_lib."):])
    mods = {module_name(p) for p in ROOT.rglob("*.py")}
    return {t for t in out if t in mods and t != mod and t}


def functions(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            n = node.end_lineno - node.lineno + 1
            if isinstance(node, ast.ClassDef):
                continue
            yield node.name, node.lineno, n


def main() -> int:
    files = sorted(p for p in ROOT.rglob("*.py"))
    bad = 0
    graph = {}
    for p in files:
        mod = module_name(p)
        graph[mod] = imports(p, mod)
        lines = len(p.read_text().splitlines())
        if lines > MAX_MODULE:
            print(f"module over {MAX_MODULE} lines: {p.relative_to(ROOT.parent)} ({lines})")
            bad += 1
        for name, line, n in functions(p):
            if n > MAX_FUNCTION:
                print(f"function over {MAX_FUNCTION} lines: {p.relative_to(ROOT.parent)}:{line} {name} ({n})")
                bad += 1
    for mod, deps in sorted(graph.items()):
        for d in sorted(deps):
            if layer_of(d) > layer_of(mod):
                print(f"upward import: {mod} ({LAYERS[layer_of(mod)][0]}) -> {d} ({LAYERS[layer_of(d)][0]})")
                bad += 1
    # circles: strongly connected components of the module graph (package __init__ re-exports aside)
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w.endswith("__init__") or w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    for comp in comps:
        print("import circle: " + " <-> ".join(comp))
        bad += 1
    print(f"{len(files)} modules, {sum(len(p.read_text().splitlines()) for p in files)} lines; {bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers the notebooks' self-checks share (not part of a notebook's interface)."""

from __future__ import annotations


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def points(x: float) -> str:
    """A difference of two accuracies (fractions) in percentage points."""
    return f"{100 * x:+.2f} points"


def run_label(result: dict) -> str:
    """A short description of a ``train`` result: method, k, mode, optimizer."""
    c = result["config"]
    k = "" if c["method"] == "dense" else f" k={c['k']}"
    mode = f" {c['mode']}" if c["method"] == "meprop" else ""
    return f"{c['method']}{k}{mode} ({c['optimizer']})"


def find_run(results: dict, optimizer: str, **match) -> tuple[str, dict] | None:
    """The first ``(name, result)`` in ``results`` whose config has ``optimizer`` and every ``match`` value."""
    for name, r in results.items():
        c = r.get("config", {}) if isinstance(r, dict) else {}
        if c.get("optimizer") == optimizer and all(c.get(key) == value for key, value in match.items()):
            return name, r
    return None


def unanswered(fb, answer, what: str) -> bool:
    """Record a failing line asking for ``what`` when ``answer`` is None; True if so (the caller then stops,
    so the check never gives the answer away)."""
    if answer is not None:
        return False
    fb.check(False, "", f"set {what}, then run this cell again")
    return True


def first_unanswered(fb, **answers) -> bool:
    """``unanswered`` for several named answers: asks for the first one that is None."""
    return any(unanswered(fb, value, name) for name, value in answers.items())

"""Self-checks for the notebooks' exercises.

One module per notebook (``nb00`` for ``00_start_here.ipynb``, ...), each with
``check_exercise_N(...)`` functions a learner calls with their answer. A check never
raises on a wrong answer: it returns a :class:`Feedback` that says what is right or
wrong and prints itself readably in a notebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Feedback"]


@dataclass
class Feedback:
    """The verdict of one self-check: ``ok`` and one line per point checked."""

    exercise: str
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def check(self, condition: bool, right: str, wrong: str) -> bool:
        """Record one point: ``right`` if ``condition`` holds, else ``wrong`` (and fail)."""
        condition = bool(condition)
        self.lines.append(("✔ " if condition else "✘ ") + (right if condition else wrong))
        self.ok = self.ok and condition
        return condition

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = f"{self.exercise}: " + ("all checks pass" if self.ok else "not yet, see the ✘ lines")
        return "\n".join([head, *("  " + line for line in self.lines)])

    def _repr_pretty_(self, p, cycle) -> None:  # IPython shows the readable text
        p.text(str(self))

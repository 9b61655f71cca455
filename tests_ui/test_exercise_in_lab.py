"""Notebook 00's first exercise done in JupyterLab as a learner does it (Debian chromium).

Open a temporary copy of notebooks/00_start_here.ipynb, clear its outputs and run the cells the
exercise needs (the imports, the tiny layer, the checkpoint, the self-check) by clicking into
each and pressing Shift+Enter. As stored (k=2) the self-check must say "not yet": this shows the
test reads a failing verdict as failing. Then change ``k=2`` to ``k=8`` by typing in the tiny
layer's cell, clear and run the cells again: no cell may show an error (at k >= width the
exercise used to end in an AttributeError and a TypeError), the checkpoint must pass, all 8 rows
of W must get a gradient and the self-check must say "all checks pass" with no ✘ line.
Two screenshots (the edited cells, the verdict) land in screenshots/ (gitignored)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from uihelpers import KERNEL_JS, PROGRESS_JS, ROOT, clear_outputs, open_in_lab, strip_ansi

NOTEBOOK = "notebooks/00_start_here.ipynb"
K_STORED, K_ASKED, WIDTH = 2, 8, 8
SCREENSHOTS = ROOT / "screenshots"
ERROR_TEXT = re.compile(r"Traceback|AttributeError|TypeError|Error:")


def exercise_cells(nb_file: Path) -> dict[str, int]:
    """Indices of the cells the exercise needs, found by their source."""
    cells = json.loads(nb_file.read_text())["cells"]
    code = [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"]

    def find(what: str, *parts: str) -> int:
        hits = [i for i, src in code if all(p in src for p in parts)]
        assert len(hits) == 1, f"{nb_file.name}: expected one {what} cell with {parts}, found cells {hits}"
        return hits[0]

    return {
        "setup": code[0][0],
        "layer": find("tiny layer", "MePropLinear(", "out_features=8", f"k={K_STORED}"),
        "checkpoint": find("checkpoint", "assert torch.allclose(x.grad"),
        "check": find("self-check", "check_exercise_1("),
    }


def run_cells(page, panel, indices: list[int], timeout_s: float = 180) -> dict[int, str]:
    """Click into each cell's editor and press Shift+Enter, as a learner does; wait until all ran
    and the kernel is idle. Fails on the first cell with an error. Returns each cell's output text."""
    for i in indices:
        panel.locator(".jp-Cell").nth(i).locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
    deadline = time.monotonic() + timeout_s
    while True:
        progress = {i: (n, errs) for i, _src, n, errs in page.evaluate(PROGRESS_JS)}
        errors = [(i, e) for i in indices for e in progress[i][1]]
        assert not errors, f"cell {errors[0][0]} failed:\n{strip_ansi(errors[0][1])[-3000:]}"
        pending = [i for i in indices if progress[i][0] is None]
        if not pending and page.evaluate(KERNEL_JS)[1] == "idle":
            break
        assert time.monotonic() < deadline, f"cells {pending} not run after {timeout_s} s"
        page.wait_for_timeout(300)
    return {i: "\n".join(panel.locator(".jp-Cell").nth(i).locator(".jp-OutputArea-output").all_inner_texts())
            for i in indices}


def type_k(page, panel, i: int, old: str, new: str) -> None:
    """Replace the first ``old`` in cell ``i`` by ``new`` with the keyboard: click into the
    editor, go to its start, walk to ``old`` and select it, type ``new``."""
    source = page.evaluate(f"() => window.__uiNotebook.content.widgets[{i}].model.sharedModel.getSource()")
    at = source.index(old)
    panel.locator(".jp-Cell").nth(i).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Home")
    for _ in range(at):
        page.keyboard.press("ArrowRight")
    for _ in range(len(old)):
        page.keyboard.press("Shift+ArrowRight")
    page.keyboard.type(new)
    page.keyboard.press("Escape")  # back to command mode
    edited = page.evaluate(f"() => window.__uiNotebook.content.widgets[{i}].model.sharedModel.getSource()")
    assert edited == source.replace(old, new, 1), f"typing did not give the expected source:\n{edited}"


def assert_no_error_in_page(panel, what: str) -> None:
    texts = panel.locator(".jp-OutputArea-output").all_inner_texts()
    bad = [t for t in texts if ERROR_TEXT.search(t)]
    assert not bad, f"{what}: an output shows an error:\n{bad[0][-3000:]}"


def do_exercise_1(page, lab, rel: str, shot: Path) -> dict:
    """The whole exercise in the page (see the module docstring); returns what it saw."""
    t0 = time.monotonic()
    cells = exercise_cells(lab.root / rel)
    panel = page.locator(f"#{open_in_lab(page, lab, rel)}")
    clear_outputs(page)

    out = run_cells(page, panel, [cells["setup"], cells["layer"], cells["checkpoint"], cells["check"]])
    stored = out[cells["check"]].strip()
    assert stored.startswith("00, exercise 1: not yet"), f"as stored (k={K_STORED}) the self-check said:\n{stored}"
    assert "✘" in stored, stored

    type_k(page, panel, cells["layer"], f"k={K_STORED}", f"k={K_ASKED}")
    clear_outputs(page)
    out = run_cells(page, panel, [cells["layer"], cells["checkpoint"], cells["check"]])
    assert_no_error_in_page(panel, f"{rel} at k={K_ASKED}")
    assert f"({WIDTH} of {WIDTH})" in out[cells["layer"]], out[cells["layer"]]
    assert "checkpoint passed" in out[cells["checkpoint"]], out[cells["checkpoint"]]
    verdict = out[cells["check"]].strip()
    lines = verdict.splitlines()
    assert lines[0] == "00, exercise 1: all checks pass", f"at k={K_ASKED} the self-check said:\n{verdict}"
    assert "✘" not in verdict and sum(line.strip().startswith("✔") for line in lines[1:]) == 3, verdict

    shot.parent.mkdir(exist_ok=True)
    for cell, suffix in ((cells["layer"], "-cells"), (cells["check"], "")):  # the edited cells, then the verdict
        panel.locator(".jp-Cell").nth(cell).evaluate("el => el.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(shot.with_stem(shot.stem + suffix)))
    return {"stored": stored, "verdict": verdict, "seconds": round(time.monotonic() - t0)}


def test_exercise_1_at_k8_in_lab(page, lab):
    seen = do_exercise_1(page, lab, NOTEBOOK, SCREENSHOTS / "lab-00-exercise1-k8.png")
    print(f"{NOTEBOOK} exercise 1 in {seen['seconds']} s; as stored:\n{seen['stored']}\n"
          f"at k={K_ASKED}:\n{seen['verdict']}")

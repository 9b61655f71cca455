"""One-off: add ``--kernel torch`` to the stored command of every stored result made with the PyTorch backward.

The library default kernel became "auto" (commit 630f270); the stored results under data/results/<suite>/*.json
were made with the PyTorch backward (kernel "torch", the default then; results older than the field have no
"kernel" in their config and were made with the only backward there was, PyTorch's), and their "command"
strings lack ``--kernel torch``: run today, such a command would take the compiled kernels, whose sums round
differently, and would not reproduce the stored numbers. This script adds ``--kernel torch`` to those commands
(before ``--json`` when there is one), for the MNIST and parse tasks (the POS tagger's LSTM ignores the field:
those are left as they are), and changes nothing else: each file is re-serialised with the writer's settings
(``results.write_json_atomic``), and the script checks that the file's text was reproduced exactly before the
change and that only the command line differs after it.

    python tools/pin_stored_kernel.py            # change the files, print what changed
    python tools/pin_stored_kernel.py --check    # only count the files that would change
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "data" / "results"
TASKS = ("mnist", "parse")  # pos: the LSTM layers pick their own backward (the field is ignored)


def dumps(obj) -> str:
    """The text ``results.write_json_atomic`` writes."""
    return json.dumps(obj, indent=1, sort_keys=False, allow_nan=False) + "\n"


def pinned(command: str) -> str:
    """``command`` with ``--kernel torch`` (before ``--json`` if there is one)."""
    head, sep, tail = command.partition(" --json ")
    return f"{head} --kernel torch{sep}{tail}"


def needs_pin(result: dict) -> bool:
    config = result.get("config")
    command = result.get("command")
    if not isinstance(config, dict) or not isinstance(command, str) or " train " not in f"{command} ":
        return False
    return (config.get("task", "mnist") in TASKS and config.get("kernel", "torch") == "torch"
            and "--kernel" not in command.split())


def pin_file(path: Path, write: bool) -> bool:
    """Pin one file; True if it changed (or would). Raises if the file's text is not the writer's."""
    text = path.read_text(encoding="utf-8")
    result = json.loads(text)
    if not isinstance(result, dict) or not needs_pin(result):
        return False
    if dumps(result) != text:
        raise SystemExit(f"{path}: not written by results.write_json_atomic's settings; left unchanged")
    new = dumps({**result, "command": pinned(result["command"])})
    changed = [line for line in difflib.ndiff(text.splitlines(), new.splitlines()) if line[:1] in "+-"]
    if len(changed) != 2 or not all(line[2:].startswith(' "command": ') for line in changed):
        raise SystemExit(f"{path}: the change would touch more than the command line: {changed}")
    if write:
        path.write_text(new, encoding="utf-8")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="count the files that would change; change nothing")
    args = parser.parse_args(argv)
    files = sorted(ROOT.rglob("*.json"))
    changed = [f for f in files if pin_file(f, write=not args.check)]
    for f in changed:
        print(f.relative_to(ROOT.parent.parent))
    print(f"{len(changed)} of {len(files)} stored result files {'to change' if args.check else 'changed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m mesimp_lib train ...`` and ``python -m mesimp_lib bench ...``.

Every ``TrainConfig`` field is a flag (``--batch-size`` for ``batch_size``); bad arguments
exit with status 2 and one line naming the argument.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from .children import die_with_parent
from .config import TrainConfig
from .tasks import TASKS as TASK_CLASSES
from .validate import SEED_MAX, check_choice, check_device, check_float, check_int


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number_or_none(kind):
    def parse(text: str):
        if text.lower() in ("none", "null", ""):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'none'") from None

    parse.__name__ = kind.__name__
    return parse


def _k_value(text: str):
    """'none' / 'dense' -> None, '20' -> 20, '0.05' -> 0.05."""
    if text.lower() == "dense":
        return None
    for kind in (int, float) if text.strip() else ():  # an empty value is refused, not read as none
        try:
            return _number_or_none(kind)(text)
        except argparse.ArgumentTypeError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not an int, a fraction or 'none'")


def _widths(text: str):
    """'500' -> 500, '150,140' -> [150, 140]."""
    try:
        parts = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a width or a comma-separated list of widths") from None
    return parts[0] if len(parts) == 1 else parts


def _checked(check, *args, **kwargs):
    """An argparse type: the text as an int / float (by ``check``'s kind) or as is, checked by ``check``;
    argparse then names the flag in its exit-2 message."""
    def parse(text: str):
        value = text
        if check in (check_int, check_float):
            kind = int if check is check_int else float
            try:
                value = kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not {'an int' if kind is int else 'a number'}") from None
        try:
            return check("value", value, *args, **kwargs)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).replace("value=", "", 1)) from None

    parse.__name__ = check.__name__
    return parse


def _seed_list(text: str) -> list[int]:
    """'1' -> [1], '1,2' -> [1, 2] (each a valid seed)."""
    check = _checked(check_int, 0, SEED_MAX)
    return [check(t) for t in text.split(",")]


def _flag_type(f):
    """The argparse type of a config field, from its declared kind (``config.KINDS``); None: the text as is."""
    kind, optional = f.metadata["kind"], f.metadata["optional"]
    if kind in ("int", "float"):
        parse = int if kind == "int" else float
        return _number_or_none(parse) if optional else parse
    return {"k": _k_value, "sizes": _widths}.get(kind)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field, generated from its declaration (help, kind, choices, default)."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kw = {"dest": f.name, "default": f.default, "help": f.metadata["help"]}
        if f.metadata["kind"] == "bool":
            p.add_argument(flag, action="store_true", **kw)
            continue
        if _flag_type(f) is not None:
            kw["type"] = _flag_type(f)
        if f.metadata["choices"]:
            kw["choices"] = f.metadata["choices"]
        if f.default is not None or not f.metadata["choices"]:  # an optional choice's help says what unset means
            kw["help"] += f" (default: {'none' if f.default is None else f.default})"
        p.add_argument(flag, **kw)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` of parsed ``train`` arguments (raises the config's error for a bad value)."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m mesimp_lib", description="meSimp Lab: meProp / meSimp experiments.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train one model and print/write its result")
    _add_config_flags(t)
    t.add_argument("--json", metavar="PATH", help="write the full result as JSON (atomically)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--save-model", metavar="PATH", help="save the trained (possibly simplified) model, atomically")
    b = sub.add_parser("bench", help="backward-speed benchmark (PERFORMANCE.md method)")
    b.add_argument("--quick", action="store_true", help="a small grid (seconds, for tests)")
    b.add_argument("--json", metavar="PATH", help="write the results as JSON")
    b.add_argument("--markdown", metavar="PATH", help="write the table as Markdown (benchmarks/RESULTS.md)")
    b.add_argument("--rounds-scale", type=_checked(check_float, 0.0, 1000.0, lo_open=True), default=1.0,
                   help="multiply the number of timing rounds")
    e = sub.add_parser("experiment", help="run a stored experiment suite resumably")
    e.add_argument("suite", help="suite name, or 'all'")
    e.add_argument("--jobs", type=_checked(check_int, 1, 256), default=1, help="runs in parallel (1 thread each)")
    e.add_argument("--dry-run", action="store_true", help="list the missing runs only")
    e.add_argument("--seeds", type=_seed_list, default=None,
                   help="only runs with these seeds, e.g. 1 or 1,2 (default: all)")
    e.add_argument("--device", default=None, type=_checked(check_device),
                   help="run on this device instead (e.g. cuda); stored runs count as done whatever their device")
    e.add_argument("--only", default=None, type=lambda t: t.split(","),
                   help="only runs whose name starts with one of these comma-separated prefixes")
    e.add_argument("--verify", action="store_true",
                   help="re-compute the suite's stored runs in this process and check they are identical")
    s = sub.add_parser("summarize", help="print the result tables from data/results")
    s.add_argument("--readme", metavar="PATH", help="also rewrite the tables between the markers in PATH")
    return parser


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def summary(result: dict) -> str:
    c = result["config"]
    t = result["timing"]
    metric = TASK_CLASSES[c["task"]].metric
    lines = [
        f"{c['method']} on {c['task']}: {result['command'].replace(' --json OUT.json', '')}",
        f"  best dev {metric:10s} {_pct(result['best_dev_acc'])} at epoch {result['best_epoch']:.2f}",
        f"  test {metric:14s} {_pct(result['test_acc'])} (at the best dev point)"
        + (f"; test LAS {_pct(result['test_las'])}" if "test_las" in result else ""),
        f"  backprop ratio      {_pct(result['backprop_ratio'])} of each hidden layer's output gradient",
        f"  hidden widths       {result['widths']}",
        f"  time                forward {t['forward_s']:.1f} s, backward {t['backward_s']:.1f} s, "
        f"optimizer {t['update_s']:.1f} s, eval {t['eval_s']:.1f} s, total {t['total_s']:.1f} s",
    ]
    if "final_widths" in result:
        steps = " -> ".join(str(h["widths"]) for h in result["widths_history"][:: max(1, len(result["widths_history"]) // 6)])
        lines.append(f"  final widths        {result['final_widths']} (average {result['average_width']}); "
                     f"parameters {result['params']['ratio']:.1%} of the start")
        lines.append(f"  widths over time    {steps} -> {result['final_widths']}")
    if result.get("finite") is False:
        lines.append(f"  WARNING             the run diverged: non-finite (NaN/inf) values, stored as null: "
                     f"{', '.join(result['non_finite_values'][:3])}...")
    rows = result["rows"]
    if rows["with_grad"]:
        wg = ", ".join(_pct(v) for v in rows["with_grad"])
        ch = ", ".join(_pct(v) for v in rows["changed"])
        lines.append(f"  weight rows/step    with a gradient {wg}; really changed by {c['optimizer']} {ch}")
    return "\n".join(lines)


def main(argv=None) -> int:
    die_with_parent()  # a run started by an experiment suite ends with the suite (even on SIGKILL)
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return _train(args)
    if args.command == "bench":
        from .bench import run_cli

        if not _outputs_writable("bench", ("--json", args.json), ("--markdown", args.markdown)):
            return 2
        return run_cli(args)
    from . import experiments

    if args.command == "experiment":
        return _experiment(args, experiments)
    try:
        for suite in [*experiments.SUITES, "mesimp_inference"]:
            print(f"## {suite}\n\n{experiments.summarize_suite(suite)}")
        if args.readme:
            experiments.update_readme(args.readme)
    except (ValueError, FileNotFoundError) as e:  # a damaged results file: named, with how to restore it
        print(f"python -m mesimp_lib summarize: error: {e}", file=sys.stderr)
        return 1
    return 0


def _experiment(args, experiments) -> int:
    """``experiment SUITE``: run (or ``--verify``) a suite; bad names exit 2, failed runs exit 1."""
    known = [*experiments.SUITES, "mesimp_inference", "widgets"]
    trained = list(experiments.SUITES) if args.verify else known  # --verify re-trains: training suites only
    try:
        check_choice("suite", args.suite, ["all", *trained])
    except ValueError as e:
        print(f"python -m mesimp_lib experiment: error: argument suite: {e}"
              f"{' (--verify re-trains: the training suites only)' if args.verify else ''}", file=sys.stderr)
        return 2
    suites = [s for s in experiments.ALL if s in trained] if args.suite == "all" else [args.suite]
    if args.verify:
        ok = all(experiments.verify_suite(suite) for suite in suites)
        print("all identical" if ok else "some runs differ from their stored results")
        return 0 if ok else 1
    try:
        for suite in suites:
            experiments.run_suite(suite, jobs=args.jobs, dry_run=args.dry_run, seeds=args.seeds, device=args.device,
                                  names=args.only)
    except ValueError as e:  # a damaged stored result: named, with how to restore it
        print(f"python -m mesimp_lib experiment: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # runs that failed (the others are stored)
        print(f"python -m mesimp_lib experiment: error: {e}", file=sys.stderr)
        return 1
    return 0


def _outputs_writable(command: str, *flags: tuple[str, str | None]) -> bool:
    """Check the output paths BEFORE the long part (a result must never be lost to an unwritable path at
    the end); prints the error naming the flag."""
    from .files import check_output_path

    try:
        for flag, path in flags:
            if path:
                check_output_path(path, flag)
    except ValueError as e:
        print(f"python -m mesimp_lib {command}: error: {e}", file=sys.stderr)
        return False
    return True


def _train(args) -> int:
    from .training import train

    try:
        config = config_from_args(args)
    except ValueError as e:
        name = getattr(e, "name", None)
        flag = f"argument --{name.split('[')[0].replace('_', '-')}: " if name else ""
        print(f"python -m mesimp_lib train: error: {flag}{e}", file=sys.stderr)
        return 2
    if args.save_model and config.task != "mnist":
        print("python -m mesimp_lib train: error: --save-model is implemented for the MNIST MLP only "
              f"(got --task {config.task})", file=sys.stderr)
        return 2
    if not _outputs_writable("train", ("--json", args.json), ("--save-model", args.save_model)):
        return 2
    try:
        result = train(config, progress=not args.quiet, return_model=bool(args.save_model))
    except (FileNotFoundError, ValueError) as e:
        print(f"python -m mesimp_lib train: error: {e}", file=sys.stderr)
        return 1
    model = result.pop("model", None)
    print(summary(result))
    return _write_outputs(args, result, model)


def _write_outputs(args, result: dict, model) -> int:
    """The result JSON first, then the model. A write that fails after training (the disk filled up, the
    folder went away) leaves the result in a rescue file in the temporary folder, and says where."""
    import tempfile
    from pathlib import Path

    from .results import write_json_atomic

    try:
        if args.json:
            print(f"  wrote {write_json_atomic(args.json, result)}")
        if args.save_model:
            from .checkpoint import save_model

            extra = {"command": result["command"], "final_test_acc": result["final_test_acc"]}
            print(f"  saved the model to {save_model(model, args.save_model, extra=extra)}")
    except OSError as e:
        rescue = write_json_atomic(Path(tempfile.gettempdir()) / f"mesimp-result-{os.getpid()}.json", result)
        print(f"python -m mesimp_lib train: error: writing the output failed after training ({e}); the result "
              f"is kept in {rescue}", file=sys.stderr)
        return 1
    return 0

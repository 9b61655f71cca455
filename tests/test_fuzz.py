"""Property-based fuzz of the public constructors and the command line (issue 17).

Every case replaces ONE argument of a small valid call by a value from a pool of odd inputs
(wrong types, bools, strings, floats where ints go, NaN / inf, huge ints, empty containers) and
checks: the call succeeds when the value is valid for that argument; otherwise it raises a
``ValueError`` / ``TypeError`` (the CLI: exit status 2) whose message names the argument. Anything
else counts as "other": another exception, a success with an invalid value (silent coercion), or
an error for a valid value.

``python tests/test_fuzz.py`` tries every (argument, value) pair once and prints the counts
(tried / success / clean error / other) and the "other" cases; the pytest tests below draw the
same cases with hypothesis (bounded, well under a minute), plus several arguments at once.

Counts of ``python tests/test_fuzz.py`` (issue 17): on the library before the fixes (e8c2854) 4404 tried,
458 success, 2592 clean error, 1354 other (645 silent coercions, 524 errors not naming the argument, 132
other exceptions, 23 errors for valid values such as ``seed=np.int64(3)``); after: 4404 tried, 481 success,
3923 clean error, 0 other. With the merged layer-contract and authors' options (more arguments, rescale
refused outside random-k): 4430 tried, 479 success, 3951 clean error, 0 other.
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
import re
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesimp_lib import cli, training
from mesimp_lib.checkpoint import load_model
from mesimp_lib.lazy import LazyAdam, LazySGD
from mesimp_lib.lstm import LSTMSimplifier, MePropLSTM
from mesimp_lib.meact import MeAct
from mesimp_lib.meprop import MePropLinear
from mesimp_lib.mesimp import ActivityRecord, Simplifier
from mesimp_lib.tasks.mnist import MLP, load_mnist, read_idx
from mesimp_lib.tasks.parser import ParserModel
from mesimp_lib.tasks.pos import BiLSTMTagger
from mesimp_lib.tasks.ud import load_ud, read_conllu
from mesimp_lib.training import TrainConfig

# ----------------------------------------------------------------------------- what is valid

SEED_MAX = 2**64 - 1


def _int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _num(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _k(v):  # None, an int count >= 0, or a fraction in [0, 1]
    return v is None or (_int(v) and v >= 0) or (isinstance(v, float) and math.isfinite(v) and 0 <= v <= 1)


KINDS = {
    "pos_int": lambda v: _int(v) and 1 <= v < 2**31,
    "nonneg_int": lambda v: _int(v) and 0 <= v < 2**31,
    "seed": lambda v: _int(v) and 0 <= v <= SEED_MAX,
    "opt_pos_int": lambda v: v is None or (_int(v) and 1 <= v < 2**31),
    "bool": lambda v: isinstance(v, (bool, np.bool_)),
    # rescale=True is for random-k only, so with the default (top-k) mode only False is valid
    "rescale": lambda v: isinstance(v, (bool, np.bool_)) and not v,
    "opt_bool": lambda v: v is None or isinstance(v, (bool, np.bool_)),
    "pos_float": lambda v: _num(v) and v > 0,
    "opt_pos_float": lambda v: v is None or (_num(v) and v > 0),
    "nonneg_float": lambda v: _num(v) and v >= 0,
    "unit": lambda v: _num(v) and 0 <= v <= 1,
    "unit_open": lambda v: _num(v) and 0 <= v < 1,  # [0, 1)
    "k": _k,
    "hidden": lambda v: KINDS["pos_int"](v) or (isinstance(v, (list, tuple)) and len(v) > 0
                                               and all(KINDS["pos_int"](h) for h in v)),
    "device": lambda v: v in ("cpu",) or (isinstance(v, torch.device) and v.type == "cpu"),
    "opt_device": lambda v: v is None or KINDS["device"](v),
    "path": lambda v: isinstance(v, str) and v != "",
    "opt_path": lambda v: v is None or (isinstance(v, str) and v != ""),
    "jobs": lambda v: _int(v) and 1 <= v <= 256,
    "seeds": lambda v: isinstance(v, list) and all(KINDS["seed"](x) for x in v),
    "dtype": lambda v: v is None or v in (torch.float32, torch.float64),
    "betas": lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(KINDS["unit_open"](b) for b in v),
}


def choice(*allowed):
    return lambda v: isinstance(v, str) and v in allowed


def opt_choice(*allowed):
    return lambda v: v is None or (isinstance(v, str) and v in allowed)


# the odd inputs every argument is tried with
POOL = [None, True, False, 0, 1, -1, 3, 2**31, 2**64, np.int64(3), 2.7, 0.5, 1.0, float("nan"), float("inf"),
        -float("inf"), "5", "False", "", "cpu", "per_example", [], [3], [0], (0.5, 0.9), {}, object(), b"x"]


# ----------------------------------------------------------------------------- the public classes


def _mlp():
    return MLP(4, 3, 2, 2, k=1)


def _lstms():
    f, b = MePropLSTM(4, 3, kernel="torch"), MePropLSTM(4, 3, reverse=True, kernel="torch")
    return [f, b], torch.nn.Linear(6, 2)


def _params():
    return [torch.nn.Parameter(torch.zeros(2, 2))]


TRAIN_KINDS = {
    "task": choice("mnist", "pos", "parse"), "method": choice(*training.METHODS), "k": "k",
    "mode": choice("per_example", "unified", "random"), "rescale": "rescale", "k_out": "k", "hidden": "hidden",
    "layers": "pos_int", "dropout": "unit_open", "optimizer": choice("adam", "adagrad", "sgd", "lazy_adam", "lazy_sgd"),
    "lr": "opt_pos_float", "epochs": "pos_int", "batch_size": "pos_int", "evals_per_epoch": "pos_int",
    "grad_clip": "opt_pos_float", "seed": "seed", "threads": "pos_int", "train_limit": "opt_pos_int",
    "weight_grad": opt_choice("buffer", "dense"), "kernel": choice("torch", "auto"), "rows_every": "nonneg_int",
    "device": "device", "prune_rate": "unit", "cycle_epochs": "pos_int", "prunes_per_epoch": "pos_int",
    "realisation": choice("physical", "mask"), "reset": choice("fresh", "moments"),
    "record": choice("per_example", "unified"), "count_zero_hits": "bool", "min_units": "pos_int",
    "meact_start_epoch": "pos_int", "meact_threshold": "nonneg_float", "meact_statistic": choice("share", "max_ratio"),
    "tagset": choice("upos", "xpos"), "embed_dim": "opt_pos_int", "min_count": "pos_int",
    "activation": opt_choice("cube", "relu"),
}
LAYER_KINDS = {"k": "k", "mode": choice("per_example", "unified", "random"), "bias": "bool", "rescale": "rescale",
               "sparsify_bias": "bool", "count_zero_hits": "bool", "compact_threshold": "unit", "track_stats": "bool",
               "device": "opt_device", "dtype": "dtype"}
SIMP_KINDS = {"prune_rate": "unit", "realisation": choice("physical", "mask"), "record": choice("per_example", "unified"),
              "count_zero_hits": "bool", "min_units": "pos_int"}

# name -> (call(**one_argument), {argument: kind})
TARGETS = {
    "TrainConfig": (lambda **kw: TrainConfig(**kw), TRAIN_KINDS),
    "MePropLinear": (lambda **kw: MePropLinear(**{"in_features": 4, "out_features": 3, **kw}),
                     {"in_features": "pos_int", "out_features": "pos_int", **LAYER_KINDS,
                      "weight_grad": choice("dense", "sparse"), "kernel": choice("torch", "auto")}),
    "MLP": (lambda **kw: MLP(**{"in_features": 4, "hidden": 3, "layers": 2, "out_features": 2, **kw}),
            {"in_features": "pos_int", "hidden": "hidden", "layers": "pos_int", "out_features": "pos_int", "k": "k",
             "mode": choice("per_example", "unified", "random"), "k_out": "k", "dropout": "unit_open",
             "device": "opt_device"}),
    "MePropLSTM": (lambda **kw: MePropLSTM(**{"input_size": 4, "hidden_size": 3, "kernel": "torch", **kw}),
                   {"input_size": "pos_int", "hidden_size": "pos_int", **LAYER_KINDS, "reverse": "bool",
                    "kernel": choice("torch", "auto")}),
    "Simplifier": (lambda **kw: Simplifier(_mlp(), **kw), SIMP_KINDS),
    "LSTMSimplifier": (lambda **kw: LSTMSimplifier(*_lstms(), **kw), SIMP_KINDS),
    "ActivityRecord": (lambda **kw: ActivityRecord(**{"width": 3, **kw}),
                       {"width": "pos_int", "record": choice("per_example", "unified"), "count_zero_hits": "bool",
                        "device": "opt_device"}),
    "MeAct": (lambda **kw: MeAct(_mlp(), **{"n_examples": 5, **kw}),
              {"n_examples": "pos_int", "threshold": "nonneg_float", "statistic": choice("share", "max_ratio")}),
    "LazyAdam": (lambda **kw: LazyAdam(_params(), **kw),
                 {"lr": "pos_float", "betas": "betas", "eps": "nonneg_float", "native": "opt_bool"}),
    "LazySGD": (lambda **kw: LazySGD(_params(), **kw), {"lr": "pos_float", "momentum": "unit_open"}),
    "BiLSTMTagger": (lambda **kw: BiLSTMTagger(**{"vocab_size": 5, "n_tags": 3, "embed_dim": 4, "hidden": 3,
                                                  "kernel": "torch", **kw}),
                     {"vocab_size": "pos_int", "n_tags": "pos_int", "embed_dim": "pos_int", "hidden": "pos_int",
                      "k": "k", "k_out": "k", "dropout": "unit_open", "sparse_embeddings": "bool"}),
    "ParserModel": (lambda **kw: ParserModel(**{"n_words": 5, "n_tags": 3, "n_labels": 3, "n_transitions": 5,
                                                "embed_dim": 2, "hidden": 3, **kw}),
                    {"n_words": "pos_int", "n_tags": "pos_int", "n_labels": "pos_int", "n_transitions": "pos_int",
                     "embed_dim": "pos_int", "hidden": "pos_int", "k": "k", "k_out": "k",
                     "activation": choice("cube", "relu"), "dropout": "unit_open", "embed_std": "nonneg_float",
                     "sparse_embeddings": "bool"}),
    # loaders: a path that is not there is a FileNotFoundError naming it (see classify_call)
    "load_mnist": (lambda **kw: load_mnist(**kw), {"data_dir": "opt_path"}),
    "load_ud": (lambda **kw: load_ud(**kw), {"root": "opt_path"}),
    "read_idx": (lambda **kw: read_idx(**kw), {"path": "path"}),
    "read_conllu": (lambda **kw: read_conllu(**kw), {"path": "path"}),
    "load_model": (lambda **kw: load_model(**kw), {"path": "path"}),
}


def _valid(kind, value) -> bool:
    check = KINDS[kind] if isinstance(kind, str) else kind
    try:
        return bool(check(value))
    except Exception:  # noqa: BLE001 (e.g. comparing a list with an int)
        return False


def classify_call(target: str, arg: str, value) -> tuple[str, str]:
    """("success" | "clean" | "other", detail) for one constructor call."""
    call, kinds = TARGETS[target]
    valid = _valid(kinds[arg], value)
    try:
        call(**{arg: value})
    except FileNotFoundError as e:  # a valid name of a missing file: the error must name it
        named = str(value) in str(e) or repr(str(value))[1:-1] in str(e)
        return ("clean", "") if valid and named else ("other", f"FileNotFoundError: {e}")
    except (ValueError, TypeError) as e:
        if valid:
            return "other", f"{type(e).__name__} for a valid value: {e}"
        return ("clean", "") if arg in str(e) else ("other", f"{type(e).__name__} not naming {arg}: {e}")
    except Exception as e:  # noqa: BLE001 (that is what the fuzz looks for)
        return "other", f"{type(e).__name__}: {e}"
    return ("success", "") if valid else ("other", "accepted (silent coercion)")


# ----------------------------------------------------------------------------- the command line

CLI_POOL = ["5", "-1", "0", "1", "2.7", "0.5", "nan", "inf", "-inf", "1e999", "none", "", "True", "False", "foo",
            "18446744073709551616", "18446744073709551615", "3,4", "3,", "cpu", "meta", "mps", "cuda:x", "foo bar",
            "--epochs", " 5"]
_CLI_FLAGS = {("train", name): kind for name, kind in TRAIN_KINDS.items() if kind != "bool"}
_CLI_FLAGS.update({("experiment", "jobs"): "jobs", ("experiment", "seeds"): "seeds",
                   ("experiment", "device"): "device"})
_CLI_START = {"train": ["train", "--quiet"], "experiment": ["experiment", "quick", "--dry-run"]}


class _TrainingStarted(Exception):
    pass


def _cli_value(kind, text: str):
    """The Python value a CLI string stands for under ``kind`` (or a sentinel that no kind accepts)."""
    if not isinstance(kind, str) or kind == "device":
        return text
    low = text.strip().lower()
    if (kind.startswith("opt_") and low in ("none", "null", "")) or (kind == "k" and low in ("none", "null", "dense")):
        return None
    if kind in ("hidden", "seeds") and ("," in text or kind == "seeds"):
        try:
            return [int(t) for t in text.split(",")]
        except ValueError:
            return object()
    if kind.endswith("int") or kind in ("seed", "hidden", "jobs"):
        try:
            return int(text)
        except ValueError:
            return object()
    try:
        return int(text) if kind == "k" else float(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return object()


def run_cli(argv: list[str]) -> tuple[int, str]:
    """main(argv) with training replaced by a stub: (exit status, stderr); status -1 = training started."""
    real = training.train

    def stub(*_a, **_k):
        raise _TrainingStarted

    training.train = stub
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
    except _TrainingStarted:
        code = -1
    except SystemExit as e:
        code = e.code
    finally:
        training.train = real
    return code, err.getvalue()


def classify_cli(command: str, arg: str, text: str) -> tuple[str, str]:
    """One flag of ``train`` (success: training starts) or ``experiment quick --dry-run`` (success: exit 0)."""
    kind = _CLI_FLAGS[command, arg]
    flag = "--" + arg.replace("_", "-")
    valid = _valid(kind, _cli_value(kind, text))
    try:
        code, err = run_cli([*_CLI_START[command], f"{flag}={text}"])
    except Exception as e:  # noqa: BLE001
        return "other", f"{type(e).__name__}: {e}"
    if code == (-1 if command == "train" else 0):
        return ("success", "") if valid else ("other", "accepted (silent coercion)")
    if code == 2 and not valid:
        return ("clean", "") if (flag in err or arg in err) else ("other", f"exit 2 not naming {flag}: {err.strip()}")
    return "other", f"exit {code} for {'a valid' if valid else 'an invalid'} value: {err.strip()[-300:]}"


# ----------------------------------------------------------------------------- counting and tests

ALL_CALLS = [(t, a, v) for t, (_, kinds) in TARGETS.items() for a in kinds for v in POOL]
ALL_CLI = [(c, a, v) for c, a in _CLI_FLAGS for v in CLI_POOL]


def count() -> dict:
    """Every (argument, value) pair once: the tally and the "other" cases."""
    tally = {"tried": 0, "success": 0, "clean": 0, "other": 0}
    others = []
    cases = [(f"{t}({a}={v!r})", lambda t=t, a=a, v=v: classify_call(t, a, v)) for t, a, v in ALL_CALLS]
    cases += [(f"{c} --{a.replace('_', '-')}={v!r}", lambda c=c, a=a, v=v: classify_cli(c, a, v)) for c, a, v in ALL_CLI]
    for label, classify in cases:
        kind, detail = classify()
        tally["tried"] += 1
        tally[kind] += 1
        if kind == "other":
            others.append(f"{label}: {detail}"[:240])
    return {"counts": tally, "others": others}


FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.sampled_from(ALL_CALLS))
def test_constructors_refuse_bad_arguments_by_name(case):
    kind, detail = classify_call(*case)
    assert kind != "other", f"{case[0]}({case[1]}={case[2]!r}): {detail}"


@FUZZ
@given(st.sampled_from(list(TARGETS)), st.data())
def test_constructors_with_drawn_numbers(target, data):
    """Integers and floats from hypothesis (any size, NaN, inf) for every numeric argument."""
    _, kinds = TARGETS[target]
    arg = data.draw(st.sampled_from(sorted(kinds)))
    value = data.draw(st.one_of(st.integers(-2**70, 64), st.floats(allow_nan=True, allow_infinity=True),
                                st.text(max_size=4), st.booleans()))
    kind, detail = classify_call(target, arg, value)
    assert kind != "other", f"{target}({arg}={value!r}): {detail}"


def classify_combo(target: str, kw: dict) -> tuple[str, str]:
    """Several arguments at once: success when all are valid (or an error naming one of them: some valid
    values exclude each other, e.g. weight_grad='sparse' with optimizer='adam'); otherwise an error naming one
    of the invalid ones, or one they conflict with."""
    call, kinds = TARGETS[target]
    invalid = [a for a, v in kw.items() if not _valid(kinds[a], v)]
    try:
        call(**kw)
    except FileNotFoundError:
        return ("clean", "") if not invalid else ("other", "FileNotFoundError for an invalid argument")
    except (ValueError, TypeError) as e:
        named = [a for a in kw if re.match(rf"{a}(\[\d+\])?=", str(e))]
        return ("clean", "") if named else ("other", f"{type(e).__name__} naming none of {sorted(kw)}: {e}")
    except Exception as e:  # noqa: BLE001
        return "other", f"{type(e).__name__}: {e}"
    return ("success", "") if not invalid else ("other", f"accepted {invalid} (silent coercion)")


@FUZZ
@given(st.sampled_from([t for t in TARGETS if not t.startswith(("load", "read"))]), st.data())
def test_several_arguments_at_once(target, data):
    _, kinds = TARGETS[target]
    names = data.draw(st.lists(st.sampled_from(sorted(kinds)), min_size=2, max_size=4, unique=True))
    kw = {n: data.draw(st.sampled_from(POOL)) for n in names}
    kind, detail = classify_combo(target, kw)
    assert kind != "other", f"{target}({kw!r}): {detail}"


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(ALL_CLI))
def test_cli_refuses_bad_flags_with_exit_2(case):
    kind, detail = classify_cli(*case)
    assert kind != "other", f"{case[0]} --{case[1]}={case[2]!r}: {detail}"


@pytest.mark.parametrize("value", ["foo", "meta", "mps", "cuda:x", "foo bar"])
def test_cli_device_names_the_flag(value):
    code, err = run_cli(["train", "--device", value])
    assert code == 2 and "--device" in err, err


if __name__ == "__main__":
    import resource

    # an unchecked huge width would try to allocate terabytes: make that a quick MemoryError / RuntimeError
    resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, resource.RLIM_INFINITY))
    out = count()
    print(out["counts"])
    if "-v" in sys.argv:
        print("\n".join(out["others"]))

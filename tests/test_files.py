"""Broken files and interrupts (issue 17): every reader names the file (and line) and says how to
restore it; no result is lost after training; children die with their suite."""

import contextlib
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from mesimp_lib import cli, experiments, training
from mesimp_lib.children import ChildGroup
from mesimp_lib.files import check_output_path, write_atomic
from mesimp_lib.checkpoint import load_model, save_model
from mesimp_lib.results import read_json, write_json_atomic
from mesimp_lib.tasks.mnist import MLP, read_idx
from mesimp_lib.tasks.ud import ConlluError, read_conllu
from mesimp_lib.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_are_written_with_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        p = write_json_atomic(tmp_path / "r.json", {"a": 1})
        m = save_model(MLP(4, 3, 1, 2), tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == mode and (m.stat().st_mode & 0o777) == mode


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    p = write_atomic(tmp_path / "t.md", lambda f: f.write("old"))

    def broken(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(p, broken)
    assert p.read_text() == "old" and [f.name for f in tmp_path.iterdir()] == ["t.md"]


def test_output_paths_checked(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="--json .* cannot be written"):
        check_output_path(blocker / "r.json", "--json")
    with pytest.raises(ValueError, match="--save-model .* is a folder"):
        check_output_path(tmp_path, "--save-model")
    assert check_output_path(tmp_path / "new" / "r.json", "--json") == tmp_path / "new" / "r.json"


@pytest.mark.parametrize("flag", ["--json", "--save-model"])
def test_unwritable_output_refused_before_training(tmp_path, monkeypatch, flag):
    def never(*_a, **_k):
        raise AssertionError("training started")

    monkeypatch.setattr(training, "train", never)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _cli("train", "--quiet", flag, str(blocker / "out"))
    assert code == 2 and flag in err and "cannot be written" in err


def test_diverged_run_is_recorded_not_lost(tmp_path):
    """lr=1e30 makes the loss NaN: the run still ends with its JSON, flagged (was: a crash at the write)."""
    out = tmp_path / "r.json"
    code, stdout, err = _cli("train", "--lr", "1e30", "--train-limit", "200", "--epochs", "1", "--batch-size", "50",
                             "--hidden", "20", "--evals-per-epoch", "1", "--quiet", "--json", str(out))
    assert code == 0, err
    r = json.loads(out.read_text())
    assert r["finite"] is False and r["non_finite_values"][0] == "history[0].train_loss"
    assert r["history"][0]["train_loss"] is None and "WARNING" in stdout and "diverged" in stdout


def test_finite_run_says_so():
    r = training.train(TrainConfig(train_limit=100, epochs=1, hidden=10, batch_size=50, evals_per_epoch=1),
                       progress=False)
    assert r["finite"] is True and "non_finite_values" not in r


# ----------------------------------------------------------------------------- models


def _saved(tmp_path):
    torch.manual_seed(0)
    m = MLP(6, [5, 4], out_features=3)
    return m, save_model(m, tmp_path / "m.pt", extra={"note": "x"})


def test_model_round_trip_with_checksum(tmp_path):
    m, p = _saved(tmp_path)
    back = load_model(p)
    assert back.widths == [5, 4] and all(torch.equal(a, b) for a, b in zip(m.state_dict().values(),
                                                                           back.state_dict().values()))
    assert len(torch.load(p, weights_only=True)["sha256"]) == 64


def test_changed_weights_fail_the_checksum(tmp_path):
    _, p = _saved(tmp_path)
    payload = torch.load(p, weights_only=True)
    payload["state_dict"]["hidden.0.weight"].view(torch.int32)[0, 0] ^= 1  # one flipped bit
    torch.save(payload, p)
    with pytest.raises(ValueError, match=f"{p} fails its checksum"):
        load_model(p)


def test_flipped_bytes_in_the_file_are_caught(tmp_path):
    m, p = _saved(tmp_path)
    raw = bytearray(p.read_bytes())
    needle = m.hidden[1].weight.detach()[2].numpy().tobytes()  # a weight row's bytes, as stored
    at = raw.find(needle)
    assert at > 0
    raw[at + 5] ^= 0x40
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=str(p)):
        load_model(p)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -30])
def test_truncated_model_names_the_file(tmp_path, keep):
    _, p = _saved(tmp_path)
    raw = p.read_bytes()
    p.write_bytes(raw[: int(keep * len(raw)) if isinstance(keep, float) else keep])
    with pytest.raises(ValueError, match=f"{p} cannot be read .*cut short.*--save-model"):
        load_model(p)


def test_sizes_in_the_file_are_checked_before_allocation(tmp_path, monkeypatch):
    _, p = _saved(tmp_path)
    payload = torch.load(p, weights_only=True)
    payload["widths"] = [10**12, 4]  # a lie that would allocate terabytes
    torch.save(payload, p)
    built = []
    monkeypatch.setattr("mesimp_lib.tasks.mnist.MLP.__init__", lambda *a, **k: built.append(1))
    with pytest.raises(ValueError, match=f"{p} has a damaged header.*widths"):
        load_model(p)
    assert not built


def test_stored_models_carry_checksums():
    for f in sorted((ROOT / "data" / "results" / "mesimp_mnist").glob("*.pt")):
        assert torch.load(f, weights_only=True)["format"] == "mesimp_lib.MLP/2", f
        load_model(f)


# ----------------------------------------------------------------------------- results files


def test_half_written_json_names_file_and_restore(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"config": {"k": 2')
    with pytest.raises(ValueError, match=rf"{p} is not valid JSON \(line 1.*git checkout -- {p}.*experiment quick"):
        read_json(p, "python -m mesimp_lib experiment quick")
    p.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match=f"{p} is not UTF-8"):
        read_json(p)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MESIMP_DATA_DIR", str(tmp_path))
    (tmp_path / "results" / "quick").mkdir(parents=True)
    return tmp_path


def test_half_written_result_blocks_suite_with_named_file(data_dir):
    bad = data_dir / "results" / "quick" / "topk-k20.json"
    bad.write_text('{"config": ')
    code, _, err = _cli("experiment", "quick", "--dry-run")
    assert code == 2 and str(bad) in err and "restore it" in err and "Traceback" not in err


def test_summarize_names_a_damaged_file(data_dir):
    bad = data_dir / "results" / "quick" / "topk-k20.json"
    bad.write_text('{"config": ')
    code, _, err = _cli("summarize")
    assert code == 1 and str(bad) in err and "git checkout" in err and "Traceback" not in err


def test_summarize_readme_escapes_html_from_results(data_dir, tmp_path):
    stored = json.loads((ROOT / "data" / "results" / "quick" / "topk-k20.json").read_text())
    stored["command"] = "python -m mesimp_lib train <script>alert(1)</script> &amp;"
    stored["environment"]["cpu"] = "<img src=x onerror=alert(1)>"
    write_json_atomic(data_dir / "results" / "quick" / "topk-k20.json", stored)
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- results:quick -->\nold\n<!-- /results:quick -->\ny\n")
    code, _, err = _cli("summarize", "--readme", str(readme))
    text = readme.read_text()
    assert code == 0, err
    assert "<script>" not in text and "<img" not in text and "&lt;script>" in text and "&amp;amp;" in text
    assert text.startswith("x\n<!-- results:quick -->") and text.endswith("<!-- /results:quick -->\ny\n")


# ----------------------------------------------------------------------------- data files


def _idx(tmp_path, dims, body=b""):
    p = tmp_path / "x-idx.gz"
    head = (0x0800 + len(dims)).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    p.write_bytes(gzip.compress(head + body))
    return p


def test_read_idx_size_check_cannot_overflow(tmp_path):
    # 2**16 ** 4 = 2**64 wraps to 0 in int64: an empty body used to pass the check
    with pytest.raises(ValueError, match=r"x-idx.gz has 0 values for its stated shape \(65536, 65536"):
        read_idx(_idx(tmp_path, [2**16] * 4))
    with pytest.raises(ValueError, match="truncated inside its header"):
        read_idx(_write_raw(tmp_path, b"\x00\x00\x08\x03\x00\x00"))  # 3 dims announced, 2 bytes follow
    assert read_idx(_idx(tmp_path, [2, 3], bytes(range(6)))).tolist() == [[0, 1, 2], [3, 4, 5]]


def _write_raw(tmp_path, raw):
    p = tmp_path / "raw-idx.gz"
    p.write_bytes(gzip.compress(raw))
    return p


TWO_ROOTS = "1\tHe\the\tPRON\tPRP\t_\t0\troot\t_\t_\n2\tleft\tleave\tVERB\tVBD\t_\t0\troot\t_\t_\n"
CYCLE = ("1\tHe\the\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n2\tleft\tleave\tVERB\tVBD\t_\t0\troot\t_\t_\n"
         "3\tnow\tnow\tADV\tRB\t_\t1\tadvmod\t_\t_\n")
NO_ROOT = "1\tHe\the\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n2\tleft\tleave\tVERB\tVBD\t_\t1\troot\t_\t_\n"


@pytest.mark.parametrize("text,line,message", [(TWO_ROOTS, 3, "exactly one root.*has 2 .words 1, 2"),
                                               (CYCLE, 2, r"cycle \(words 1 -> 3 -> 1\)"),
                                               (NO_ROOT, 2, "exactly one root.*has 0")])
def test_conllu_trees_are_checked(tmp_path, text, line, message):
    p = tmp_path / "t.conllu"
    p.write_text("# sent_id = a\n" + text)
    with pytest.raises(ConlluError, match=f"{p}:{line}: .*{message}"):
        read_conllu(p)


def test_conllu_bad_utf8_names_file_and_line(tmp_path):
    p = tmp_path / "t.conllu"
    p.write_bytes(b"# sent_id = a\n1\tH\xffe\the\tPRON\tPRP\t_\t0\troot\t_\t_\n")
    with pytest.raises(ConlluError, match=f"{p}:2: not UTF-8"):
        read_conllu(p)
    g = tmp_path / "t.conllu.gz"
    g.write_bytes(gzip.compress(b"1\tHe")[:-6])
    with pytest.raises(ConlluError, match=f"{g}: not a valid gzip"):
        read_conllu(g)


# ----------------------------------------------------------------------------- children


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state or "State:\tX" in state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_the_suite_kills_its_children(tmp_path):
    """A suite parent killed by SIGKILL (no cleanup possible) takes its training child with it."""
    pid_file = tmp_path / "pid"
    parent = textwrap.dedent(f"""
        import sys, threading, time
        from mesimp_lib.children import ChildGroup
        g = ChildGroup()
        cmd = [sys.executable, "-m", "mesimp_lib", "train", "--epochs", "200", "--train-limit", "500", "--quiet"]
        t = threading.Thread(target=g.run, args=(cmd,))
        t.start()
        while not g._procs:
            time.sleep(0.02)
        open({str(pid_file)!r}, "w").write(str(next(iter(g._procs)).pid))
        t.join()
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", parent], env=env)
    try:
        deadline = time.time() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        child = int(pid_file.read_text())
        time.sleep(3.0)  # the child is importing torch or training by now
        assert not _gone(child)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while not _gone(child):
            assert time.time() < deadline, "the child outlived its suite"
            time.sleep(0.1)
    finally:
        proc.kill()
        with contextlib.suppress(NameError, ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_leaving_the_group_by_an_exception_kills_the_children():
    import threading

    results = []
    with pytest.raises(KeyboardInterrupt):
        with ChildGroup() as group:
            t = threading.Thread(target=lambda: results.append(group.run([sys.executable, "-c",
                                                                           "import time; time.sleep(60)"])))
            t.start()
            while not group._procs:
                time.sleep(0.02)
            raise KeyboardInterrupt
    t.join(timeout=10)
    assert not t.is_alive() and results[0].returncode == -signal.SIGKILL
    # queued runs are not started after the stop
    assert group.run([sys.executable, "-c", "print(1)"]).returncode == -signal.SIGKILL


def test_a_failed_run_does_not_stop_the_others(data_dir, monkeypatch):
    calls = []

    def fake_command(cfg, path, save_model=False):
        calls.append(path.name)
        if "topk" in path.name:
            return [sys.executable, "-c", "import sys; sys.exit(3)"]
        return [sys.executable, "-c", f"import json; json.dump({{'test_acc': 0.5}}, open({str(path)!r}, 'w'))"]

    monkeypatch.setattr(experiments, "_command", fake_command)
    with pytest.raises(RuntimeError, match=r"(?s)1 of \d+ run\(s\) of quick failed.*topk-k20 failed \(exit 3\)"):
        experiments.run_suite("quick", log=lambda *_: None)
    stored = sorted(p.name for p in (data_dir / "results" / "quick").glob("*.json"))
    assert stored == sorted(n for n in calls if "topk" not in n) and len(stored) == len(calls) - 1


def test_a_write_that_fails_after_training_keeps_the_result(tmp_path, monkeypatch):
    """The path was fine before training and fails after (disk full): the result goes to a rescue file."""
    monkeypatch.setattr(training, "train", lambda *a, **k: json.loads(
        (ROOT / "data" / "results" / "quick" / "topk-k20.json").read_text()))
    real = os.replace
    target = tmp_path / "r.json"

    def full_disk(src, dst):
        if Path(dst) == target:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr("mesimp_lib.files.os.replace", full_disk)
    code, _, err = _cli("train", "--quiet", "--json", str(target))
    rescue = Path(err.split("the result is kept in ")[1].strip())
    assert code == 1 and "No space left" in err and json.loads(rescue.read_text())["test_acc"] > 0
    rescue.unlink()


def test_bench_outputs_checked_before_the_benchmark(tmp_path):
    code, _, err = _cli("bench", "--quick", "--markdown", str(tmp_path))
    assert code == 2 and "--markdown" in err and "is a folder" in err


def test_a_rerun_does_only_the_missing_runs(data_dir, monkeypatch):
    """After an interrupted suite (here: one run died), the re-run starts only the run without a result."""
    from dataclasses import asdict

    calls, killed = [], []

    def fake_command(cfg, path, save_model=False):
        calls.append(path.stem)
        if path.stem == "dense" and not killed:  # the first attempt is killed
            killed.append(path.stem)
            return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
        result = {"config": asdict(cfg), "test_acc": 0.5}
        return [sys.executable, "-c", f"import json; json.dump({result!r}, open({str(path)!r}, 'w'))"]

    monkeypatch.setattr(experiments, "_command", fake_command)
    with pytest.raises(RuntimeError, match="dense failed"):
        experiments.run_suite("quick", log=lambda *_: None)
    first = list(calls)
    calls.clear()
    assert [p.stem for p in experiments.run_suite("quick", log=lambda *_: None)] == ["dense"] and calls == ["dense"]
    assert len(first) == len(list((data_dir / "results" / "quick").glob("*.json")))


def test_truncated_widget_recording_names_the_file(tmp_path):
    from mesimp_lib.recordings import load_active_paths

    p = tmp_path / "active_paths.pt"
    p.write_bytes((ROOT / "data" / "results" / "widgets" / "active_paths.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{p} cannot be read .*git checkout.*experiment widgets"):
        load_active_paths(p)

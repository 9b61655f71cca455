"""The native kernels' build cache (mesimp_lib/fused): one folder per build key (sources, flags, torch, CPU
flags, checkout), no foreign or stale shared object loaded, and a stale build lock never hangs a process."""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import torch


def test_build_key_changes_with_sources_flags_torch_cpu_and_checkout(tmp_path, monkeypatch):
    from mesimp_lib import fused as fused_mod

    src = tmp_path / "k.cpp"
    src.write_text("int f() { return 1; }")
    base = fused_mod.build_key([str(src)], ["-O3"])
    assert fused_mod.build_key([str(src)], ["-O3"]) == base  # stable
    assert fused_mod.build_key([str(src)], ["-O2"]) != base
    src.write_text("int f() { return 2; }")
    assert fused_mod.build_key([str(src)], ["-O3"]) != base
    src.write_text("int f() { return 1; }")
    monkeypatch.setattr(fused_mod, "_cpu_flags", lambda: "sse2 avx2")
    other_cpu = fused_mod.build_key([str(src)], ["-O3"])
    monkeypatch.setattr(fused_mod, "_cpu_flags", lambda: "sse2 avx2 avx512f")
    assert fused_mod.build_key([str(src)], ["-O3"]) != other_cpu
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert fused_mod.build_key([str(src)], ["-O3"]) not in (base, other_cpu)
    key = fused_mod.build_key([str(src)], ["-O3"])
    monkeypatch.setattr(fused_mod, "__file__", str(tmp_path / "other_checkout" / "mesimp_lib" / "fused" / "x.py"))
    assert fused_mod.build_key([str(src)], ["-O3"]) != key


def test_foreign_or_stale_shared_object_is_removed_before_loading(tmp_path):
    from mesimp_lib.fused import check_built

    so = tmp_path / "ext.so"
    so.write_bytes(b"built by someone else")
    (tmp_path / "ext.o").write_bytes(b"object")
    assert not check_built(tmp_path, "ext") and not so.exists() and not (tmp_path / "ext.o").exists()
    so.write_bytes(b"ours")
    (tmp_path / "ext.so.sha256").write_text(hashlib.sha256(b"ours").hexdigest())
    assert check_built(tmp_path, "ext") and so.exists()
    so.write_bytes(b"replaced after our build")
    assert not check_built(tmp_path, "ext") and not so.exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_build_lock_of_a_dead_process_is_taken_over(tmp_path):
    from mesimp_lib.fused import LOCK, acquire_lock

    (tmp_path / LOCK).write_text(str(_dead_pid()))
    (tmp_path / "lock").write_text("")  # torch's own lock, left by the same killed build
    lock = acquire_lock(tmp_path, wait_s=5.0)
    assert lock.read_text() == str(os.getpid()) and not (tmp_path / "lock").exists()
    assert acquire_lock(tmp_path, wait_s=5.0) == lock  # our own pid in a lock: left by an earlier process


def test_build_lock_held_by_a_live_process_falls_back_to_pytorch_with_a_message(tmp_path, monkeypatch, caplog):
    import logging

    from mesimp_lib import fused as fused_mod

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
        monkeypatch.setenv("MESIMP_BUILD_WAIT", "0.5")
        monkeypatch.setenv("MESIMP_FUSED", "1")
        here = Path(fused_mod.__file__).parent
        srcs = [str(here / "meprop_fused.cpp"), str(here / "meprop_native.cpp")]
        flags = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno"]
        folder = tmp_path / f"mesimp_fused_{fused_mod.build_key(srcs, flags)}"
        folder.mkdir()
        (folder / fused_mod.LOCK).write_text(str(holder.pid))
        monkeypatch.setattr(fused_mod, "_state", {})
        t0 = time.monotonic()
        with caplog.at_level(logging.INFO, logger="mesimp_lib.fused"):
            assert fused_mod.kernels() is None
        assert time.monotonic() - t0 < 30
        assert "pure PyTorch (BuildLockTimeout" in fused_mod.status()
        assert f"held by the running process {holder.pid}" in caplog.text
        assert (folder / fused_mod.LOCK).read_text() == str(holder.pid)  # a live holder's lock is left alone
    finally:
        holder.kill()
        holder.wait()

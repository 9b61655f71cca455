"""`make lab` opens JupyterLab rooted at the repository (README, benchmarks/ and data/ reachable
from the file browser) with notebooks/00_start_here.ipynb as the page it opens, on 127.0.0.1 with
a token. The test runs the Makefile's own command line (`make -n lab`), on a free port with a
token of its own and no browser."""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
import urllib.error
import urllib.request

from uihelpers import ROOT, Server, free_port, jupyter_env


def lab_command() -> list[str]:
    out = subprocess.run(["make", "-n", "lab", "LAB_ARGS="], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.replace("\\\n", " ").splitlines() if "jupyter lab" in line)
    args = shlex.split(line)
    assert args[0].endswith("jupyter") and args[1] == "lab", args
    return [sys.executable, "-m", "jupyterlab", *args[2:]]


def test_make_lab_roots_at_the_repository_with_00_open(tmp_path):
    cmd = lab_command()
    assert "--ip=127.0.0.1" in cmd and not any(a.startswith("--IdentityProvider.token=") for a in cmd)
    token, port = secrets.token_hex(16), free_port()
    cmd = [a for a in cmd if a != "--ServerApp.open_browser=True"] + [
        "--ServerApp.open_browser=False", f"--port={port}", "--ServerApp.port_retries=0", "--allow-root",
        f"--IdentityProvider.token={token}", f"--LabApp.workspaces_dir={tmp_path / 'ws'}"]
    server = Server(cmd, f"http://127.0.0.1:{port}", tmp_path / "lab.log", jupyter_env(tmp_path), cwd=tmp_path,
                    ready_path=f"/api/status?token={token}")
    try:
        for path in ("README.md", "benchmarks", "data", "notebooks/00_start_here.ipynb"):
            with urllib.request.urlopen(f"{server.url}/api/contents/{path}?content=0&token={token}") as r:
                assert json.load(r)["path"] == path
        with urllib.request.urlopen(f"{server.url}/?token={token}") as r:
            assert r.url.split("?")[0].endswith("/lab/tree/notebooks/00_start_here.ipynb"), r.url
        try:
            urllib.request.urlopen(f"{server.url}/api/contents/README.md")
            raise AssertionError("the server answered without a token")
        except urllib.error.HTTPError as e:
            assert e.code == 403, e
    finally:
        server.stop()

"""Fixtures of the browser tests: Debian's chromium driven by playwright, a JupyterLab server
on a temporary copy of the notebooks, and a Voila server on the app notebook.

Run with `make test-ui` (installs the `ui` extra). Skips, saying why, when no chromium is found."""

from __future__ import annotations

import json
import secrets
import shutil
import sys

import pytest
from uihelpers import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    ROOT,
    Server,
    find_chromium,
    free_port,
    jupyter_env,
)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if not path:
        pytest.skip("no chromium found (/usr/bin/chromium, chromium on PATH or $MESIMP_CHROMIUM): "
                    "install Debian's with `apt-get install -y chromium` to run the browser tests")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path, tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: `make test-ui` installs the `ui` extra")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
    except Exception as e:  # noqa: BLE001 - a chromium that does not start is a skip, not a failure
        pw.stop()
        pytest.skip(f"chromium at {chromium_path} did not start under playwright: {e}")
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors
    yield pg
    context.close()


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1:<free port> with a token of its own, serving a copy of notebooks/.

    Isolated workspaces, user settings and app settings (overrides.json: no news or update
    notification, which would cover the page; every cell kept in the DOM; no autosave)."""
    tmp = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", tmp / "root" / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for d in ("workspaces", "user_settings", "app_settings"):
        (tmp / d).mkdir()
    (tmp / "app_settings" / "overrides.json").write_text(json.dumps({
        "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
        "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
        "@jupyterlab/extensionmanager-extension:plugin": {"enabled": False},
    }))
    token, port = secrets.token_hex(16), free_port()
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",  # --allow-root: tests only
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={tmp / 'root'}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
        f"--LabApp.user_settings_dir={tmp / 'user_settings'}",
        f"--LabApp.app_settings_dir={tmp / 'app_settings'}",
        "--LabApp.expose_app_in_browser=True",
    ]
    base = f"http://127.0.0.1:{port}"
    server = Server(cmd, base, tmp / "lab.log", jupyter_env(tmp), cwd=tmp / "root",
                    ready_path=f"/api/status?token={token}")
    server.token, server.root = token, tmp / "root"
    yield server
    server.stop()


def _voila_server(tmp_path_factory, name: str, **settings):
    from mesimp_lib.viz.appserver import voila_command

    tmp = tmp_path_factory.mktemp(name)
    token, port = secrets.token_hex(16), free_port()
    cmd = voila_command(port=port, token=token, **settings)
    base = f"http://127.0.0.1:{port}"
    server = Server(cmd, base, tmp / "voila.log", jupyter_env(tmp), cwd=tmp,
                    ready_path="/ui-test-readiness-probe")  # a 404 answers without running the notebook
    server.token = token
    return server


@pytest.fixture(scope="session")
def voila(tmp_path_factory):
    """The app as `make app` serves it (mesimp_lib.viz.appserver), with a token of its own."""
    server = _voila_server(tmp_path_factory, "voila")
    yield server
    server.stop()


@pytest.fixture
def voila_strict(tmp_path_factory):
    """The app with --max-kernels 1 and kernels culled after 20 s idle (checked every 5 s)."""
    server = _voila_server(tmp_path_factory, "voila_strict", max_kernels=1, idle_minutes=1 / 3, cull_interval_s=5)
    yield server
    server.stop()

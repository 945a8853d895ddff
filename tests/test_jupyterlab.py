"""Notebook 01 in JupyterLab, driven through headless Chromium as a person would: Run All Cells.

JupyterLab runs from the project's venv on 127.0.0.1 with a token; Playwright drives Debian's
Chromium (`/usr/bin/chromium`, never a downloaded browser). The notebook is a copy whose
parameters papermill-style inject the `ci` profile, trimmed to two short epochs, and a tmp
run_dir; the screenshot `lab.png` stays in the test's tmp folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01_train.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The ci profile cut to two epochs of 500 images: both models train in seconds on 2 cores.
PARAMETERS = {"profile": "ci", "epochs": 2, "checkpoint_epochs": [0, 2],
              "train_per_class": 50, "test_per_class": 20}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Every cell in the DOM (no windowing), and no news or update checks over the network.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
# Done when every code cell shows an execution count, or as soon as one shows a traceback.
FINISHED = """() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
    .map(p => p.textContent.trim());
  const failed = [...document.querySelectorAll('STDERR')]
    .some(o => o.textContent.includes('Traceback'));
  return failed || (prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t)));
}""".replace("STDERR", STDERR)
# Started once a code cell shows [*] (queued or running) or an execution count.
STARTED = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
  .some(p => /^\\[(\\*|\\d+)\\]:$/.test(p.textContent.trim()))"""
RUN_ALL = '.lm-Menu-item[data-command="runmenu:run-all"]:not(.lm-mod-disabled)'
RUN_TIMEOUT_MS = 300_000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parameterized_copy(root: Path, run_dir: Path) -> Path:
    """notebooks/01_train.ipynb under root with the test's parameters injected as papermill does."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)),
                               {**PARAMETERS, "run_dir": str(run_dir)})
    target = root / "notebooks" / NOTEBOOK.name
    target.parent.mkdir(parents=True)
    nbformat.write(nb, target)
    return target


def lab_env(home: Path, data_root: Path) -> dict[str, str]:
    """The server's environment: private Jupyter folders, the data cache, the inline backend."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    settings = home / "settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return {**env, "NBUTILS_DATA": str(data_root), "HOME": str(home),
            "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 90) -> None:
    """Poll the server's status API until it answers; fail early if the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"jupyter lab exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer {url} within {timeout:.0f} s")


@pytest.fixture
def lab(tmp_path: Path, cifar10_root: Path) -> Iterator[str]:
    """A JupyterLab server on a copy of notebook 01; yields the notebook's URL with token."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}; install it with `apt-get install chromium`")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip)")
    root = tmp_path / "root"
    parameterized_copy(root, tmp_path / "run")
    port, token = free_port(), os.urandom(16).hex()
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
         "--ServerApp.allow_root=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=lab_env(tmp_path / "home", cifar10_root), stdout=log,
        stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/api/status?token={token}", server)
        yield f"{base}/lab/tree/notebooks/{NOTEBOOK.name}?token={token}"
    finally:
        # SIGTERM lets the server shut its kernels down; kill only if it hangs.
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def accept_dialogs(page) -> None:
    """Accept any dialog JupyterLab has opened over the notebook (on a loaded machine the kernel
    can start late enough for Lab to ask which kernel to use), printing what it asked."""
    dialogs = page.locator(".jp-Dialog")
    for _ in range(3):
        if not dialogs.count():
            return
        print("JupyterLab dialog:", dialogs.first.inner_text())
        page.locator(".jp-Dialog .jp-mod-accept").first.click()
        page.wait_for_timeout(500)


def run_all_cells(page) -> None:
    """Run > Run All Cells from the menu bar, as a person would, until cells start running."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(4):
        accept_dialogs(page)
        try:
            # The menu acts on the focused notebook; right after loading, none may have focus.
            page.locator(".jp-Notebook").first.click(timeout=10_000)
            page.locator(".lm-MenuBar-item", has_text="Run").first.click(timeout=10_000)
            page.locator(RUN_ALL).click(timeout=10_000)
            page.wait_for_function(STARTED, timeout=15_000)
            return
        except PlaywrightTimeout:
            # A dialog that opened meanwhile is accepted on the next pass; a menu left open
            # is closed here.
            if not page.locator(".jp-Dialog").count():
                page.keyboard.press("Escape")
    pytest.fail("Run > Run All Cells did not start the notebook's cells")


@pytest.mark.slow
def test_notebook_01_runs_all_cells_in_a_browser(lab: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            page = browser.new_page()
            page.goto(lab)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                                   timeout=120_000)
            run_all_cells(page)
            page.wait_for_function(FINISHED, timeout=RUN_TIMEOUT_MS, polling=1000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                                   timeout=60_000)
            page.screenshot(path=str(tmp_path / "lab.png"), full_page=True)
            tracebacks = [t for t in page.locator(STDERR).all_inner_texts() if "Traceback" in t]
            tables = page.locator(".jp-OutputArea-output table").count()
            images = page.locator(".jp-OutputArea-output img").count()
        finally:
            browser.close()
    assert not tracebacks, tracebacks[0][-3000:]
    assert tables >= 3, f"expected the config and both training tables, found {tables}"
    assert images >= 1, "expected the training curves figure"
    assert (tmp_path / "run" / "coarse" / "log.json").is_file()

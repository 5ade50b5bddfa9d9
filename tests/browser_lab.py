"""A real JupyterLab in a real (headless) browser, for tests/test_browser.py and tests/make_screenshots.py.

    with JupyterLab(root_dir, env={"PAA_FAST": "1"}) as lab, chromium_page() as page:
        open_notebook(page, lab, "04_assignment_evolution.ipynb")
        run_all(page, lab)                       # Run > Run All Cells, then waits until every cell ran
        assert not error_outputs(page)

* :class:`JupyterLab` starts ``jupyter lab`` on 127.0.0.1 (free port, no token) as its own process,
  with a private settings folder (news, update checks, toasts and autosave off; every cell kept in
  the page) and private workspace / runtime / config / data folders (so the ``python3`` kernel is this
  environment's); it is stopped by its PID (then its process group).
* :func:`chromium_page`: Debian's ``/usr/bin/chromium`` driven by Playwright's Python package
  (``executable_path``: no ``playwright install``, nothing downloaded).
* Waiting is done on facts, not sleeps: the status bar shows the kernel idle, the server reports the
  kernel idle (``/api/kernels``), no cell is queued or running (``[*]``).

Nothing here skips: a missing browser or package raises :class:`BrowserUnavailable` with what to install.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PAA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: JupyterLab user settings: no news / update check / toasts (they cover screenshots and reach the net),
#: no autosave (it would write outputs into the notebook), every cell attached to the page.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
#: an output that reports a failure: a traceback on stderr, or an error output
ERROR_PATTERN = re.compile(r"Traceback|Error\b")


class BrowserUnavailable(RuntimeError):
    """Chromium or Playwright is missing; the message says how to install it."""


def check_browser() -> None:
    """Raise :class:`BrowserUnavailable` unless Playwright (Python) and Chromium are installed."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Python package playwright (pip install -r requirements-notebooks.txt)")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install -y chromium, or set PAA_CHROMIUM)")
    if missing:
        raise BrowserUnavailable("the browser test needs " + " and ".join(missing) + "; .ci/run installs both")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_lab_settings(settings_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=1))


class JupyterLab:
    """``jupyter lab`` serving ``root_dir`` on 127.0.0.1 without a token; a context manager.

    ``env`` is added to the server's environment (kernels inherit it). The log is ``<work>/lab.log``.
    """

    def __init__(self, root_dir: str | Path, env: Mapping[str, str] | None = None, start_timeout: float = 60.0):
        self.root_dir = Path(root_dir)
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._work = Path(tempfile.mkdtemp(prefix="paa-lab-"))
        self.log_path = self._work / "lab.log"

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> JupyterLab:
        settings = self._work / "settings"
        write_lab_settings(settings)
        env = {
            **os.environ,
            **self.extra_env,
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(self._work / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(self._work / "runtime"),
            # no user-level config or kernel specs: the kernel is this environment's python3
            "JUPYTER_CONFIG_DIR": str(self._work / "config"),
            "JUPYTER_DATA_DIR": str(self._work / "data"),
        }
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={self.port}",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port_retries=0",
            "--IdentityProvider.token=",
            "--ServerApp.allow_root=True",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/api/status")
                return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"jupyter lab did not answer on {self.url} within {self.start_timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM to the server (it shuts its kernels down), then SIGKILL to its process group if needed."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the group this server was started in
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        shutil.rmtree(self._work, ignore_errors=True)  # settings, workspaces, runtime files and the log

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- REST ---------------------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.loads(response.read())

    def kernels_idle(self) -> bool:
        kernels = self.get("/api/kernels")
        return bool(kernels) and all(k.get("execution_state") == "idle" for k in kernels)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log (available until :meth:`stop`)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


# ---- browser ----------------------------------------------------------------------------------------
@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in headless Chromium (``/usr/bin/chromium``, or ``$PAA_CHROMIUM``)."""
    check_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
            yield context.new_page()
        finally:
            browser.close()


def wait_until(condition, timeout: float, what: str, interval: float = 0.25) -> None:
    """Poll ``condition()`` until true; raise ``TimeoutError(what)`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:  # the server is busy answering: ask again
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def kernel_status_text(page: Any) -> str:
    """The status bar's kernel item, e.g. ``"Python 3 (ipykernel) | Idle"`` (empty while there is none)."""
    item = page.locator(
        ".jp-StatusBar-TextItem",
        has_text=re.compile(
            r"\|\s*(Idle|Busy|Starting|Connecting|"
            r"Restarting|Unknown|Dead)"
        ),
    )
    return item.first.inner_text() if item.count() else ""


def busy_cells(page: Any) -> int:
    """Cells queued or running: their prompt shows ``[*]``."""
    return page.locator(".jp-InputArea-prompt", has_text="[*]").count()


def wait_idle(page: Any, lab: JupyterLab, timeout: float = 120.0, settle: float = 0.5) -> None:
    """Until the status bar shows the kernel idle (connected), the server says idle, and no cell waits."""

    def idle() -> bool:
        return kernel_status_text(page).endswith("Idle") and busy_cells(page) == 0 and lab.kernels_idle()

    wait_until(idle, timeout, "the kernel to be idle")
    time.sleep(settle)  # a widget message may still be on its way: confirm once more
    wait_until(idle, timeout, "the kernel to be idle")


def open_notebook(page: Any, lab: JupyterLab, name: str, timeout: float = 120.0) -> None:
    """Open ``name`` (relative to the server's root) as the only tab (``?reset`` clears the saved layout)
    and wait for its kernel to be connected and idle."""
    page.goto(f"{lab.url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="visible", timeout=timeout * 1000)
    wait_idle(page, lab, timeout)


def collapse_left_sidebar(page: Any) -> None:
    """Close the file browser (click its current tab): the notebook gets the page's whole width."""
    tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if tab.count():
        tab.first.click()
        wait_until(
            lambda: page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").count() == 0,
            10,
            "the left sidebar to close",
        )


def run_all(page: Any, lab: JupyterLab, timeout: float = 600.0) -> None:
    """Run > Run All Cells, then wait until every cell has run (or execution stopped) and the kernel idles."""
    page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})  # focus the notebook
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    code_cells = page.locator(".jp-CodeCell").count()
    # started: some cell is queued or has a fresh execution count
    wait_until(lambda: busy_cells(page) > 0 or executed_cells(page) > 0, 30, "Run All to start")
    wait_until(lambda: busy_cells(page) == 0, timeout, f"all {code_cells} code cells to run")
    wait_idle(page, lab, timeout)


def executed_cells(page: Any) -> int:
    return page.locator(".jp-InputArea-prompt", has_text=re.compile(r"\[\d+\]")).count()


def error_outputs(page: Any) -> list[str]:
    """Texts of error outputs and of stderr outputs that show a traceback or an error."""
    texts = []
    for output in page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all():
        text = output.inner_text()
        if ERROR_PATTERN.search(text):
            texts.append(text)
    return texts


def widget_by_description(page: Any, kind: str, description: str) -> Any:
    """The ipywidgets control of class ``widget-<kind>`` whose description label is ``description``."""
    label = page.locator("label.widget-label", has_text=re.compile(rf"^{re.escape(description)}$"))
    return page.locator(f".widget-{kind}", has=label).first


def label_text(page: Any, pattern: str) -> str:
    """The text of the first ipywidgets Label matching the regular expression ``pattern`` ('' if none)."""
    label = page.locator(".widget-label", has_text=re.compile(pattern))
    return label.first.inner_text() if label.count() else ""


def cell_output(page: Any, containing: Any) -> Any:
    """The first output of a code cell that contains ``containing`` (a CSS selector or a locator)."""
    inner = page.locator(containing) if isinstance(containing, str) else containing
    return page.locator(".jp-CodeCell .jp-OutputArea-output", has=inner).first


def copy_into(root: Path, *files: Path) -> list[str]:
    """Copy ``files`` into ``root`` (a fresh temp folder the server serves); their names there."""
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for f in files:
        shutil.copy2(f, root / f.name)
        names.append(f.name)
    return names


__all__ = [
    "BrowserUnavailable",
    "JupyterLab",
    "REPO",
    "busy_cells",
    "cell_output",
    "check_browser",
    "chromium_page",
    "collapse_left_sidebar",
    "copy_into",
    "error_outputs",
    "executed_cells",
    "free_port",
    "kernel_status_text",
    "label_text",
    "open_notebook",
    "run_all",
    "wait_idle",
    "wait_until",
    "widget_by_description",
    "write_lab_settings",
]

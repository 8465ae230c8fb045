"""JupyterLab in a real browser, for tests/test_browser.py: a JupyterLab server started the way ``make lab``
starts it (on 127.0.0.1, with a token), in a folder and with Jupyter state of its own, and a page driven
by Playwright in Debian's Chromium that opens a notebook, runs all its cells and reads what it shows."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from labkit.processes import Child
from labkit.waiting import wait_for
from tests.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")  # Debian's (.ci/run installs it); Playwright's own download is unreachable
# With headless=True: no sandbox (CI runs as root), no GPU, and no background connection attempts: this
# machine's network is closed, and Chromium's refused connections would otherwise show up as errors.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "runs" / "browser"
# JupyterLab settings of the test's own: every cell in the page (no virtual scrolling, so the page shows
# all outputs), and no news or update checks (they would reach out of the machine).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def make_lab_command() -> list[str]:
    """The ``jupyter lab`` command line of ``make lab`` (from ``make -n``), with this venv."""
    venv = Path(sys.executable).parent.parent
    out = subprocess.run(["make", "-n", "lab", f"VENV={venv}", f"PYTHON={sys.executable}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    [line] = [x for x in lines if " lab " in f"{x} " and "/jupyter" in x]
    assert any(x.endswith("-m labkit up") for x in lines[:lines.index(line)]), "make lab must run `labkit up` first"
    words = shlex.split(line)
    while "=" in words[0] and not words[0].startswith("-"):  # VAR=value before the command: env() sets them
        words.pop(0)
    return words


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_parameters(notebook: Path, **values: Any) -> None:
    """Change default values in a notebook's ``parameters`` cell (a person would edit the same lines)."""
    nb = json.loads(notebook.read_text())
    [cell] = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    source = "".join(cell["source"])
    for name, value in values.items():
        source, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", source, flags=re.M)
        assert n == 1, f"{notebook.name} declares no parameter {name}"
    cell["source"] = source
    notebook.write_text(json.dumps(nb, indent=1))


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 with a token, serving ``root``, its Jupyter state in ``state``."""

    def __init__(self, root: Path, state: Path, log: Path) -> None:
        self.root, self.state, self.log = root, state, log
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.child: Child | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"JUPYTER_CONFIG_DIR": str(self.state / "config"), "JUPYTER_DATA_DIR": str(self.state / "data"),
                    "JUPYTER_RUNTIME_DIR": str(self.state / "runtime"),
                    "JUPYTERLAB_SETTINGS_DIR": str(self.state / "settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(self.state / "workspaces"), "JUPYTER_PREFER_ENV_PATH": "1"})
        for var in ("LABKIT_STATE_DIR", "MPLBACKEND"):
            env.pop(var, None)
        return env

    def start(self) -> JupyterLab:
        for name, values in LAB_SETTINGS.items():
            path = self.state / "settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        cmd = make_lab_command() + ["--no-browser", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                                    f"--IdentityProvider.token={self.token}"]
        self.child = Child.spawn(cmd, env=self.env(), log=self.log, cwd=self.root, detach=False)
        wait_for(self._answers, 90, f"JupyterLab on 127.0.0.1:{self.port}", interval=0.2)
        return self

    def _answers(self) -> bool:
        if self.child is not None and not self.child.alive():
            raise AssertionError(f"JupyterLab exited:\n{self.child.output[-3000:]}")
        try:
            self.api("GET", "status")
            return True
        except OSError:
            return False

    def api(self, method: str, path: str) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{path}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        """Stop every kernel (the notebooks done with), so that only one runs at a time."""
        for kernel in self.api("GET", "kernels"):
            self.api("DELETE", f"kernels/{kernel['id']}")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(20)


def copy_project(dest: Path) -> Path:
    """The notebooks in a folder of their own (so the test's labkit state, figures and downloads stay
    there, out of the repository's .labkit and runs/)."""
    shutil.copytree(ROOT / "notebooks", dest / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return dest


# -- the page ----------------------------------------------------------------------------------------

IDLE = "(document.querySelector('#jp-main-statusbar')?.textContent ?? '').includes('Idle')"
# Run All is over when the kernel is idle, no cell waits to run ([*]), and every code cell has run (or one
# failed: the cells after it never run).
RUN_ALL_DONE = f"""() => {{
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
    .map(e => e.textContent.trim());
  const failed = document.querySelector('.jp-NotebookPanel [data-mime-type="application/vnd.jupyter.stderr"]');
  return {IDLE} && prompts.length > 0 && !prompts.some(p => p.includes('*'))
    && (prompts.every(p => /\\[\\d+\\]/.test(p)) || failed !== null);
}}"""
# Records every busy line (a spinner and what runs) that appears, however briefly.
WATCH_BUSY = """() => {
  if (window.__labkitWatch) window.__labkitWatch.disconnect();
  window.__labkitBusy = [];
  const seen = () => document.querySelectorAll('.labkit-busy').forEach(e => window.__labkitBusy.push(e.textContent));
  window.__labkitWatch = new MutationObserver(seen);
  window.__labkitWatch.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
# Records every frame a live depth plot (labkit.widgets.LiveDepth) shows, however briefly: each redraw is a new
# blob URL on its <img>.
WATCH_LIVE = """() => {
  if (window.__labkitLiveWatch) window.__labkitLiveWatch.disconnect();
  window.__labkitLive = [];
  const seen = () => document.querySelectorAll('img.labkit-live-depth').forEach(e => {
    const shown = e.src && getComputedStyle(e).display !== 'none';
    if (shown && !window.__labkitLive.includes(e.src)) window.__labkitLive.push(e.src);
  });
  window.__labkitLiveWatch = new MutationObserver(seen);
  window.__labkitLiveWatch.observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['src', 'style']});
}"""
# A button's action is over once a busy line appeared and is gone again.
ACTION_DONE = "() => (window.__labkitBusy || []).length > 0 && !document.querySelector('.labkit-busy')"
# Texts of labels, buttons and toggle buttons that do not fit their box (cut with an ellipsis).
TRUNCATED = """(root) => [...root.querySelectorAll(
    '.widget-label, .jupyter-button, .widget-toggle-button, .widget-upload')]
  .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.trim())"""
TABLES = """(root) => [...root.querySelectorAll('table')].map(t => ({
  caption: t.caption ? t.caption.textContent.trim() : '',
  rows: [...t.querySelectorAll('tr')].map(r => [...r.querySelectorAll('td, th')].map(c => c.textContent.trim()))}))"""


class NotebookPage:
    """One browser page on a JupyterLab server: open a notebook, Run All, find panels, take screenshots,
    and keep every console error and uncaught page error it sees."""

    def __init__(self, page: Any, lab: JupyterLab, shots: Path = SHOTS) -> None:
        self.page, self.lab, self.shots = page, lab, shots
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        shots.mkdir(parents=True, exist_ok=True)

    def open(self, notebook: str) -> None:
        """Open ``notebooks/<notebook>.ipynb`` alone (the other kernels stopped) and wait for its kernel."""
        self.lab.shutdown_kernels()
        self.page.goto(self.lab.url(f"notebooks/{notebook}.ipynb"))
        self.page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
        self.page.wait_for_function(f"() => {IDLE}", timeout=120_000)

    def run_all(self, timeout_s: float = 300) -> None:
        """Run > Run All Cells, as a person does, and wait until every cell has run."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        self.page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        self.page.wait_for_function(RUN_ALL_DONE, timeout=timeout_s * 1000)

    def rerun_cell(self, text: str) -> None:
        """Run again the code cell that contains ``text`` (click into it, Shift+Enter) and wait for it."""
        cell = self.page.locator(".jp-NotebookPanel .jp-CodeCell", has_text=text).first
        before = cell.locator(".jp-InputPrompt").inner_text()
        cell.locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Shift+Enter")
        prompt = cell.locator(".jp-InputPrompt")
        wait_for(lambda: prompt.inner_text() not in (before, "[*]:"), 60, f"the cell with {text!r} to run again",
                 interval=0.1)

    def panel(self, name: str) -> Any:
        """The displayed panel of class ``name`` (``NumbersPanel`` …), rendered and scrolled into view."""
        loc = self.page.locator(f".labkit-{name.lower()}")
        loc.first.wait_for(timeout=60_000)
        loc.first.scroll_into_view_if_needed()
        return loc.first

    def shot(self, name: str, target: Any = None) -> Path:
        """A PNG of ``target`` (a locator) or of the window, under runs/browser/."""
        path = self.shots / f"{name}.png"
        (target or self.page).screenshot(path=str(path))
        return path

    def tables(self, root: Any) -> dict[str, list[list[str]]]:
        """The tables shown in ``root``, by caption: rows of cell texts."""
        return {t["caption"]: t["rows"] for t in root.evaluate(TABLES)}

    def truncated(self, root: Any) -> list[str]:
        return root.evaluate(TRUNCATED)

    def click(self, root: Any, button: str, timeout_s: float = 120) -> list[str]:
        """Click the button named ``button`` in ``root`` and wait for its action to end; returns the busy
        lines shown meanwhile (every action shows one)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        self.page.evaluate(WATCH_BUSY)
        self.button(root, button).click()
        try:
            self.page.wait_for_function(ACTION_DONE, timeout=timeout_s * 1000)
        except PlaywrightTimeout:
            raise AssertionError(f"{button}: no busy line came and went within {timeout_s:g} s; the panel shows:\n"
                                 f"{root.inner_text()[-2000:]}") from None
        return self.page.evaluate("() => [...new Set(window.__labkitBusy)]")

    def watch_live(self) -> None:
        """From now on, count the frames live depth plots show (see :meth:`live_frames`)."""
        self.page.evaluate(WATCH_LIVE)

    def live_frames(self) -> int:
        """Frames the live depth plots showed since :meth:`watch_live`."""
        return self.page.evaluate("() => (window.__labkitLive || []).length")

    def out(self, panel: Any) -> str:
        """What the panel's output area shows, as text."""
        return panel.locator(".widget-output").last.inner_text().strip()

    @staticmethod
    def button(root: Any, name: str) -> Any:
        """The button (or toggle button) whose text is ``name`` (an icon's glyph aside)."""
        return root.locator("button").filter(has_text=re.compile(rf"^\s*{re.escape(name)}\s*$")).first

    @staticmethod
    def field(root: Any, label: str) -> Any:
        """The input of the widget labelled ``label``."""
        box = root.locator(".widget-inline-hbox", has=root.page.locator(f"label:text-is('{label}')"))
        return box.locator("input, textarea, select").first

    @staticmethod
    def figure_size(root: Any) -> list[list[int]]:
        """(width, height) of the pictures shown in ``root`` (a live depth plot's frame is not one: it hides
        once its work is over, its finished figure shown instead)."""
        return root.locator("img:not(.labkit-live-depth)").evaluate_all(
            "els => els.map(e => [e.naturalWidth, e.naturalHeight])")

    def notebook_text(self) -> str:
        return self.page.locator(".jp-NotebookPanel").first.inner_text()

    def problems(self) -> list[str]:
        """What a person must never see: console errors, widgets that failed, tracebacks, errors of cells."""
        text = self.notebook_text()
        found = list(self.errors)
        found += [w for w in ("Error displaying widget", "Traceback") if w in text]
        found += [f"cell output on stderr: {e.inner_text()[:300]}" for e in
                  self.page.locator('.jp-NotebookPanel [data-mime-type="application/vnd.jupyter.stderr"]').all()]
        return found

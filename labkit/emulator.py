"""The embedded emulator: moto's server, on 127.0.0.1 only.

Use it from Python as a context manager::

    with Emulator() as emu:          # a free port on 127.0.0.1
        settings = Settings.load(endpoint_url=emu.url)

or from the shell with ``labkit emulator`` (foreground) or ``labkit up`` (background).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from labkit.errors import EmulatorError

HOST = "127.0.0.1"  # never 0.0.0.0: the emulator accepts any credentials
READY_PREFIX = "labkit emulator listening on "


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when an emulator answers at ``url``."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/moto-api/", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url, timeout=1.0):
            return
        time.sleep(0.05)
    raise EmulatorError(f"the emulator at {url} did not answer within {timeout:.0f} s")


class Emulator:
    """moto's threaded server bound to 127.0.0.1; ``port=0`` picks a free port."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._server = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise EmulatorError("the emulator is not running")
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def start(self) -> Emulator:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise EmulatorError("the embedded emulator needs moto: pip install 'labkit[emulator]'") from exc
        # moto logs every request at INFO through werkzeug: keep the terminal readable.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        if self.port:
            # moto's server thread would die silently on a busy port and leave start() waiting forever:
            # find out first.
            with socket.socket() as probe:
                try:
                    probe.bind((HOST, self.port))
                except OSError as exc:
                    raise EmulatorError(f"cannot listen on {HOST}:{self.port}: {exc}") from exc
        server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        try:
            server.start()
        except OSError as exc:
            raise EmulatorError(f"cannot listen on {HOST}:{self.port}: {exc}") from exc
        self._server = server
        wait_healthy(self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(port: int = 0, ready_file: Path | None = None) -> None:
    """Run the emulator in the foreground until SIGINT or SIGTERM (``labkit emulator``).

    With ``ready_file``, the URL is also written there once the emulator answers (``labkit up`` waits
    for it).
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Emulator(port) as emu:
        print(READY_PREFIX + emu.url, flush=True)
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(emu.url)
            os.replace(tmp, ready_file)
        stop.wait()
    print("labkit emulator stopped", flush=True)


def spawn(state_dir: Path, port: int = 0, timeout: float = 30.0) -> tuple[int, str]:
    """Start ``labkit emulator`` as a background process; returns (pid, url) once it answers."""
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ready = state_dir / "emulator.url"
    ready.unlink(missing_ok=True)
    with open(logs / "emulator.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "labkit", "emulator", "--port", str(port), "--ready-file", str(ready)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise EmulatorError(f"the emulator did not start; see {logs / 'emulator.log'}")
        time.sleep(0.05)
    url = ready.read_text().strip()
    ready.unlink(missing_ok=True)
    wait_healthy(url, timeout=max(1.0, deadline - time.monotonic()))
    return proc.pid, url


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM a background process, then SIGKILL after ``timeout``; True if it was running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, reaped or not, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

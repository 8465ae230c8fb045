"""The embedded emulator: moto's server, on 127.0.0.1 only.

Use it from Python as a context manager::

    with Emulator() as emu:          # a free port on 127.0.0.1
        settings = Settings.load(endpoint_url=emu.url)

or from the shell with ``labkit emulator`` (foreground) or ``labkit up`` (background).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path
from types import TracebackType

from labkit import endpoints
from labkit.errors import EmulatorError, WaitTimeout
from labkit.processes import Child, python_module
from labkit.waiting import wait_for

HOST = "127.0.0.1"  # never 0.0.0.0: the emulator accepts any credentials
READY_PREFIX = "labkit emulator listening on "


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when an emulator (or any SQS/S3 service) answers at ``url``: moto's and others alike, and
    without moto's ``/moto-api/`` page, which lists the emulator's whole state (seconds, once full)."""
    return endpoints.reachable(url, timeout)


def wait_healthy(url: str, timeout: float = 15.0) -> None:
    try:
        wait_for(lambda: healthy(url, timeout=1.0), timeout, f"the emulator at {url} to answer")
    except WaitTimeout as exc:
        raise EmulatorError(f"the emulator at {url} did not answer within {timeout:.0f} s") from exc


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
        # As S3 does: another account's bucket answers 403 (moto lets any account in unless told otherwise;
        # it reads this variable on every request).
        os.environ.setdefault("MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS", "false")
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
    # The handler only records the signal. (Setting a threading.Event from a handler can deadlock: the
    # handler runs in the main thread, and if that thread was just entering Event.wait it holds the
    # event's lock: the likely cause of an emulator, sent SIGTERM just as it became ready, seen not to stop
    # within 30 s in a test run.)
    signals: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: signals.append(signum))
    with Emulator(port) as emu:
        print(READY_PREFIX + emu.url, flush=True)
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(emu.url)
            os.replace(tmp, ready_file)
        while not signals:
            time.sleep(0.2)
    print("labkit emulator stopped", flush=True)


def spawn(state_dir: Path, port: int = 0, timeout: float = 30.0) -> tuple[Child, str]:
    """Start ``labkit emulator`` as a background process; returns (child, url) once it answers."""
    log = state_dir / "logs" / "emulator.log"
    ready = state_dir / "emulator.url"
    ready.unlink(missing_ok=True)
    child = Child.spawn(python_module("labkit", "emulator", "--port", str(port), "--ready-file", str(ready)), log=log)

    def started() -> bool:
        if not child.alive():
            raise EmulatorError(f"the emulator did not start; see {log}")
        return ready.exists()
    try:
        wait_for(started, timeout, "the emulator to start")
        url = ready.read_text().strip()
        ready.unlink(missing_ok=True)
        wait_healthy(url, timeout=timeout)
    except (EmulatorError, WaitTimeout) as exc:
        child.stop(timeout=5)
        raise EmulatorError(f"the emulator did not start: {exc}; see {log}") from exc
    return child, url

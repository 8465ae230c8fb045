"""A tiny TCP proxy on 127.0.0.1 that a test can cut and restore, to make the emulator unreachable for
real (restarting the emulator would lose its state).

    with TcpProxy(emulator_port) as proxy:
        settings = settings.replace(endpoint_url=proxy.url)
        proxy.cut()      # open connections are reset, new ones are accepted and reset at once
        proxy.restore()  # connections reach the emulator again
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

HOST = "127.0.0.1"
# SO_LINGER on, timeout 0: close() sends a reset, as a dropped network path looks to the client.
_RESET = struct.pack("ii", 1, 0)


def _reset(sock: socket.socket) -> None:
    """Drop a connection now. shutdown() first: a bare close() does nothing to the connection while
    another thread is blocked in recv() on it, and the peer would wait for its read timeout."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:``target_port``; ``cut()`` and ``restore()`` the path."""

    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._cut = False
        self._closed = threading.Event()
        self.cuts = 0
        self.refused = 0  # connections reset while cut
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def cut(self) -> None:
        """Reset every open connection and every new one until :meth:`restore`."""
        with self._lock:
            self._cut = True
            self.cuts += 1
            live, self._live = self._live, set()
        for sock in live:
            _reset(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- inside ---------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                cut = self._cut
            if cut:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._cut:  # cut while connecting
                    _reset(client)
                    _reset(upstream)
                    continue
                self._live.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy one direction; when it ends (either side closed), close both (HTTP needs no half-close)."""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            mine = {src, dst} & self._live
            self._live -= mine
        for sock in mine:
            sock.close()

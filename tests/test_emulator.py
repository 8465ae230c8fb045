"""The embedded emulator: 127.0.0.1 only, answers, stops cleanly, runs in the background."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import pytest

from labkit.emulator import Emulator, healthy, spawn
from labkit.errors import EmulatorError
from labkit.processes import pid_alive

pytestmark = pytest.mark.spawns  # each test starts an emulator of its own


def test_binds_loopback_only():
    with Emulator() as emu:
        assert urlparse(emu.url).hostname == "127.0.0.1"
        assert emu._server._server.socket.getsockname()[0] == "127.0.0.1"
        assert healthy(emu.url)
        url = emu.url
    assert not healthy(url)


def test_port_in_use_is_a_clear_error():
    with Emulator() as emu, pytest.raises(EmulatorError, match="cannot listen"):
        Emulator(urlparse(emu.url).port).start()


def test_not_reachable_on_other_addresses():
    # Every non-loopback address of this machine (if it has any) must refuse the emulator's port.
    others = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            others.add(info[4][0])
    except socket.gaierror:
        pass
    others = {a for a in others if not a.startswith("127.")}
    with Emulator() as emu:
        port = urlparse(emu.url).port
        for addr in others:
            with socket.socket() as s:
                s.settimeout(1)
                assert s.connect_ex((addr, port)) != 0, f"emulator reachable on {addr}:{port}"


def test_spawn_in_background_and_stop(tmp_path):
    child, url = spawn(tmp_path)
    try:
        assert pid_alive(child.pid) and healthy(url)
        assert urlparse(url).hostname == "127.0.0.1"
    finally:
        assert child.stop()
    assert not pid_alive(child.pid)
    assert (tmp_path / "logs" / "emulator.log").exists()

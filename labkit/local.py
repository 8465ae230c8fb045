"""Background processes on this machine: what ``labkit up`` starts and ``labkit down`` stops.

The state file records them (process ids, the emulator's URL); no credential is ever written there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from labkit import emulator, provision
from labkit.aws.clients import Clients, credentials_configured
from labkit.config import Settings, read_state, update_state, write_state
from labkit.errors import ConfigError


def choose_local(settings: Settings, local: bool | None) -> bool:
    """Use the embedded emulator? Asked explicitly, or when no endpoint and no credentials are set."""
    if local is not None:
        return local
    return settings.endpoint_url is None and not credentials_configured()


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _ours(entry: dict[str, Any]) -> bool:
    """Is the recorded process still the one we started (and not a reused pid)?"""
    pid = entry.get("pid")
    if not isinstance(pid, int) or not emulator.pid_alive(pid):
        return False
    started = entry.get("start")
    return started is None or _proc_start(pid) in (None, started)


def spawn_worker(state_dir: Path, index: int, concurrency: int = 4, roles: str = "numbers,images",
                 extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start ``python -m worker`` in the background, logging to ``<state_dir>/logs/worker-<i>.log``."""
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LABKIT_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    with open(logs / f"worker-{index}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "--queues", roles, "--concurrency", str(concurrency)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    return {"pid": proc.pid, "start": _proc_start(proc.pid), "log": str(logs / f"worker-{index}.log")}


def up(settings: Settings, local: bool | None = None, workers: int = 1, concurrency: int = 4) -> dict[str, Any]:
    """Start the emulator if local, provision, start ``workers`` local workers; write the state file."""
    state_dir = Path(settings.state_dir)
    state = read_state(state_dir)
    use_local = choose_local(settings, local)
    if use_local:
        emu = state.get("emulator")
        if emu and _ours(emu) and emulator.healthy(emu["url"]):
            url = emu["url"]
        else:
            pid, url = emulator.spawn(state_dir)
            state["emulator"] = {"pid": pid, "start": _proc_start(pid), "url": url}
        settings = settings.replace(endpoint_url=url)
    elif settings.is_local and not emulator.healthy(settings.endpoint_url or ""):
        raise ConfigError(f"nothing answers at {settings.endpoint_url}; run `labkit up --local` for the emulator")
    clients = Clients(settings)
    report = provision.ensure(clients)
    state.update({
        "endpoint_url": settings.endpoint_url, "region": settings.region, "bucket": report.bucket,
        "local": use_local, **settings.queue_names(),
    })
    running = [w for w in state.get("workers", []) if _ours(w)]
    write_state(state_dir, {**state, "workers": running})
    # The workers read the state file; the endpoint is passed explicitly so that an endpoint variable in
    # this shell cannot point them elsewhere than what `up` just provisioned.
    endpoint_env = {"LABKIT_ENDPOINT_URL": settings.endpoint_url} if settings.endpoint_url else {}
    for i in range(len(running), workers):
        running.append(spawn_worker(state_dir, i, concurrency, extra_env=endpoint_env))
    state["workers"] = running
    write_state(state_dir, state)
    return {"state": state, "report": report, "settings": settings}


def down(settings: Settings, timeout: float = 30.0) -> dict[str, Any]:
    """Stop what ``up`` started: workers (SIGTERM, then SIGKILL after ``timeout``), leftover reply
    queues, the emulator. Keeps nothing running."""
    state_dir = Path(settings.state_dir)
    state = read_state(state_dir)
    stopped = [w["pid"] for w in state.get("workers", []) if _ours(w) and emulator.stop_pid(w["pid"], timeout)]
    cleaned: list[str] = []
    emu = state.get("emulator")
    if settings.is_local:
        reachable = bool(settings.endpoint_url) and emulator.healthy(settings.endpoint_url or "")
    else:
        reachable = True
    if settings.endpoint_url or not state.get("local"):
        try:
            if reachable:
                cleaned = provision.cleanup_reply_queues(Clients(settings))
        except Exception:  # best effort: the emulator takes its queues with it anyway
            pass
    emulator_stopped = bool(emu and _ours(emu) and emulator.stop_pid(emu["pid"], 10))
    if state.get("local"):
        # The emulator's resources died with it: forget them, so the next `up` starts clean.
        for key in ("emulator", "endpoint_url", "local", "bucket"):
            state.pop(key, None)
    state["workers"] = []
    if state_dir.exists():
        update_state(state_dir, **{k: state.get(k) for k in ("emulator", "endpoint_url", "local", "bucket")},
                     workers=[])
    return {"workers_stopped": stopped, "reply_queues_deleted": cleaned, "emulator_stopped": emulator_stopped}

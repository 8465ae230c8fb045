"""Background processes on this machine: what ``labkit up`` starts and ``labkit down`` stops.

The state file records them (``Child.record()``: process id, start time, log; the emulator's URL); no
credential is ever written there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit import emulator, endpoints, provision
from labkit.aws.clients import Clients, credentials_configured
from labkit.config import Settings, read_state, update_state, write_state
from labkit.errors import ConfigError
from labkit.processes import Child, python_module, settings_env, stop_all
from labkit.waiting import poll


def choose_local(settings: Settings, local: bool | None) -> bool:
    """Use the embedded emulator? Asked explicitly, or when no endpoint and no credentials are set."""
    if local is not None:
        return local
    return settings.endpoint_url is None and not credentials_configured()


def where_up_goes(settings: Settings) -> str:
    """Where ``up`` is about to make queues and a bucket when not on the embedded emulator, said before it
    does: on AWS they cost money; an endpoint is named by what answers there (moto, fauxqs, LocalStack)."""
    url = settings.endpoint_url
    if url is None or endpoints.is_aws(url):
        return (f"using real AWS in {settings.region}: queues and a bucket will be created (they cost money while "
                "they hold data; `labkit teardown` deletes them)")
    what = endpoints.identify(url).label if endpoints.reachable(url) else f"the endpoint {url}"
    return f"using {what}: queues and a bucket will be made there (`labkit teardown` deletes them)"


BACKENDS = ("local", "aws", "auto")
EMULATOR_POLL_WAIT = 2  # seconds a local worker's receive waits on an emulator on this machine (default: 10)


def resolve_backend(backend: str, settings: Settings) -> str:
    """"local" or "aws". "auto": local when the state file points at the emulator or when neither an
    endpoint nor AWS credentials are configured; AWS otherwise."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "local" if settings.is_local or choose_local(settings, None) else "aws"
    return backend


def running(records: list[dict[str, Any]] | None) -> list[Child]:
    """The recorded processes that still run (and are still ours)."""
    children = [Child.from_record(r) for r in records or []]
    return [c for c in children if c is not None and c.alive()]


def spawn_worker(settings: Settings, index: int, concurrency: int = 4, lanes: str = "numbers,images",
                 poll_wait: int | None = None) -> Child:
    """Start ``python -m worker`` in the background, logging to ``<state_dir>/logs/worker-<i>.log``.

    Its settings are passed explicitly, so that an endpoint variable in this shell cannot point it
    elsewhere than what ``up`` provisioned. It logs a line per job (``-v``): this log is where a lab's
    user looks to see the worker at work. ``poll_wait``: its receive wait (default: the worker's own)."""
    log = Path(settings.state_dir) / "logs" / f"worker-{index}.log"
    args = python_module("worker", "--queues", lanes, "--concurrency", str(concurrency), "--verbose",
                         *(["--poll-wait", str(poll_wait)] if poll_wait is not None else []))
    return Child.spawn(args, env=settings_env(settings), log=log)


def up(settings: Settings, local: bool | None = None, workers: int = 1, concurrency: int = 4,
       progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Start the emulator if local, provision, start ``workers`` local workers; write the state file.

    Workers already running with other job modules than ``settings.job_modules`` are restarted. Right
    after a teardown, waits until SQS takes the queue names back (60 s after their deletion), telling
    ``progress`` how long."""
    state_dir = Path(settings.state_dir)
    state = read_state(state_dir)
    use_local = choose_local(settings, local)
    if use_local:
        emu = state.get("emulator") or {}
        if running([emu]) and emulator.healthy(emu.get("url", "")):
            url = emu["url"]
        else:
            child, url = emulator.spawn(state_dir)
            state["emulator"] = {**child.record(), "url": url}
        settings = settings.replace(endpoint_url=url)
    elif settings.endpoint_url and not endpoints.reachable(settings.endpoint_url):
        raise ConfigError(f"nothing answers at {settings.endpoint_url}: start the service there, or run "
                          "`labkit up --local` for the embedded emulator")
    wait_name_reuse(state.pop("queues_deleted", None), settings, progress)
    report = provision.ensure(Clients(settings), progress)
    settings = settings.replace(bucket=report.bucket)
    alive = running(state.get("workers"))
    if list(state.get("job_modules") or []) != list(settings.job_modules):
        stop_all(alive)  # they run other job kinds than asked for: start them again
        alive = []
    state.update({"endpoint_url": settings.endpoint_url, "region": settings.region, "bucket": report.bucket,
                  "local": use_local, "job_modules": list(settings.job_modules) or None, **settings.queue_names()})
    state = {k: v for k, v in state.items() if v is not None}
    records = [c.record() for c in alive]
    write_state(state_dir, {**state, "workers": records})
    # On an emulator on this machine an empty receive costs nothing: a short wait lets `down` (and a restart)
    # stop the workers in about a second, where a worker waits out its receive before it stops.
    poll_wait = EMULATOR_POLL_WAIT if settings.is_local else None
    for i in range(len(alive), workers):
        records.append(spawn_worker(settings, i, concurrency, poll_wait=poll_wait).record())
    state["workers"] = records
    write_state(state_dir, state)
    return {"state": state, "report": report, "settings": settings}


def record_queues_deleted(settings: Settings) -> None:
    """Note in the state file when the queues were deleted, for :func:`wait_name_reuse` (``up`` next)."""
    if Path(settings.state_dir).exists():
        update_state(settings.state_dir, queues_deleted={"at": time.time(), "endpoint": settings.endpoint_url,
                                                         "region": settings.region})


def wait_name_reuse(record: dict[str, Any] | None, settings: Settings,
                    progress: Callable[[str], None] | None = None) -> None:
    """Wait until 60 s have passed since this machine deleted the queues ``settings`` names (``record``, from
    :func:`record_queues_deleted`). Before then, SQS refuses the names, or still shows the deleted queues as
    if they existed: provisioning must not find them "fine"."""
    record = record or {}
    if (record.get("endpoint"), record.get("region")) != (settings.endpoint_url, settings.region):
        return
    left = float(record.get("at", 0)) + provision.SQS_NAME_REUSE_WAIT + 1 - time.time()
    if left <= 0:
        return
    for elapsed in poll(10.0, left):
        if progress is not None and left - elapsed >= 1:
            progress(f"the queues were deleted less than {provision.SQS_NAME_REUSE_WAIT} s ago (teardown), and SQS "
                     f"takes a deleted queue's name back only after that: waiting {left - elapsed:.0f} s more")


def down(settings: Settings, timeout: float = 30.0) -> dict[str, Any]:
    """Stop what ``up`` started: workers (SIGTERM, then SIGKILL after ``timeout``), the emulator; delete
    reply queues left by gone clients (idle for an hour; those of clients still running stay). Keeps
    nothing running."""
    state_dir = Path(settings.state_dir)
    state = read_state(state_dir)
    workers = running(state.get("workers"))
    stopped = [c.pid for c, was in zip(workers, stop_all(workers, timeout), strict=True) if was]
    cleaned = provision.ReplyCleanup()
    emu = state.get("emulator")
    reachable = endpoints.reachable(settings.endpoint_url) if settings.endpoint_url else True
    if (settings.endpoint_url or not state.get("local")) and reachable:
        try:
            cleaned = provision.cleanup_reply_queues(Clients(settings))
        except Exception:  # best effort: the emulator takes its queues with it anyway
            pass
    emulator_stopped = any(c.stop(10) for c in running([emu] if emu else []))
    if state.get("local"):
        # The emulator's resources died with it: forget them, so the next `up` starts clean.
        for key in ("emulator", "endpoint_url", "local", "bucket"):
            state.pop(key, None)
    if state_dir.exists():
        update_state(state_dir, **{k: state.get(k) for k in ("emulator", "endpoint_url", "local", "bucket")},
                     workers=[])
    return {"workers_stopped": stopped, "reply_queues_deleted": cleaned.deleted,
            "reply_queues_kept": cleaned.kept, "emulator_stopped": emulator_stopped}

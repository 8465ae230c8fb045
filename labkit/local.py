"""Background processes on this machine: what ``labkit up`` starts and ``labkit down`` stops.

The state file records them (``Child.record()``: process id, start time, log; the emulator's URL); no
credential is ever written there.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit import emulator, endpoints, provision
from labkit.aws.clients import Clients, credentials_configured
from labkit.config import Settings, forget_lab, read_state, record_lab, update_state, write_state
from labkit.errors import RENEW_HINT, ConfigError
from labkit.processes import Child, python_module, settings_env, start_time, stop_all
from labkit.waiting import poll


def runs_own_emulator(settings: Settings, state: dict[str, Any] | None = None) -> bool:
    """Is ``settings``' endpoint the embedded emulator that ``up`` started for this state folder (running or
    not)? The state file records its URL; ``up`` then starts it again if it stopped, and ``down`` stops it."""
    state = read_state(settings.state_dir) if state is None else state
    url = (state.get("emulator") or {}).get("url")
    return url is not None and url == settings.endpoint_url


def choose_local(settings: Settings, local: bool | None, state: dict[str, Any] | None = None) -> bool:
    """Use the embedded emulator? Asked explicitly; when the endpoint is the one ``up`` started here
    (``state``: the state file, read when not given); or when no endpoint and no credentials are set."""
    if local is not None:
        return local
    if settings.endpoint_url is not None:
        return runs_own_emulator(settings, state)
    return not credentials_configured()


def where_up_goes(settings: Settings) -> str:
    """Where ``up`` is about to make queues and a bucket when not on the embedded emulator, said before it
    does: on AWS they cost money; an endpoint is named by what answers there (another embedded emulator,
    fauxqs, LocalStack)."""
    url = settings.endpoint_url
    if url is None or endpoints.is_aws(url):
        return (f"using real AWS in {settings.region}: queues and a bucket will be created (they cost money while "
                "they hold data; `labkit teardown` deletes them)")
    if not endpoints.reachable(url):
        what = f"the endpoint {url}"
    else:
        found = endpoints.identify(url)
        # "moto" means nothing to a student: it is the embedded emulator, run by someone else's `up` or by hand.
        what = f"the embedded emulator at {url}, not started by this lab" if found.kind == "moto" else found.label
    return f"using {what}: queues and a bucket will be made there (`labkit teardown` deletes them)"


BACKENDS = ("local", "aws", "auto")
EMULATOR_POLL_WAIT = 2  # seconds a local worker's receive waits on an emulator on this machine (default: 10)
WORKER_START = 60.0  # seconds a new local worker may take to start serving (a busy machine, a cold import)


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


def worker_log(settings: Settings, index: int) -> Path:
    """``<state_dir>/logs/worker-<index>.log``."""
    return Path(settings.state_dir) / "logs" / f"worker-{index}.log"


def worker_state_file(state_dir: str | Path, pid: int) -> Path:
    """``<state_dir>/workers/<pid>.json``: what a local worker says of itself: ``serving`` once its queues are found
    and its loop runs (its ready file, :func:`wait_serving`), waiting for renewed credentials, stopped for want of
    them; gone after a warm stop. It names the process (``pid``, ``start``), so that a reused pid is not taken
    for it."""
    return Path(state_dir) / "workers" / f"{pid}.json"


def write_worker_state(state_dir: str | Path, pid: int, doc: dict[str, Any] | None) -> None:
    """Record (``doc``) or clear (None) a worker's own state, for ``labkit status``; nothing without a state
    folder (a worker run by hand elsewhere). Never a credential: a state and a one-line reason."""
    path = worker_state_file(state_dir, pid)
    if doc is None:
        path.unlink(missing_ok=True)
    elif Path(state_dir).is_dir():
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "start": start_time(pid), **doc}))
        os.replace(tmp, path)


def worker_notes(state_dir: str | Path, records: list[dict[str, Any]] | None) -> list[str]:
    """What the recorded workers said of themselves, one line each: waiting for renewed credentials (while it
    runs), or why it stopped (once it has)."""
    notes = []
    for record in records or []:
        child = Child.from_record(record)
        try:
            doc = json.loads(worker_state_file(state_dir, int(record["pid"])).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue
        alive = child is not None and child.alive()
        since, what = _hhmm(doc.get("since")), "expired" if doc.get("expired") else "were refused"
        if doc.get("status") == "waiting" and alive:
            notes.append(f"worker {doc['pid']}: waiting for renewed AWS credentials since {since} ({doc.get('code')}; "
                         f"it stops at {_hhmm(doc.get('until'))} if none come): {RENEW_HINT}")
        elif doc.get("status") == "stopped" and not alive:
            notes.append(f"worker {doc['pid']} stopped at {_hhmm(doc.get('at'))} (exit status {doc.get('exit')}): its "
                         f"AWS credentials {what} at {since} ({doc.get('code')}) and none came within "
                         f"{doc.get('limit', 0):g} s: {RENEW_HINT}, then `labkit up`")
    return notes


def _hhmm(at: float | None) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at or 0))


def spawn_worker(settings: Settings, index: int, concurrency: int = 4, lanes: str = "numbers,images",
                 poll_wait: int | None = None) -> Child:
    """Start ``python -m worker`` in the background, logging to ``<state_dir>/logs/worker-<i>.log``.

    Its settings are passed explicitly, so that an endpoint variable in this shell cannot point it
    elsewhere than what ``up`` provisioned. It logs a line per job (``-v``): this log is where a lab's
    user looks to see the worker at work. ``poll_wait``: its receive wait (default: the worker's own)."""
    log = worker_log(settings, index)
    args = python_module("worker", "--queues", lanes, "--concurrency", str(concurrency), "--verbose",
                         *(["--poll-wait", str(poll_wait)] if poll_wait is not None else []))
    return Child.spawn(args, env=settings_env(settings), log=log)


def up(settings: Settings, local: bool | None = None, workers: int = 1, concurrency: int = 4,
       progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Start the emulator if local, provision, start ``workers`` local workers and wait until they serve;
    write the state file.

    Workers already running with other job modules than ``settings.job_modules`` are replaced once the new
    ones serve; when a new worker cannot start (a job module that does not load, say), :class:`ConfigError`
    says why in the worker's own words and the running workers, and the job modules they run, stay. Right
    after a teardown, waits until SQS takes the queue names back (60 s after their deletion), telling
    ``progress`` how long. A state folder found rather than named is recorded as this machine's lab
    (:func:`labkit.config.record_lab`)."""
    state_dir = Path(settings.state_dir)
    state = read_state(state_dir)
    use_local = choose_local(settings, local, state)
    if use_local:
        settings = settings.replace(endpoint_url=_emulator(state, state_dir))
    elif settings.endpoint_url and not endpoints.reachable(settings.endpoint_url):
        raise ConfigError(f"nothing answers at {settings.endpoint_url}: start the service there, or run "
                          "`labkit up --local` for the embedded emulator")
    wait_name_reuse(state.pop("queues_deleted", None), settings, progress)
    report = provision.ensure(Clients(settings), progress)
    settings = settings.replace(bucket=report.bucket, job_modules=absolute_modules(settings.job_modules))
    alive = running(state.get("workers"))
    modules = list(state.get("job_modules") or [])
    replace = modules != list(settings.job_modules)  # they run other job kinds than asked for: replace them
    keep = [] if replace else alive
    state.update({"endpoint_url": settings.endpoint_url, "region": settings.region, "bucket": report.bucket,
                  "local": use_local, **settings.queue_names()})
    state = {k: v for k, v in state.items() if v is not None}
    write_state(state_dir, {**state, "workers": [c.record() for c in alive]})
    new = _start_workers(settings, workers - len(keep), {c.log for c in alive}, concurrency)
    try:
        wait_serving(new, settings.state_dir)
    except BaseException as exc:  # an interrupted `up` leaves no worker the state file does not know
        stop_all(new, 5)
        if not isinstance(exc, ConfigError):
            raise
        kept = (f"the {len(alive)} worker(s) already running keep serving (job modules: {', '.join(modules) or 'none'})"
                if alive else "no worker runs")
        fix = "; fix the module, or start without job modules: `LABKIT_JOB_MODULES= labkit up`"
        raise ConfigError(f"{exc}; {kept}{fix if settings.job_modules else ''}") from exc
    if replace:
        stop_all(alive)
    state.update(job_modules=list(settings.job_modules) or None, workers=[c.record() for c in keep + new])
    state = {k: v for k, v in state.items() if v is not None}
    write_state(state_dir, state)
    if not settings.state_named:
        record_lab(state_dir)  # found, not named: let labkit find it from any folder
    return {"state": state, "report": report, "settings": settings}


def _emulator(state: dict[str, Any], state_dir: Path) -> str:
    """The URL of this state folder's emulator: the running one, or a new one (recorded in ``state``)."""
    emu = state.get("emulator") or {}
    if running([emu]) and emulator.healthy(emu.get("url", "")):
        return str(emu["url"])
    child, url = emulator.spawn(state_dir)
    state["emulator"] = {**child.record(), "url": url}
    return url


def _start_workers(settings: Settings, count: int, busy: set[Path | None], concurrency: int) -> list[Child]:
    """Start ``count`` workers, each logging to a file no running worker writes to."""
    # On an emulator on this machine an empty receive costs nothing: a short wait lets `down` (and a restart)
    # stop the workers in about a second, where a worker waits out its receive before it stops.
    poll_wait = EMULATOR_POLL_WAIT if settings.is_local else None
    free = (i for i in itertools.count() if worker_log(settings, i) not in busy)
    return [spawn_worker(settings, next(free), concurrency, poll_wait=poll_wait) for _ in range(max(0, count))]


def wait_serving(children: list[Child], state_dir: str | Path, timeout: float = WORKER_START) -> None:
    """Wait until every worker in ``children`` (started with ``state_dir``) says it serves: its state file in
    ``state_dir`` says ``serving`` (written once its queues are found and its loop runs; read, not its log's
    wording); :class:`ConfigError` with the worker's own last words when one ends first, or says nothing within
    ``timeout`` seconds."""
    waiting = list(children)
    for _ in poll(0.1, timeout):
        waiting = [c for c in waiting if not serving(state_dir, c)]
        if not waiting:
            return
        ended = next((c for c in waiting if not c.alive()), None)
        if ended is not None:
            raise ConfigError(f"a new worker stopped as it started: {ended.last_error()} (log: {ended.log})")
    raise ConfigError(f"a new worker did not start serving within {timeout:.0f} s (log: {waiting[0].log})")


def serving(state_dir: str | Path, child: Child) -> bool:
    """Does ``child`` (a worker started with ``state_dir``) say in its state file that it serves?"""
    try:
        doc = json.loads(worker_state_file(state_dir, child.pid).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("status") == "serving" and doc.get("start") == child.start


def absolute_modules(modules: tuple[str, ...]) -> tuple[str, ...]:
    """Job modules with each ``.py`` file by its absolute path: the state file keeps them for the next ``up``,
    which may run from another folder."""
    return tuple(os.path.abspath(m) if m.endswith(".py") else m for m in modules)


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


def stop(settings: Settings, timeout: float = 30.0) -> dict[str, Any]:
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
    if state.get("local") or runs_own_emulator(settings.replace(endpoint_url=state.get("endpoint_url")), state):
        # The emulator's resources died with it: forget them, so the next `up` starts clean.
        for key in ("emulator", "endpoint_url", "local", "bucket"):
            state.pop(key, None)
    if state_dir.exists():
        update_state(state_dir, **{k: state.get(k) for k in ("emulator", "endpoint_url", "local", "bucket")},
                     workers=[])
    forget_lab(state_dir)  # nothing runs there now: another folder must not find it as the running lab
    return {"workers_stopped": stopped, "reply_queues_deleted": cleaned.deleted,
            "reply_queues_kept": cleaned.kept, "emulator_stopped": emulator_stopped}

"""The rig of one run: an endpoint, queues and a bucket of the run's own, its child processes, and the
meter that counts their API calls and CPU time."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

from labkit import emulator, endpoints, provision
from labkit.aws.clients import Clients, credentials_configured
from labkit.aws.queues import Queue
from labkit.aws.storage import Bucket
from labkit.bench.counts import CountedProcess, cpu_seconds, listening_pid
from labkit.bench.report import add
from labkit.config import Settings
from labkit.errors import ConfigError
from labkit.processes import Child, settings_env, stop_all

SETTLE_S = 0.3  # how long a warm-up job's last calls (the deletes after its answer) take to land


def settle() -> None:
    """Let a warm-up job's last calls land before counting starts (a fixed pause: there is no event
    that says "no call is still on its way")."""
    time.sleep(SETTLE_S)


class Calls:
    """API calls of a group of processes plus this process's counters, between :meth:`start` and
    :meth:`stop`; also the CPU time spent meanwhile by this process, the processes and the emulator
    (when it is a process of its own: ``emulator_pid``)."""

    def __init__(self, procs: Sequence[CountedProcess], *clients: Clients, emulator_pid: int | None = None) -> None:
        self.procs = procs
        self.clients = clients
        self.emulator_pid = emulator_pid
        self.cpu: dict[str, float] = {}
        self._before: list[dict[str, int]] = []
        self.parts: list[dict[str, int]] = []
        self._cpu0: dict[str, float] = {}

    def _now(self) -> list[dict[str, int]]:
        return [p.snapshot() for p in self.procs] + [c.counter.snapshot() for c in self.clients]

    def _cpu(self) -> dict[str, float]:
        out = {"client": time.process_time(), "workers": sum(cpu_seconds(p.pid) for p in self.procs)}
        if self.emulator_pid:
            out["emulator"] = cpu_seconds(self.emulator_pid)
        return out

    def start(self) -> None:
        self._before = self._now()
        self._cpu0 = self._cpu()

    def stop(self) -> dict[str, int]:
        """Calls since :meth:`start`, once the last answers' deletes have landed."""
        self.cpu = {k: v - self._cpu0.get(k, 0.0) for k, v in self._cpu().items()}
        settle()
        # Each process's and each client's own calls, in the order given (procs, then clients): who made them.
        self.parts = [_diff(a, b) for a, b in zip(self._now(), self._before, strict=True)]
        return add(*self.parts)


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


class Rig:
    """Queues and a bucket of this run's own (unique names) on one endpoint, and its child processes.

    ``Rig.open()`` uses the endpoint it is given (``endpoint``, or ``LABKIT_ENDPOINT_URL``: any SQS/S3
    service), else the emulator of ``labkit up`` when one runs, else starts a private one (a separate
    process, so that it does not share this process's interpreter lock) and stops it at the end.
    """

    def __init__(self, settings: Settings, work_dir: Path, log: Callable[[str], None] = lambda s: None,
                 emulator: Child | None = None) -> None:
        self.work_dir = work_dir
        self.log = log
        self.tag = uuid.uuid4().hex[:8]
        self.emulator = emulator  # the private emulator, stopped with the rig (None: not ours)
        self.endpoint = endpoints.identify(settings.endpoint_url)
        # The process serving the endpoint, when it runs on this machine apart from this one: its CPU time
        # is shown beside the client's and the workers'.
        self.endpoint_pid = emulator.pid if emulator else _server_pid(settings)
        names = {role: f"bench-{self.tag}-{name}" for role, name in settings.queue_names().items()}
        bucket = f"labkit-bench-{self.tag}"
        if not settings.is_local:
            bucket = f"labkit-bench-{Clients(settings).account_id()}-{settings.region}-{self.tag}"
        self.settings = settings.replace(bucket=bucket, state_dir=work_dir / "state", **names)
        self.clients = Clients(self.settings)
        self.queues: dict[str, Queue] = {}  # queues of this run's own beyond labkit's, by suffix
        self._procs: list[CountedProcess] = []
        self._spawned = 0

    @property
    def owns_endpoint(self) -> bool:
        return self.emulator is not None

    @property
    def where(self) -> str:
        """What the run measures, for its report: the endpoint by what it is, and where."""
        if not self.settings.endpoint_url:
            return "AWS " + self.settings.region
        label = self.endpoint.label
        if self.endpoint.kind == "moto" and self.settings.is_local:
            label = f"moto {_moto_version()} at {self.settings.endpoint_url}"
        return label + (" (started for this run)" if self.owns_endpoint else "")

    @classmethod
    @contextlib.contextmanager
    def open(cls, settings: Settings | None = None, aws: bool = False,
             log: Callable[[str], None] = lambda s: None, endpoint: str | None = None) -> Iterator[Rig]:
        """A provisioned rig; everything it created is deleted (or stopped) on exit."""
        with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
            work = Path(tmp)
            emu = None
            if settings is None:
                settings, emu = resolve_endpoint(aws, work, log, endpoint)
            rig = cls(settings, work, log, emulator=emu)
            try:
                provision.ensure(rig.clients)
                yield rig
            finally:
                rig.close()

    def close(self) -> None:
        """Stop every child process; then stop the private emulator, or delete what the run created."""
        stop_all([p.child for p in self._procs])
        self._procs.clear()
        if self.emulator is not None:
            self.emulator.stop(10)  # its resources go with it
            return
        with contextlib.suppress(Exception):
            self._delete_resources()

    def _delete_resources(self) -> None:
        for name in provision.queue_attributes(self.settings):
            with contextlib.suppress(Exception):
                queue = Queue.find(self.clients.sqs, name)
                if queue is not None:
                    queue.delete()
        for queue in self.queues.values():
            with contextlib.suppress(Exception):
                queue.delete()
        Bucket(self.clients.s3, self.settings.bucket or "").destroy()

    # -- processes -----------------------------------------------------------------------------------
    def spawn(self, *args: str) -> CountedProcess:
        """Start ``python -m labkit.bench <args>`` and wait until it serves."""
        return self.spawn_many([args])[0]

    def spawn_many(self, arg_lists: Sequence[Sequence[str]]) -> list[CountedProcess]:
        """Start one process per argument list, all at once, and wait until each serves (their start-ups
        overlap)."""
        procs = []
        for args in arg_lists:
            self._spawned += 1
            i = self._spawned
            procs.append(CountedProcess.spawn(args, settings_env(self.settings), self.work_dir / f"proc-{i}.log",
                                              self.work_dir / f"counts-{i}.json"))
        self._procs.extend(procs)
        for proc in procs:
            proc.wait_ready()
        return procs

    def workers(self, n: int, roles: str = "numbers", concurrency: int = 4) -> list[CountedProcess]:
        """``n`` real labkit worker processes (``worker.loop.Worker``, ``--poll-wait 1``)."""
        procs = self.spawn_many([("worker", "--queues", roles, "--concurrency", str(concurrency), "--poll-wait", "1")
                                 for _ in range(n)])
        for p in procs:
            p.wait_log(" serving ", timeout=30)  # its queues looked up: what is measured next is not its start-up
        return procs

    def stop(self, procs: Sequence[CountedProcess]) -> None:
        """Stop these processes, all at once (each reports its counts a last time)."""
        stop_all([p.child for p in procs])
        for p in procs:
            self._procs.remove(p)

    def meter(self, procs: Sequence[CountedProcess], *clients: Clients) -> Calls:
        """A :class:`Calls` meter that also reads the emulator's CPU time when it is this rig's process."""
        return Calls(procs, *clients, emulator_pid=self.endpoint_pid)

    # -- queues of the run's own ---------------------------------------------------------------------
    def create_queue(self, suffix: str, attributes: dict[str, str] | None = None) -> Queue:
        """A queue of this run's own, ``bench-<tag>-<suffix>``, made once (deleted with the rig)."""
        if suffix not in self.queues:
            self.queues[suffix] = Queue.create(self.clients.sqs, f"bench-{self.tag}-{suffix}", attributes,
                                               provision.TAGS)
        return self.queues[suffix]

    def reply_queue(self, suffix: str) -> Queue:
        """A reply queue named and configured like a Lab's own, ``labkit-reply-bench-<tag>-<suffix>``
        (made once, deleted with the rig)."""
        key = f"reply-{suffix}"
        if key not in self.queues:
            self.queues[key] = provision.create_reply_queue(self.clients, f"bench-{self.tag}-{suffix}")
        return self.queues[key]


def resolve_endpoint(aws: bool, work: Path, log: Callable[[str], None],
                     endpoint: str | None = None) -> tuple[Settings, Child | None]:
    """Settings for the run and the private emulator started for it (None if one is reused, or AWS).

    In order: real AWS with ``aws``; ``endpoint`` or the environment's endpoint (any SQS/S3 service);
    the emulator of ``labkit up``; a private emulator."""
    if aws:
        env = {k: v for k, v in os.environ.items() if k not in ("LABKIT_ENDPOINT_URL", "AWS_ENDPOINT_URL")}
        settings = Settings.load(env=env).replace(endpoint_url=None)
        if not credentials_configured():
            raise ConfigError("--aws needs AWS credentials (aws configure, AWS_PROFILE)")
        log(f"bench: real AWS in {settings.region}: this run creates queues and a bucket and deletes them at the end")
        return settings, None
    settings = Settings.load(endpoint_url=endpoint)
    url = settings.endpoint_url  # given, from the environment, or from the state file of `labkit up`
    asked = endpoint or os.environ.get("LABKIT_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    if url and endpoints.is_aws(url):
        raise ConfigError(f"{url} is AWS: use --aws (the run makes queues and a bucket there, at a cost)")
    if url and endpoints.reachable(url):
        log(f"bench: {endpoints.identify(url).label}" + ("" if asked else " (from labkit up)"))
        return settings, None
    if asked:
        raise ConfigError(f"nothing answers at {url}: start the service, or leave the endpoint out for a private "
                          "emulator")
    child, url = emulator.spawn(work)
    log(f"bench: started a private emulator at {url}")
    return Settings.load(env={}, state_dir=work / "state", endpoint_url=url, region=settings.region), child


def _server_pid(settings: Settings) -> int | None:
    """The process of another's that serves a loopback endpoint (None elsewhere, or when it is this one)."""
    if not settings.is_local or not settings.endpoint_url:
        return None
    port = urlparse(settings.endpoint_url).port
    pid = listening_pid(port) if port else None
    return pid if pid != os.getpid() else None


def _moto_version() -> str:
    try:
        from importlib.metadata import version
        return version("moto")
    except Exception:
        return "?"

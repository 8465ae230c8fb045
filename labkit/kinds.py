"""Job kinds and the lanes they travel on: the one registry that the client, the worker, provisioning,
dead letters and purge all read.

A **lane** is a request queue with its default reply queue and visibility timeout. There are two, named
as ``labkit worker --queues`` names them::

    numbers   requestQueue -> responseQueue   (visibility 60 s)
    images    imageInbox   -> imageOutbox     (visibility 120 s)

A **kind** is a type of job: the request's ``"kind"``, the lane it travels on and the handler a worker
runs for it. Built in: ``numbers`` (numbers lane) and ``image`` (images lane). Add your own::

    # my_kinds.py
    from labkit.kinds import job_kind

    @job_kind("wordcount")                       # on the numbers lane unless told otherwise
    def wordcount(payload: dict) -> dict:
        words = str(payload.get("text", "")).split()
        return {"words": len(words), "distinct": len(set(words))}

then name the module in ``LABKIT_JOB_MODULES`` (a dotted module name or a ``.py`` file; several are
separated by commas) for ``labkit up``, ``labkit worker`` and ``labkit deploy``, and send jobs with
``lab.submit("wordcount", {"text": ...})``. A handler takes the payload (and, if it declares a second
parameter, a :class:`Context`), returns a JSON-ready dict, and raises
:class:`~labkit.errors.InvalidInput` (or another :class:`~labkit.errors.JobError`) for bad input.

A kind of your own travels on a **queue of its own**, ``<requestQueue>-kind-<name>`` (:func:`kind_queue`, with
its dead-letter queue), made by the first client that sends one or the first worker that loads it: only workers
that load the kind read it, so the others (a class's shared fleet) never see it. Built-in kinds travel on their
lane's queue. See docs/protocol.md, "Your own job kinds".

Handlers are named by ``"module:function"`` until a worker needs them, so that a client can send an
image job without loading Pillow. This module imports neither boto3 nor the job code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.config import DLQ_SUFFIX, Settings
from labkit.errors import UNKNOWN_KIND, ConfigError, InvalidInput, JobError

# -- lanes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lane:
    """A request queue, its default reply queue and its visibility timeout, by settings field."""

    name: str
    request_field: str
    reply_field: str
    visibility_field: str
    legacy: str  # "module:function" answering the original lab's plain-text bodies on this lane
    inline_below: int = 0  # plain-text bodies up to this many characters run on the receiving thread

    def request_queue(self, settings: Settings) -> str:
        return getattr(settings, self.request_field)

    def reply_queue(self, settings: Settings) -> str:
        return getattr(settings, self.reply_field)

    def visibility(self, settings: Settings) -> int:
        return getattr(settings, self.visibility_field)

    def legacy_handler(self) -> Callable[[str, Context], str]:
        return _resolve(self.legacy)


# A number job whose body is this short (a few thousand numbers at most) takes well under a millisecond:
# the worker runs it on its receiving thread, not through the job threads, whose hand-off costs more
# than the job. Kept for speed: 9 µs of worker CPU a job, 3 µs inline against 12 pooled (docs/benchmark.md,
# "Speed where it pays").
INLINE_NUMBERS = 16 * 1024

LANES: dict[str, Lane] = {
    "numbers": Lane("numbers", "request_queue", "response_queue", "visibility_timeout",
                    "labkit.jobs.handlers:numbers_legacy", inline_below=INLINE_NUMBERS),
    "images": Lane("images", "image_inbox", "image_outbox", "image_visibility_timeout",
                   "labkit.jobs.handlers:image_legacy"),
}
# Short names for the four queues (``labkit purge``, ``labkit dlq``): name -> (lane, "request" | "reply").
QUEUE_ALIASES = {
    "requests": ("numbers", "request"), "numbers": ("numbers", "request"), "responses": ("numbers", "reply"),
    "inbox": ("images", "request"), "images": ("images", "request"), "outbox": ("images", "reply"),
}


def get_lane(name: str) -> Lane:
    """The lane called ``name``; :class:`ConfigError` naming the lanes otherwise."""
    try:
        return LANES[name]
    except KeyError:
        raise ConfigError(f"unknown queue role {name!r}: choose from {', '.join(LANES)}") from None


def lanes(names: Iterable[str] = LANES) -> list[Lane]:
    """The lanes called ``names`` (all by default), in order, each checked."""
    return [get_lane(n) for n in names]


def request_queues(settings: Settings) -> dict[str, str]:
    """Lane name -> request queue name."""
    return {ln.name: ln.request_queue(settings) for ln in LANES.values()}


def reply_queues(settings: Settings) -> dict[str, str]:
    """Lane name -> default reply queue name."""
    return {ln.name: ln.reply_queue(settings) for ln in LANES.values()}


def queue_name(settings: Settings, text: str) -> str:
    """The queue meant by ``text``: a short name (requests, responses, inbox, outbox, numbers, images)
    or a queue name as it is."""
    if text in QUEUE_ALIASES:
        ln, end = QUEUE_ALIASES[text]
        return LANES[ln].request_queue(settings) if end == "request" else LANES[ln].reply_queue(settings)
    return text


def queue_choices(settings: Settings) -> str:
    """The four queues with their short names, for a message: ``requestQueue (requests, numbers), ...``."""
    names: dict[str, list[str]] = {}
    for ln in LANES.values():
        names[ln.request_queue(settings)], names[ln.reply_queue(settings)] = [], []
    for alias in QUEUE_ALIASES:
        names[queue_name(settings, alias)].append(alias)
    return ", ".join(f"{name} ({', '.join(aliases)})" for name, aliases in names.items())


def source_queue(settings: Settings, text: str) -> str:
    """The request queue meant by ``text`` for dead letters: a short name, a request queue or its ``-dlq``."""
    name = queue_name(settings, text)
    return name[: -len(DLQ_SUFFIX)] if name.endswith(DLQ_SUFFIX) else name


# -- kinds ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What a handler may use besides its payload: the settings, the job's id, and the bucket the worker
    serves (``store``: ``get(key, max_bytes)``, ``open``, ``put(key, data, content_type)``, ``name``)."""

    settings: Settings
    store: Any
    job_id: str = ""


Handler = Callable[[dict[str, Any], Context], dict[str, Any]]


@dataclass(frozen=True)
class Kind:
    """A job kind: its name, its lane, its handler (a function, or ``"module:function"`` until needed)."""

    name: str
    lane: str
    target: str | Callable[..., dict[str, Any]]
    doc: str = ""
    # Inline bodies (no claim check) up to this many characters run on the worker's receiving thread:
    # only for work bounded by its size to well under a millisecond (no heartbeat or hard limit applies).
    inline_below: int = 0

    def handler(self) -> Handler:
        """The handler, imported on first use and kept."""
        handler = _HANDLERS.get(self.name)
        if handler is None or _HANDLERS_OF.get(self.name) is not self:
            fn = _resolve(self.target) if isinstance(self.target, str) else self.target
            handler = _HANDLERS[self.name] = _with_context(fn)
            _HANDLERS_OF[self.name] = self
        return handler


BUILTIN: dict[str, Kind] = {
    "numbers": Kind("numbers", "numbers", "labkit.jobs.handlers:numbers_job",
                    "a list of numbers in; count, min, max, mean, median, sum and std out", INLINE_NUMBERS),
    "image": Kind("image", "images", "labkit.jobs.handlers:image_job",
                  "an image in the bucket processed with Pillow operations; the result written beside it"),
}
_REGISTRY: dict[str, Kind] = dict(BUILTIN)
_HANDLERS: dict[str, Handler] = {}
_HANDLERS_OF: dict[str, Kind] = {}


def job_kind(name: str, lane: str = "numbers", doc: str | None = None) -> Callable[[Callable], Callable]:
    """Register the decorated function as the handler of job kind ``name`` on ``lane``."""
    if not valid_name(name):
        raise ConfigError(_NAME_RULE.format(name=name))
    get_lane(lane)

    def register(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        if name in BUILTIN:
            raise ConfigError(f"job kind {name!r} is built in and cannot be replaced")
        old = _REGISTRY.get(name)
        if old is not None and _qualname(old.target) != _qualname(fn):
            raise ConfigError(f"job kind {name!r} is registered twice: {_qualname(old.target)} and {_qualname(fn)}")
        _with_context(fn)  # check the signature now, not at the first job
        _REGISTRY[name] = Kind(name, lane, fn, doc if doc is not None else (inspect.getdoc(fn) or "").split("\n")[0])
        return fn
    return register


def get_kind(name: str) -> Kind:
    """The kind called ``name``; :class:`JobError` ``unknown_kind`` naming the known kinds otherwise."""
    kind = _REGISTRY.get(name)
    if kind is None:
        raise JobError(f"unknown job kind {name!r}; this worker knows {', '.join(sorted(_REGISTRY))}", UNKNOWN_KIND)
    return kind


def find_kind(name: str) -> Kind | None:
    """The kind called ``name``, or None."""
    return _REGISTRY.get(name)


def known() -> list[Kind]:
    """Every registered kind, built-in first."""
    return sorted(_REGISTRY.values(), key=lambda k: (k.name not in BUILTIN, k.name))


def unregister(name: str) -> None:
    """Forget a kind that was added with :func:`job_kind` (built-in kinds stay)."""
    if name not in BUILTIN:
        _REGISTRY.pop(name, None)


def request_lane(kind: str) -> Lane:
    """The lane of a job of ``kind``: its default reply queue and visibility timeout. A kind this process does not
    know counts as the numbers lane's (a client need not load the modules of the kinds it sends)."""
    known_kind = _REGISTRY.get(kind)
    return LANES[known_kind.lane if known_kind else "numbers"]


# -- a queue of its own per kind ----------------------------------------------------------------------------
# A kind of your own travels on <requestQueue>-kind-<name>, whatever its lane: the name depends on the kind alone,
# so a client that does not load the kind's module still sends to the queue its workers read.
KIND_INFIX = "-kind-"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAME_RULE = "a job kind needs a name of letters, digits, '-' and '_' (at most 64), got {name!r}"
SQS_NAME_MAX = 80


def valid_name(name: object) -> bool:
    """Is ``name`` a job kind's name: letters, digits, '-' and '_', at most 64?"""
    return isinstance(name, str) and _NAME.match(name) is not None


def kind_queue_prefix(settings: Settings) -> str:
    """What the names of every kind queue (and their dead-letter queues) start with: ``<requestQueue>-kind-``."""
    return settings.request_queue + KIND_INFIX


def kind_queue(settings: Settings, kind: str) -> str:
    """The request queue of a kind of one's own: ``<requestQueue>-kind-<kind>``. A name that would leave no room for
    ``-dlq`` within SQS's 80 characters keeps its start and ends in a hash of the whole (still one name per kind)."""
    name = kind_queue_prefix(settings) + kind
    room = SQS_NAME_MAX - len(DLQ_SUFFIX)
    if len(name) > room:
        name = name[: room - 9] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return name


def request_queue_for(settings: Settings, kind: str) -> str:
    """The queue a job of ``kind`` is sent to: its lane's request queue for a built-in kind, its own kind queue
    (:func:`kind_queue`) for any other. :class:`InvalidInput` for a name no kind can have."""
    if kind in BUILTIN:
        return LANES[BUILTIN[kind].lane].request_queue(settings)
    if not valid_name(kind):
        raise InvalidInput(_NAME_RULE.format(name=kind))
    return kind_queue(settings, kind)


def own_kinds(lane_names: Iterable[str]) -> list[Kind]:
    """The kinds of one's own registered here whose lane is one of ``lane_names``: a worker serving those lanes
    reads each one's kind queue."""
    wanted = set(lane_names)
    return [k for k in known() if k.name not in BUILTIN and k.lane in wanted]


def kind_of_queue(settings: Settings, name: str) -> str | None:
    """The kind whose request queue is called ``name`` (as its name shows it), or None for a queue that is no kind
    queue (a dead-letter queue included)."""
    prefix = kind_queue_prefix(settings)
    if not name.startswith(prefix) or name.endswith(DLQ_SUFFIX):
        return None
    return name[len(prefix):]


# -- your own modules ------------------------------------------------------------------------------------


def load_modules(specs: Iterable[str]) -> list[str]:
    """Import the modules that add job kinds: dotted names (importable here) or paths to ``.py`` files.
    Returns the kinds they added. :class:`ConfigError` names a module that cannot be loaded."""
    before = set(_REGISTRY)
    for spec in specs:
        try:
            if spec.endswith(".py"):
                _load_file(Path(spec))
            else:
                importlib.import_module(spec)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"cannot load job module {spec!r} (LABKIT_JOB_MODULES): "
                              f"{type(exc).__name__}: {exc}") from exc
    return sorted(set(_REGISTRY) - before)


def module_files(specs: Iterable[str]) -> list[tuple[str, Path]]:
    """(name inside a wheel, file) of each job module's source, for shipping to EC2 workers: a ``.py``
    file or single-file module by its name, a package's ``.py`` files under its folder."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        if spec.endswith(".py"):
            path = Path(spec)
            if not path.is_file():
                raise ConfigError(f"job module file {spec} does not exist")
            out.append((path.name, path))
            continue
        found = importlib.util.find_spec(spec.split(".")[0])
        if found is None or not found.origin:
            raise ConfigError(f"job module {spec!r} cannot be found from here: install it or give its .py file")
        origin = Path(found.origin)
        if origin.name != "__init__.py":
            out.append((origin.name, origin))
            continue
        root = origin.parent
        out += [(p.relative_to(root.parent).as_posix(), p) for p in sorted(root.rglob("*.py"))
                if "__pycache__" not in p.parts]
    return out


def module_names(specs: Iterable[str]) -> list[str]:
    """The import names of ``specs`` once shipped (``kinds/wordcount.py`` -> ``wordcount``)."""
    return [Path(s).stem if s.endswith(".py") else s for s in specs]


def _load_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"job module file {path} does not exist")
    name = f"labkit_job_module_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _resolve(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _qualname(target: str | Callable[..., Any]) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"


def _with_context(fn: Callable[..., dict[str, Any]]) -> Handler:
    """``fn`` as a two-argument handler: one that takes only the payload gets a wrapper."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"job handler {fn!r} has no readable signature") from exc
    if len(params) >= 2:
        return fn
    if len(params) == 1:
        return lambda payload, ctx: fn(payload)
    raise ConfigError(f"job handler {_qualname(fn)} must take the payload (and optionally a Context)")

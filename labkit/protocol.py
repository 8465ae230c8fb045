"""The message protocol (v1): job requests and results as JSON, the original lab's plain-text forms,
and the claim check that moves large payloads through S3. See docs/protocol.md.

This module does no I/O of its own: the claim check takes a *store* with ``put(key, data, content_type)``,
``get(key, max_bytes=None)``, ``open(key, max_bytes=None)`` and ``delete(key)`` (a
:class:`labkit.aws.storage.Bucket`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol

import numpy as np
from numpy.lib import format as npy_format

from labkit.config import PAYLOADS_PREFIX
from labkit.errors import INVALID_INPUT, UNSUPPORTED_VERSION, InvalidInput, LabkitError, ProtocolError, TooLarge

VERSION = 1
MAX_ID_LENGTH = 128


class Readable(Protocol):
    """An object's body read in pieces; ``size`` is its length in bytes."""

    size: int

    def read(self, amt: int | None = ...) -> bytes: ...

    def readinto(self, buffer: Any) -> int: ...

    def __enter__(self) -> Readable: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class Store(Protocol):
    name: str

    def put(self, key: str, data: bytes, content_type: str = ...) -> None: ...

    def get(self, key: str, max_bytes: int | None = None) -> bytes: ...

    def open(self, key: str, max_bytes: int | None = None) -> Readable: ...

    def delete(self, key: str) -> None: ...


def new_id() -> str:
    """A fresh job id: 32 hex characters, 128 random bits from the OS (unpredictable: a class shares queues,
    and ids name S3 keys)."""
    return os.urandom(16).hex()


def _dumps(obj: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON; a payload holding them is refused before sending.
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except RecursionError as exc:
        raise ValueError(f"the value is nested too deeply: {exc}") from None


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A job on its way to a worker."""

    kind: str
    payload: dict[str, Any] | None = None
    id: str = field(default_factory=new_id)
    reply_to: str | None = None
    sent_at: float = field(default_factory=time.time)
    payload_ref: dict[str, Any] | None = None
    v: int = VERSION
    # Events of earlier lives of this request (a redrive adds them): the worker passes them on in its reply.
    history: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"v": self.v, "id": self.id, "kind": self.kind, "sent_at": self.sent_at}
        if self.reply_to:
            d["reply_to"] = self.reply_to
        if self.history:
            d["history"] = self.history
        if self.payload_ref is not None:
            d["payload_ref"] = self.payload_ref
        else:
            d["payload"] = self.payload
        return d

    def encode(self) -> str:
        try:
            return _dumps(self.to_dict())
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"the job's payload cannot be sent as JSON: {exc}") from exc

    @classmethod
    def decode(cls, body: str | bytes) -> JobRequest:
        """Parse a request body; any problem raises :class:`ProtocolError` keeping the raw body.

        When the body is a JSON object, the error carries what could be read of it in ``partial``
        (id, kind, reply_to), so the worker can still address an error reply.
        """
        return cls.from_dict(_load_object(body), body)

    @classmethod
    def from_dict(cls, data: dict[str, Any], raw: str | bytes | None = None) -> JobRequest:
        """The request a decoded JSON object describes (see :meth:`decode`)."""
        def fail(msg: str, code: str = INVALID_INPUT) -> ProtocolError:
            return ProtocolError(msg, raw=raw, code=code, partial=addressing(data))

        v = data.get("v")
        if v is None:
            raise fail("request has no protocol version 'v'")
        if isinstance(v, bool):  # true == 1 in Python, but it is no version
            raise fail(f"request 'v' must be the integer {VERSION}, got {json.dumps(v)}")
        if v != VERSION:
            raise fail(f"protocol version {v!r} is not supported (this worker speaks v{VERSION})", UNSUPPORTED_VERSION)
        job_id = data.get("id")
        if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_ID_LENGTH:
            raise fail(f"request 'id' must be a non-empty string of at most {MAX_ID_LENGTH} characters")
        kind = data.get("kind")
        if not isinstance(kind, str) or not kind:
            raise fail("request 'kind' must be a non-empty string")
        reply_to = data.get("reply_to")
        if reply_to is not None and not isinstance(reply_to, str):
            raise fail("request 'reply_to' must be a queue URL string")
        sent_at = data.get("sent_at", 0.0)
        if isinstance(sent_at, bool) or not isinstance(sent_at, int | float) or not math.isfinite(sent_at):
            sent_at = 0.0
        payload, ref = data.get("payload"), data.get("payload_ref")
        if ref is not None:
            if not (isinstance(ref, dict) and isinstance(ref.get("bucket"), str) and isinstance(ref.get("key"), str)):
                raise fail("request 'payload_ref' must be an object with string 'bucket' and 'key'")
            if not ref["key"].startswith(PAYLOADS_PREFIX) or ".." in ref["key"].split("/"):
                raise fail(f"request 'payload_ref' key must lie under {PAYLOADS_PREFIX}")
            payload = None
        elif not isinstance(payload, dict):
            raise fail("request 'payload' must be a JSON object")
        history = data.get("history")
        return cls(kind=kind, payload=payload, id=job_id, reply_to=reply_to, sent_at=float(sent_at),
                   payload_ref=ref, v=VERSION, history=history if isinstance(history, list) else None)


RESULT_FIELDS = frozenset({"id", "ok", "kind", "result", "error", "worker", "timings", "result_ref", "v", "events"})


@dataclass(frozen=True, slots=True)
class JobResult:
    """A worker's answer to one request."""

    id: str
    ok: bool
    kind: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    worker: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    result_ref: dict[str, Any] | None = None
    v: int = VERSION
    # The worker's side of the job's life (labkit.timeline): received, started, finished, replied, ...
    events: list[dict[str, Any]] | None = None

    @classmethod
    def success(cls, job_id: str, kind: str, result: dict[str, Any], **kw: Any) -> JobResult:
        return cls(id=job_id, ok=True, kind=kind, result=result, **kw)

    @classmethod
    def failure(cls, job_id: str, kind: str | None, code: str, message: str, **kw: Any) -> JobResult:
        return cls(id=job_id, ok=False, kind=kind, error={"code": code, "message": message}, **kw)

    def to_dict(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: that deep-copies every reply's result on the worker's hot path.
        d: dict[str, Any] = {"v": self.v, "id": self.id, "ok": self.ok}
        for name in ("kind", "result", "error", "worker", "result_ref", "events"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        if self.timings:
            d["timings"] = self.timings
        return d

    def encode(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def decode(cls, body: str | bytes) -> JobResult:
        data = _load_object(body)
        if data.get("v") != VERSION or not isinstance(data.get("id"), str) or not isinstance(data.get("ok"), bool):
            raise ProtocolError("not a labkit v1 result (needs 'v': 1, string 'id', boolean 'ok')", raw=body)
        return cls(**(data if data.keys() <= RESULT_FIELDS else {k: v for k, v in data.items() if k in RESULT_FIELDS}))


def note_body(job_id: str, events: list[dict[str, Any]]) -> str:
    """A worker's note about a job that is not its answer (a delivery it gave back): events only."""
    return _dumps({"v": VERSION, "id": job_id, "note": "events", "events": events})


def read_note(data: dict[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """(job id, events) of a decoded note body, or None when it is not one."""
    if data.get("v") == VERSION and data.get("note") == "events" and isinstance(data.get("id"), str) \
            and isinstance(data.get("events"), list):
        return data["id"], data["events"]
    return None


def _big_int(text: str) -> int | Decimal:
    # Python refuses int() of more than 4300 digits (a guard against quadratic work); such a literal
    # becomes a Decimal, which the job code refuses by name ("item 3 is an integer too large for 64 bits").
    return int(text) if len(text) <= 4000 else Decimal(text)


def json_loads(text: str | bytes) -> Any:
    """``json.loads``, except that integer literals too long for ``int()`` decode as ``Decimal``, so
    that the rest of the message (its id and reply queue) can still be read and answered."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        return json.loads(text, parse_int=_big_int)


def _load_object(body: str | bytes) -> dict[str, Any]:
    if isinstance(body, bytes):
        try:
            body_text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"message body is not valid UTF-8: {exc}", raw=body) from exc
    else:
        body_text = body
    try:
        data = json_loads(body_text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"message body is not valid JSON: {exc}", raw=body) from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"message body is JSON but not an object (got {type(data).__name__})", raw=body)
    return data


ADDRESS_FIELDS = ("id", "kind", "reply_to")


def addressing(data: dict[str, Any]) -> dict[str, str]:
    """The fields that address a reply (id, kind, reply_to) that a decoded object holds as strings."""
    return {k: data[k] for k in ADDRESS_FIELDS if isinstance(data.get(k), str)}


def peek(body: str | bytes) -> dict[str, str] | None:
    """:func:`addressing` of a body read without ever failing (numbers are left as text, so no literal
    is too large); None when the body is not a JSON object. For bodies that could not be decoded."""
    try:
        data = json.loads(body, parse_int=str, parse_float=str, parse_constant=str)
    except (ValueError, RecursionError):
        return None
    return addressing(data) if isinstance(data, dict) else None


def read_request(body: str) -> JobRequest | None:
    """Parse a request body once: the v1 request, or None for the original lab's plain text (anything
    that is not a JSON object). A JSON object that is no valid request raises :class:`ProtocolError`."""
    data = _object_or_none(body)
    return None if data is None else JobRequest.from_dict(data, body)


def is_legacy(body: str) -> bool:
    """True for the original lab's plain-text bodies: anything that is not a JSON object."""
    return _object_or_none(body) is None


def _object_or_none(body: str) -> dict[str, Any] | None:
    text = body.lstrip()
    if not text.startswith("{"):
        return None
    try:
        data = json_loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


# -- claim check ------------------------------------------------------------------------------------

def encode_request(req: JobRequest, store: Store | None, max_inline: int) -> str:
    """The request's body; a payload too large to travel inline is stored under ``payloads/``.

    A ``numbers`` payload holding a numpy array travels as a ``.npy`` object (compact, exact,
    no JSON text): ``payload_ref = {"bucket", "key", "format": "npy"}``.
    """
    numbers = (req.payload or {}).get("numbers")
    if isinstance(numbers, np.ndarray):
        if store is None:
            raise InvalidInput("a numpy payload needs a bucket to travel through")
        buf = io.BytesIO()
        np.save(buf, numbers, allow_pickle=False)
        key = f"{PAYLOADS_PREFIX}{req.id}.npy"
        _put_claim_check(store, key, buf.getvalue(), "application/x-npy")
        ref = {"bucket": store.name, "key": key, "format": "npy", "bytes": buf.tell()}
        return JobRequest(req.kind, None, req.id, req.reply_to, req.sent_at, ref).encode()
    body = req.encode()
    if len(body) * 4 <= max_inline or len(body.encode()) <= max_inline:  # UTF-8: at most 4 bytes a character
        return body
    if store is None:
        raise TooLarge(f"the request is {len(body):,} bytes, over {max_inline:,}, and no bucket is configured")
    data = _dumps(req.payload).encode()
    key = f"{PAYLOADS_PREFIX}{req.id}.json"
    _put_claim_check(store, key, data, "application/json")
    ref = {"bucket": store.name, "key": key, "format": "json", "bytes": len(data)}
    return JobRequest(req.kind, None, req.id, req.reply_to, req.sent_at, ref).encode()


def _put_claim_check(store: Store, key: str, data: bytes, content_type: str) -> None:
    """Store a claim-check object; when the upload fails or is interrupted (Ctrl-C), delete whatever of it reached
    the bucket, since no request will name it (an 80 MB list would otherwise wait two days for its expiry)."""
    try:
        store.put(key, data, content_type)
    except BaseException:
        with contextlib.suppress(Exception):
            store.delete(key)
        raise


def load_payload(req: JobRequest, store: Store | None, max_bytes: int) -> dict[str, Any]:
    """The request's payload, fetched from the store when it travelled by reference.

    A ``.npy`` payload is streamed into one new array (see :func:`read_npy`): the worker owns it and may
    let the job reorder it.
    """
    if req.payload_ref is None:
        return req.payload or {}
    ref = req.payload_ref
    if store is None or ref["bucket"] != store.name:
        raise InvalidInput(f"payload_ref names bucket {ref['bucket']!r}, which this worker does not serve")
    fmt = ref.get("format", "json")
    if fmt == "npy":
        with store.open(ref["key"], max_bytes=max_bytes) as stream:
            return {"numbers": read_npy(stream, ref["key"])}
    if fmt != "json":
        raise InvalidInput(f"payload_ref format {fmt!r} is unknown (json or npy)")
    data = store.get(ref["key"], max_bytes=max_bytes)
    try:
        payload = json_loads(data)
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer of > 4300 digits
        raise InvalidInput(f"payload {ref['key']} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidInput(f"payload {ref['key']} is not a JSON object")
    return payload


# Items converted per piece when a .npy payload's dtype is not the native int64/float64 it becomes.
NPY_PIECE = 1 << 16
INT64_MAX = 2**63 - 1


class _Counting:
    """Counts the bytes read through it (the size of a .npy header)."""

    def __init__(self, stream: Readable) -> None:
        self.stream = stream
        self.count = 0

    def read(self, amt: int | None = None) -> bytes:
        data = self.stream.read(amt)
        self.count += len(data)
        return data


def read_npy(stream: Readable, name: str) -> np.ndarray:
    """The 1-D array of numbers in a ``.npy`` stream, as a new native ``int64`` or ``float64`` array.

    The header is checked before any data is read: versions 1.0/2.0, one dimension, an integer or float
    dtype (either byte order; never pickles), and a data size that matches the stream's ``size``. The
    common ``<i8``/``<f8`` data is read straight into the result; other dtypes are converted piece by
    piece. A ``uint64`` array with a value above the int64 range is returned as ``uint64``, so the job
    can name that value. Raises :class:`InvalidInput` for anything else, naming ``name``.
    """
    counted = _Counting(stream)
    try:
        version = npy_format.read_magic(counted)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(counted)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(counted)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported (1.0 or 2.0)")
    except LabkitError:
        raise
    except Exception as exc:  # numpy raises several types for a corrupt header
        raise InvalidInput(f"payload {name} is not a readable .npy array: {exc}") from exc
    if len(shape) != 1:
        raise InvalidInput(f"payload {name} must hold a 1-D array of numbers, got a {len(shape)}-D array "
                           f"of shape {shape}")
    if dtype.kind not in "iuf" or dtype.hasobject:
        raise InvalidInput(f"payload {name} holds an array of {dtype}: numbers must be integers or floats")
    count = shape[0]
    if count < 0:
        raise InvalidInput(f"payload {name} is not a readable .npy array: its header announces {count} numbers")
    nbytes = count * dtype.itemsize
    available = stream.size - counted.count
    if available < nbytes:
        raise InvalidInput(f"payload {name} is truncated: its header announces {count:,} numbers "
                           f"({nbytes:,} bytes) but {available:,} bytes follow")
    if available > nbytes:
        raise InvalidInput(f"payload {name} has {available - nbytes:,} unexpected bytes after its {count:,} numbers")

    target = np.dtype(np.float64 if dtype.kind == "f" else np.uint64 if dtype == np.dtype("u8") else np.int64)
    array = np.empty(count, dtype=target)
    if dtype == target:
        got = stream.readinto(array.view(np.uint8))
    else:
        piece = np.empty(min(count, NPY_PIECE), dtype=dtype)
        got = 0
        for start in range(0, count, NPY_PIECE):
            part = piece[: min(NPY_PIECE, count - start)]
            got += stream.readinto(part.view(np.uint8))
            array[start : start + part.size] = part
    # Reading on to the end lets the transport check the length (and any checksum) of what it received.
    if got < nbytes or stream.read(1):
        raise InvalidInput(f"payload {name} is truncated or longer than its header says ({got:,} of {nbytes:,} "
                           "bytes of numbers)")
    if target == np.uint64 and count and int(array.max()) <= INT64_MAX:
        array = array.view(np.int64)
    return array


def encode_result(res: JobResult, store: Store | None, max_inline: int) -> str:
    """The result's body; a result too large to travel inline is stored under ``payloads/``."""
    body = res.encode()
    if len(body) * 4 <= max_inline or len(body.encode()) <= max_inline or store is None or res.result is None:
        return body
    data = _dumps(res.result).encode()
    key = f"{PAYLOADS_PREFIX}{res.id}.result.json"
    store.put(key, data, "application/json")
    ref = {"bucket": store.name, "key": key, "format": "json", "bytes": len(data)}
    return dataclasses.replace(res, result=None, result_ref=ref).encode()


def load_result(res: JobResult, store: Store | None) -> dict[str, Any] | None:
    """The result's content, fetched from the store when it travelled by reference."""
    if res.result_ref is None:
        return res.result
    if store is None:
        raise InvalidInput("the result travelled through S3 but no bucket is configured")
    return json.loads(store.get(res.result_ref["key"]))

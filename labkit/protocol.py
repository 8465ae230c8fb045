"""The message protocol (v1): job requests and results as JSON, the original lab's plain-text forms,
and the claim check that moves large payloads through S3. See docs/protocol.md.

This module does no I/O of its own: the claim check takes a *store* with ``put(key, data, content_type)``
and ``get(key, max_bytes=None)`` (a :class:`labkit.aws.storage.Bucket`).
"""

from __future__ import annotations

import io
import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from labkit.config import PAYLOADS_PREFIX
from labkit.errors import INVALID_INPUT, UNSUPPORTED_VERSION, InvalidInput, ProtocolError, TooLarge

VERSION = 1
KINDS = ("numbers", "image")
MAX_ID_LENGTH = 128


class Store(Protocol):
    name: str

    def put(self, key: str, data: bytes, content_type: str = ...) -> None: ...

    def get(self, key: str, max_bytes: int | None = None) -> bytes: ...


def new_id() -> str:
    """A fresh job id (32 hex characters)."""
    return uuid.uuid4().hex


def _dumps(obj: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON; a payload holding them is refused before sending.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class JobRequest:
    """A job on its way to a worker."""

    kind: str
    payload: dict[str, Any] | None = None
    id: str = field(default_factory=new_id)
    reply_to: str | None = None
    sent_at: float = field(default_factory=time.time)
    payload_ref: dict[str, Any] | None = None
    v: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        d = {"v": self.v, "id": self.id, "kind": self.kind, "sent_at": self.sent_at}
        if self.reply_to:
            d["reply_to"] = self.reply_to
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
        data = _load_object(body)
        partial = {k: data.get(k) for k in ("id", "kind", "reply_to") if isinstance(data.get(k), str)}

        def fail(msg: str, code: str = INVALID_INPUT) -> ProtocolError:
            return ProtocolError(msg, raw=body, code=code, partial=partial)

        v = data.get("v")
        if v != VERSION:
            if v is None:
                raise fail("request has no protocol version 'v'")
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
        return cls(kind=kind, payload=payload, id=job_id, reply_to=reply_to, sent_at=float(sent_at),
                   payload_ref=ref, v=VERSION)


@dataclass(frozen=True)
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

    @classmethod
    def success(cls, job_id: str, kind: str, result: dict[str, Any], **kw: Any) -> JobResult:
        return cls(id=job_id, ok=True, kind=kind, result=result, **kw)

    @classmethod
    def failure(cls, job_id: str, kind: str | None, code: str, message: str, **kw: Any) -> JobResult:
        return cls(id=job_id, ok=False, kind=kind, error={"code": code, "message": message}, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        if not self.timings:
            d.pop("timings", None)
        return d

    def encode(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def decode(cls, body: str | bytes) -> JobResult:
        data = _load_object(body)
        if data.get("v") != VERSION or not isinstance(data.get("id"), str) or not isinstance(data.get("ok"), bool):
            raise ProtocolError("not a labkit v1 result (needs 'v': 1, string 'id', boolean 'ok')", raw=body)
        known = {"id", "ok", "kind", "result", "error", "worker", "timings", "result_ref", "v"}
        return cls(**{k: v for k, v in data.items() if k in known})


def _load_object(body: str | bytes) -> dict[str, Any]:
    if isinstance(body, bytes):
        try:
            body_text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"message body is not valid UTF-8: {exc}", raw=body) from exc
    else:
        body_text = body
    try:
        data = json.loads(body_text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"message body is not valid JSON: {exc}", raw=body) from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"message body is JSON but not an object (got {type(data).__name__})", raw=body)
    return data


def is_legacy(body: str) -> bool:
    """True for the original lab's plain-text bodies: anything that is not a JSON object."""
    text = body.lstrip()
    if not text.startswith("{"):
        return True
    try:
        return not isinstance(json.loads(text), dict)
    except (json.JSONDecodeError, RecursionError):
        return True


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
        store.put(key, buf.getvalue(), "application/x-npy")
        ref = {"bucket": store.name, "key": key, "format": "npy", "bytes": buf.tell()}
        return JobRequest(req.kind, None, req.id, req.reply_to, req.sent_at, ref).encode()
    body = req.encode()
    if len(body.encode()) <= max_inline:
        return body
    if store is None:
        raise TooLarge(f"the request is {len(body):,} bytes, over {max_inline:,}, and no bucket is configured")
    data = _dumps(req.payload).encode()
    key = f"{PAYLOADS_PREFIX}{req.id}.json"
    store.put(key, data, "application/json")
    ref = {"bucket": store.name, "key": key, "format": "json", "bytes": len(data)}
    return JobRequest(req.kind, None, req.id, req.reply_to, req.sent_at, ref).encode()


def load_payload(req: JobRequest, store: Store | None, max_bytes: int) -> dict[str, Any]:
    """The request's payload, fetched from the store when it travelled by reference."""
    if req.payload_ref is None:
        return req.payload or {}
    ref = req.payload_ref
    if store is None or ref["bucket"] != store.name:
        raise InvalidInput(f"payload_ref names bucket {ref['bucket']!r}, which this worker does not serve")
    data = store.get(ref["key"], max_bytes=max_bytes)
    fmt = ref.get("format", "json")
    if fmt == "npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:  # numpy raises several types for corrupt files
            raise InvalidInput(f"payload {ref['key']} is not a readable .npy array: {exc}") from exc
        return {"numbers": arr}
    if fmt != "json":
        raise InvalidInput(f"payload_ref format {fmt!r} is unknown (json or npy)")
    try:
        payload = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"payload {ref['key']} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidInput(f"payload {ref['key']} is not a JSON object")
    return payload


def encode_result(res: JobResult, store: Store | None, max_inline: int) -> str:
    """The result's body; a result too large to travel inline is stored under ``payloads/``."""
    body = res.encode()
    if len(body.encode()) <= max_inline or store is None or res.result is None:
        return body
    data = _dumps(res.result).encode()
    key = f"{PAYLOADS_PREFIX}{res.id}.result.json"
    store.put(key, data, "application/json")
    ref = {"bucket": store.name, "key": key, "format": "json", "bytes": len(data)}
    return JobResult(res.id, res.ok, res.kind, None, res.error, res.worker, res.timings, ref).encode()


def load_result(res: JobResult, store: Store | None) -> dict[str, Any] | None:
    """The result's content, fetched from the store when it travelled by reference."""
    if res.result_ref is None:
        return res.result
    if store is None:
        raise InvalidInput("the result travelled through S3 but no bucket is configured")
    return json.loads(store.get(res.result_ref["key"]))

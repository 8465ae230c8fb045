"""What AWS documents and the emulators skip, made to happen in real processes: a botocore plugin.

botocore loads the modules named in ``BOTOCORE_EXPERIMENTAL__PLUGINS`` (``name=module``) for every client a
process builds and calls their ``initialize_client_plugin(client)``; this one registers handlers on the client's
own event system that answer some calls as AWS would. No labkit code changes: the worker, the CLI and the
client run as they do on AWS, each in its own process. :func:`fault_env` gives the variables to start one with.

The faults (``LABKIT_TEST_FAULTS``, JSON), shared by every process through a folder (``LABKIT_TEST_FAULTS_DIR``):

``new_queue_absent_s``
    A queue just made is not there yet for this many seconds: every call that names it (its URL, or
    ``GetQueueUrl``'s name) answers ``NonExistentQueue``. AWS, CreateQueue: "After you create a queue, you must
    wait at least one second after the queue is created to be able to use the queue" (the SQS API Reference).
    A queue counts as new when this folder has not seen it made before (CreateQueue of a queue that exists
    returns it: it is not made again) or when it was deleted since.

``deleted_bucket_held_s``
    A bucket name deleted (by any process on this folder) is held for this many seconds: ``CreateBucket`` of it
    answers 409 ``OperationAborted``. AWS, "Bucket restrictions and limitations" (S3 User Guide): "After a
    bucket is deleted, the name becomes available for reuse, but the name might not be available for you to
    reuse for various reasons"; CreateBucket's errors list ``OperationAborted``: "A conflicting conditional
    operation is currently in progress against this resource. Try again."

``taken_buckets``
    Names another AWS account owns: ``CreateBucket`` answers 409 ``BucketAlreadyExists`` (S3 names are global).

Expired credentials (:func:`expire`)
    An access key written into the folder's ``expired-keys`` file is refused from then on, in every process:
    each call signed with it answers ``ExpiredToken`` (S3, STS and the query services, HTTP 400) or
    ``ExpiredTokenException`` (SQS's JSON protocol, 403 as AWS's common errors say: "The security token included
    in the request is expired"). Session credentials (AWS Academy's last about four hours) end like this; a
    process that reads renewed credentials (a new key) is served again. The test chooses the moment.

``throttle_every`` / ``error_5xx_every``
    Every Nth SQS or S3 request a process sends (counted per process) is answered as AWS does when it sheds
    load: SQS ``ThrottlingException`` (HTTP 400), S3 ``SlowDown`` (503); or a server error: ``InternalError``
    (S3, 500) / ``InternalFailure`` (SQS, 500). AWS, "Error retries and exponential backoff" (AWS General
    Reference) and S3's "SlowDown: Please reduce your request rate". They are answered at ``before-send``,
    inside botocore's retry loop, so a client's own retries meet them as they would meet AWS. A server error
    comes *after* AWS did the work, as it may ("the request may have succeeded"): the request is sent, its
    answer thrown away, and the retry does it again (a message sent twice, an object written twice), except
    ``ReceiveMessage``, whose lost messages would only come back after their visibility timeout.

Every answer given is counted in the folder (:func:`injected`), so that a test can show the fault happened.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.httpsession import URLLib3Session

PLUGINS = "BOTOCORE_EXPERIMENTAL__PLUGINS"
FAULTS = "LABKIT_TEST_FAULTS"
FOLDER = "LABKIT_TEST_FAULTS_DIR"


def fault_env(folder: Path, **faults: Any) -> dict[str, str]:
    """The variables that make a process (and its children) meet ``faults``."""
    folder.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {PLUGINS: "labkit_faults=tests.aws_faults", FAULTS: json.dumps(faults), FOLDER: str(folder),
            "PYTHONPATH": path}


def injected(folder: Path, code: str) -> int:
    """How many calls the processes using ``folder`` were answered with ``code``."""
    return sum(1 for _ in folder.glob(f"answered-{code}-*"))


def expire(folder: Path, access_key: str) -> None:
    """From now on, every process on ``folder`` is refused as AWS refuses expired session credentials."""
    with (folder / "expired-keys").open("a") as f:
        f.write(access_key + "\n")


def _queue_name(params: dict[str, Any]) -> str | None:
    if "QueueUrl" in params:
        return str(params["QueueUrl"]).rstrip("/").rsplit("/", 1)[-1]
    return params.get("QueueName")


class Faults:
    def __init__(self, faults: dict[str, Any], folder: Path) -> None:
        self.absent_s = float(faults.get("new_queue_absent_s", 0))
        self.held_s = float(faults.get("deleted_bucket_held_s", 0))
        self.taken = set(faults.get("taken_buckets", ()))
        self.throttle_every = int(faults.get("throttle_every", 0))
        self.error_every = int(faults.get("error_5xx_every", 0))
        self.folder = folder

    # -- bookkeeping in the shared folder -------------------------------------------------------------------
    def _made_file(self, name: str) -> Path:
        return self.folder / f"queue-{name}"

    def _answered(self, code: str) -> None:
        (self.folder / f"answered-{code}-{os.getpid()}-{time.monotonic_ns()}").touch()

    # -- handlers -------------------------------------------------------------------------------------------
    def name_the_queue(self, params: dict[str, Any], context: dict[str, Any], model: Any, **_: Any) -> None:
        """before-parameter-build: note which queue the call names (the request is not built yet)."""
        context["labkit_fault_queue"] = _queue_name(params)

    def answer_absent(self, model: Any, context: dict[str, Any], **_: Any) -> Any:
        """before-call: a queue made moments ago is not there yet."""
        name = context.get("labkit_fault_queue")
        if not name or model.name in ("CreateQueue", "ListQueues") or not self.absent_s:
            return None
        made = self._made_file(name)
        try:
            age = time.time() - float(made.read_text())
        except (OSError, ValueError):
            return None
        if age >= self.absent_s:
            return None
        self._answered("NonExistentQueue")
        body = {"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message":
                          "The specified queue does not exist."},
                "ResponseMetadata": {"HTTPStatusCode": 400, "HTTPHeaders": {}}}
        return AWSResponse("https://sqs.invalid/", 400, {}, None), body

    def note_made(self, model: Any, context: dict[str, Any], http_response: Any, **_: Any) -> None:
        """after-call: CreateQueue made a queue this folder has not seen (or saw deleted); DeleteQueue ended one."""
        name = context.get("labkit_fault_queue")
        if not name or http_response is None or http_response.status_code >= 300:
            return
        made = self._made_file(name)
        if model.name == "CreateQueue" and not made.exists():
            made.write_text(repr(time.time()))
        elif model.name == "DeleteQueue":
            made.unlink(missing_ok=True)


    # -- S3 bucket names --------------------------------------------------------------------------------------
    def _held_file(self, name: str) -> Path:
        return self.folder / f"bucket-deleted-{name}"

    def answer_bucket_name(self, context: dict[str, Any], **_: Any) -> Any:
        """before-call, CreateBucket: a name another account owns, or one deleted moments ago."""
        name = context.get("labkit_fault_bucket", "")
        if name in self.taken:
            return self._error("BucketAlreadyExists", 409, "The requested bucket name is not available. The "
                               "bucket namespace is shared by all users of the system. Please select a different "
                               "name and try again.")
        try:
            age = time.time() - float(self._held_file(name).read_text())
        except (OSError, ValueError):
            return None
        if age >= self.held_s:
            return None
        return self._error("OperationAborted", 409, "A conflicting conditional operation is currently in "
                           "progress against this resource. Please try again.")

    def name_the_bucket(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        """before-parameter-build: note which bucket the call names (before-call and after-call are not told)."""
        context["labkit_fault_bucket"] = params.get("Bucket", "")

    def note_bucket_deleted(self, context: dict[str, Any], http_response: Any, **_: Any) -> None:
        """after-call, DeleteBucket: its name is held from now on."""
        if self.held_s and http_response is not None and http_response.status_code < 300:
            self._held_file(context.get("labkit_fault_bucket", "")).write_text(repr(time.time()))

    def _error(self, code: str, status: int, message: str) -> Any:
        self._answered(code)
        body = {"Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}}}
        return AWSResponse("https://aws.invalid/", status, {}, None), body

    # -- expired credentials ----------------------------------------------------------------------------------
    def answer_expired(self, client: Any) -> Any:
        """before-call: this client signs with a key the test has expired."""
        try:
            expired = set((self.folder / "expired-keys").read_text().split())
        except OSError:
            return None
        creds = client._request_signer._credentials  # the key this very client signs with, as it is now
        key = creds.get_frozen_credentials().access_key if creds is not None else None
        if key not in expired:
            return None
        if client.meta.service_model.service_name == "sqs":
            return self._error("ExpiredTokenException", 403, "The security token included in the request is "
                               "expired")
        return self._error("ExpiredToken", 400, "The provided token has expired.")

    # -- load shedding: throttling and server errors, inside botocore's retry loop ---------------------------
    def answer_load(self, request: Any, event_name: str, **_: Any) -> Any:
        """before-send (SQS, S3): every Nth request this process sends is throttled, or fails with a 5xx."""
        n = next(_SENT)
        sqs = ".sqs." in event_name
        if self.throttle_every and n % self.throttle_every == 0:
            code, status = ("ThrottlingException", 400) if sqs else ("SlowDown", 503)
        elif self.error_every and n % self.error_every == 0:
            code, status = ("InternalFailure", 500) if sqs else ("InternalError", 500)
        else:
            return None
        self._answered(code)
        if status == 500 and not event_name.endswith(".ReceiveMessage"):
            _HTTP.send(request)  # done, and its answer lost on the way back
        if sqs:
            body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": "Rate exceeded"}).encode()
            headers = {"x-amzn-query-error": f"{code};Sender", "Content-Type": "application/x-amz-json-1.0"}
        else:
            body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                    "<Message>Please reduce your request rate.</Message></Error>").encode()
            headers = {"Content-Type": "application/xml"}
        return AWSResponse(request.url, status, headers, _Raw(body))


class _Raw:
    """The body of an answer made up at before-send, as urllib3 would hand it to botocore."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, *_: Any, **__: Any) -> Any:
        yield self.data


_HTTP = URLLib3Session()
_SENT = itertools.count(1)  # this process's SQS and S3 requests, retries included


def initialize_client_plugin(client: Any) -> None:
    """botocore's plugin entry point: called for every client this process builds."""
    faults = Faults(json.loads(os.environ.get(FAULTS) or "{}"), Path(os.environ[FOLDER]))
    service = client.meta.service_model.service_name
    events = client.meta.events
    events.register_first("before-call", lambda **_: faults.answer_expired(client))
    if service in ("sqs", "s3") and (faults.throttle_every or faults.error_every):
        events.register(f"before-send.{service}", faults.answer_load)
    if service == "s3":
        events.register("before-call.s3.CreateBucket", faults.answer_bucket_name)
        events.register("before-parameter-build.s3.*", faults.name_the_bucket)
        events.register("after-call.s3.DeleteBucket", faults.note_bucket_deleted)
    if service != "sqs":
        return
    events.register("before-parameter-build.sqs.*", faults.name_the_queue)
    events.register("before-call.sqs.*", faults.answer_absent)
    events.register("after-call.sqs.*", faults.note_made)

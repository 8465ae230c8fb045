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

Every answer given is counted in the folder (:func:`injected`), so that a test can show the fault happened.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse

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


def _queue_name(params: dict[str, Any]) -> str | None:
    if "QueueUrl" in params:
        return str(params["QueueUrl"]).rstrip("/").rsplit("/", 1)[-1]
    return params.get("QueueName")


class Faults:
    def __init__(self, faults: dict[str, Any], folder: Path) -> None:
        self.absent_s = float(faults.get("new_queue_absent_s", 0))
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


def initialize_client_plugin(client: Any) -> None:
    """botocore's plugin entry point: called for every client this process builds."""
    if client.meta.service_model.service_name != "sqs":
        return
    faults = Faults(json.loads(os.environ.get(FAULTS) or "{}"), Path(os.environ[FOLDER]))
    events = client.meta.events
    events.register("before-parameter-build.sqs.*", faults.name_the_queue)
    events.register("before-call.sqs.*", faults.answer_absent)
    events.register("after-call.sqs.*", faults.note_made)

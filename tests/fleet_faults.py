"""The fleet's services throttled as AWS throttles them: a botocore plugin loaded beside :mod:`tests.aws_faults`.

:mod:`tests.aws_faults` throttles SQS and S3 only; the fleet commands (deploy, status, doctor, undeploy,
teardown) also call EC2, IAM, Auto Scaling and CloudWatch. Its faults are entries of the same
``LABKIT_TEST_FAULTS``, answered at ``before-send``, inside botocore's retry loop, as AWS would answer:

``fleet_throttle_every``
    Every Nth request a process sends to EC2, IAM, Auto Scaling or CloudWatch (counted per process, retries
    included) is answered with that service's throttling error. EC2: ``RequestLimitExceeded`` ("If you exceed an
    API throttling limit, you get the RequestLimitExceeded error code", Amazon EC2 Developer Guide, "Request
    throttling for the Amazon EC2 API"), HTTP 503 as EC2 sends it; IAM, Auto Scaling, CloudWatch: ``Throttling``,
    HTTP 400 ("the request was denied due to request throttling"; CloudWatch's JSON and CBOR protocols carry the
    query code in ``x-amzn-query-error``, as AWS sends it).

``lost_answers``
    Operations (``"s3.DeleteBucket"``, ``"sqs.DeleteQueue"``, ...) whose first request in a process is done and its
    answer lost: a 500 server error (S3 and EC2 ``InternalError``, SQS, Auto Scaling and CloudWatch
    ``InternalFailure``, IAM ``ServiceFailure``) that botocore retries, and the retry finds the work done. AWS,
    "Error retries and exponential backoff": a server error may come from a request that succeeded.

Each answer is counted in the folder as :func:`tests.aws_faults.injected` counts them, under its code and, after
it, the service: ``injected(folder, "Throttling")`` counts IAM's, Auto Scaling's and CloudWatch's,
``injected(folder, "Throttling-iam")`` IAM's only. :func:`throttled_env` gives the variables that load both plugins.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse

from tests.aws_faults import _HTTP, FAULTS, FOLDER, PLUGINS, _Raw, fault_env

SERVICES = ("ec2", "iam", "autoscaling", "cloudwatch")
THROTTLED = {"ec2": "RequestLimitExceeded", "iam": "Throttling", "autoscaling": "Throttling",
             "cloudwatch": "Throttling"}
SERVER_ERROR = {"ec2": "InternalError", "iam": "ServiceFailure", "autoscaling": "InternalFailure",
                "cloudwatch": "InternalFailure", "s3": "InternalError", "sqs": "InternalFailure"}
_SENT = itertools.count(1)  # this process's requests to SERVICES, retries included
_LOST: set[str] = set()  # the operations whose answer this process already lost once


def throttled_env(folder: Path, fleet_throttle_every: int = 0, **faults: Any) -> dict[str, str]:
    """:func:`tests.aws_faults.fault_env` with this plugin loaded too (``faults`` may name this plugin's)."""
    env = fault_env(folder, fleet_throttle_every=fleet_throttle_every, **faults)
    env[PLUGINS] += ",labkit_fleet_faults=tests.fleet_faults"
    return env


def _cbor_text(s: str) -> bytes:
    data = s.encode()
    return (bytes([0x60 + len(data)]) if len(data) < 24 else bytes([0x78, len(data)])) + data


def _answer(service: str, request: Any, code: str, status: int) -> AWSResponse:
    """The error ``code`` as ``service`` sends it, in its protocol."""
    url, message = request.url, "Rate exceeded" if status < 500 or code == "RequestLimitExceeded" else "Internal error"
    if service == "ec2":
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code>"
                f"<Message>{message}</Message></Error></Errors><RequestID>faulted</RequestID></Response>").encode()
        return AWSResponse(url, status, {"Content-Type": "text/xml;charset=UTF-8"}, _Raw(body))
    if service in ("cloudwatch", "sqs"):  # in the protocol the client speaks (JSON or CBOR), the query code in a header
        headers = {"x-amzn-query-error": f"{code};{'Sender' if status < 500 else 'Receiver'}"}
        if "cbor" in str(request.headers.get("Content-Type", "")):
            body = (b"\xa2" + _cbor_text("__type") + _cbor_text(f"com.amazonaws.{service}#{code}")
                    + _cbor_text("message") + _cbor_text(message))
            headers.update({"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"})
        else:
            body = json.dumps({"__type": f"com.amazonaws.{service}#{code}", "message": message}).encode()
            headers["Content-Type"] = "application/x-amz-json-1.0"
        return AWSResponse(url, status, headers, _Raw(body))
    if service == "s3":
        body = f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message>"
        return AWSResponse(url, status, {"Content-Type": "application/xml"}, _Raw(f"{body}</Error>".encode()))
    side = "Sender" if status < 500 else "Receiver"
    body = (f"<ErrorResponse><Error><Type>{side}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>faulted</RequestId></ErrorResponse>").encode()
    return AWSResponse(url, status, {"Content-Type": "text/xml"}, _Raw(body))


def initialize_client_plugin(client: Any) -> None:
    """botocore's plugin entry point: called for every client this process builds."""
    faults = json.loads(os.environ.get(FAULTS) or "{}")
    every, lost = int(faults.get("fleet_throttle_every", 0)), set(faults.get("lost_answers", ()))
    service = client.meta.service_model.service_name
    folder = Path(os.environ.get(FOLDER, "."))

    def answered(code: str, status: int, request: Any) -> AWSResponse:
        (folder / f"answered-{code}-{service}-{os.getpid()}-{time.monotonic_ns()}").touch()
        return _answer(service, request, code, status)

    def throttle(request: Any, **_: Any) -> Any:
        if next(_SENT) % every:
            return None
        return answered(THROTTLED[service], 503 if service == "ec2" else 400, request)

    def lose(request: Any, event_name: str, **_: Any) -> Any:
        operation = f"{service}.{event_name.rsplit('.', 1)[-1]}"
        if operation not in lost or operation in _LOST:
            return None
        _LOST.add(operation)
        _HTTP.send(request)  # done, and its answer lost on the way back
        return answered(SERVER_ERROR[service], 500, request)

    if every and service in SERVICES:
        client.meta.events.register(f"before-send.{service}", throttle)
    if any(op.startswith(f"{service}.") for op in lost):
        client.meta.events.register(f"before-send.{service}", lose)

"""The v1 message protocol, the legacy forms and the claim check (against the real emulator's S3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from labkit.aws.clients import Clients
from labkit.aws.storage import Bucket
from labkit.errors import InvalidInput, ProtocolError
from labkit.protocol import (
    JobRequest,
    JobResult,
    encode_request,
    encode_result,
    is_legacy,
    load_payload,
    load_result,
)


def test_request_round_trip_matches_the_documented_shape():
    req = JobRequest("numbers", {"numbers": [1, 5, 22]}, reply_to="http://q/labkit-reply-x")
    data = json.loads(req.encode())
    assert set(data) == {"v", "id", "kind", "reply_to", "sent_at", "payload"}
    assert data["v"] == 1 and data["kind"] == "numbers" and data["payload"] == {"numbers": [1, 5, 22]}
    assert JobRequest.decode(req.encode()) == req


def test_result_round_trip():
    res = JobResult.success("abc", "numbers", {"count": 1}, worker="h:1", timings={"compute_s": 0.1})
    data = json.loads(res.encode())
    assert data == {"v": 1, "id": "abc", "ok": True, "kind": "numbers", "result": {"count": 1},
                    "worker": "h:1", "timings": {"compute_s": 0.1}}
    assert JobResult.decode(res.encode()) == res
    err = JobResult.failure("abc", "numbers", "invalid_input", "item 3 is not a number: 'abc'")
    assert json.loads(err.encode())["error"] == {"code": "invalid_input", "message": "item 3 is not a number: 'abc'"}


@pytest.mark.parametrize("body, fragment", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "not an object"),
    (b"\xff\xfe", "UTF-8"),
    ('{"id": "a", "kind": "numbers", "payload": {}}', "no protocol version"),
    ('{"v": 2, "id": "a", "kind": "numbers", "payload": {}}', "not supported"),
    ('{"v": 1, "id": "", "kind": "numbers", "payload": {}}', "'id'"),
    ('{"v": 1, "id": 5, "kind": "numbers", "payload": {}}', "'id'"),
    ('{"v": 1, "id": "a", "kind": 3, "payload": {}}', "'kind'"),
    ('{"v": 1, "id": "a", "kind": "numbers", "payload": [1]}', "'payload'"),
    ('{"v": 1, "id": "a", "kind": "numbers", "reply_to": 7, "payload": {}}', "'reply_to'"),
    ('{"v": 1, "id": "a", "kind": "numbers", "payload_ref": {"bucket": "b", "key": "../x"}}', "payloads/"),
])
def test_malformed_requests_raise_protocol_error_keeping_the_body(body, fragment):
    with pytest.raises(ProtocolError) as info:
        JobRequest.decode(body)
    assert fragment in str(info.value)
    assert info.value.raw == body


def test_protocol_error_keeps_what_can_address_a_reply():
    body = '{"v": 9, "id": "job-1", "kind": "numbers", "reply_to": "http://x/labkit-reply-1"}'
    with pytest.raises(ProtocolError) as info:
        JobRequest.decode(body)
    assert info.value.code == "unsupported_version"
    assert info.value.partial == {"id": "job-1", "kind": "numbers", "reply_to": "http://x/labkit-reply-1"}


@given(st.text())
def test_decode_never_raises_anything_but_protocol_error(body):
    try:
        JobRequest.decode(body)
    except ProtocolError:
        pass


@pytest.mark.parametrize("body, legacy", [
    ("1,5,22", True), ("  3 4 5", True), ("cat.jpg", True), ("[1,2]", True), ("{broken", True),
    ('{"v": 1}', False), ('  {"a": 1}', False),
])
def test_legacy_detection(body, legacy):
    assert is_legacy(body) is legacy


def test_nan_cannot_be_sent():
    with pytest.raises(InvalidInput, match="JSON"):
        JobRequest("numbers", {"numbers": [float("nan")]}).encode()


@pytest.fixture
def bucket(settings):
    return Bucket(Clients(settings).s3, settings.bucket)


def test_claim_check_small_payload_travels_inline(bucket):
    req = JobRequest("numbers", {"numbers": [1, 2, 3]})
    body = encode_request(req, bucket, max_inline=1000)
    assert "payload_ref" not in json.loads(body)
    assert bucket.list("payloads/") == []


def test_claim_check_large_json_payload_goes_through_s3(bucket):
    req = JobRequest("numbers", {"numbers": list(range(5000))})
    body = encode_request(req, bucket, max_inline=1000)
    decoded = JobRequest.decode(body)
    assert decoded.payload is None and decoded.payload_ref["key"] == f"payloads/{req.id}.json"
    assert len(body) < 1000
    assert load_payload(decoded, bucket, max_bytes=10**6) == {"numbers": list(range(5000))}


def test_claim_check_array_travels_as_npy(bucket):
    arr = np.arange(-50_000, 50_000, dtype=np.int64)
    req = JobRequest("numbers", {"numbers": arr})
    decoded = JobRequest.decode(encode_request(req, bucket, max_inline=10**6))
    assert decoded.payload_ref["format"] == "npy"
    got = load_payload(decoded, bucket, max_bytes=10**7)["numbers"]
    assert got.dtype == np.int64 and np.array_equal(got, arr)


def test_claim_check_refuses_oversized_and_foreign_payloads(bucket):
    req = JobRequest("numbers", {"numbers": list(range(5000))})
    decoded = JobRequest.decode(encode_request(req, bucket, max_inline=1000))
    from labkit.errors import NotFound, TooLarge
    with pytest.raises(TooLarge):
        load_payload(decoded, bucket, max_bytes=100)
    foreign = JobRequest("numbers", None, payload_ref={"bucket": "someone-else", "key": "payloads/x.json"})
    with pytest.raises(InvalidInput, match="does not serve"):
        load_payload(foreign, bucket, max_bytes=100)
    missing = JobRequest("numbers", None, payload_ref={"bucket": bucket.name, "key": "payloads/nope.json"})
    with pytest.raises(NotFound):
        load_payload(missing, bucket, max_bytes=100)


def test_large_result_goes_through_s3(bucket):
    res = JobResult.success("r1", "numbers", {"values": list(range(3000))})
    decoded = JobResult.decode(encode_result(res, bucket, max_inline=1000))
    assert decoded.result is None and decoded.result_ref["key"] == "payloads/r1.result.json"
    assert load_result(decoded, bucket) == {"values": list(range(3000))}

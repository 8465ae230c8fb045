"""The v1 message protocol, the legacy forms and the claim check (against the real emulator's S3)."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import re
import uuid

import numpy as np
import pytest
from botocore.exceptions import FlexibleChecksumError, IncompleteReadError
from botocore.httpchecksum import Crc32Checksum, StreamingChecksumBody
from botocore.response import StreamingBody
from hypothesis import given
from hypothesis import strategies as st
from numpy.lib import format as npy_format

from labkit import protocol
from labkit.aws import storage
from labkit.aws.clients import Clients
from labkit.aws.storage import Bucket
from labkit.errors import AwsError, InvalidInput, NotFound, ProtocolError, TooLarge
from labkit.jobs import numbers
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


# -- the .npy claim check, streamed into one array ------------------------------------------------------

def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_header(descr: str, shape: tuple, version: tuple[int, int] = (1, 0)) -> bytes:
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    if version == (1, 0):
        npy_format.write_array_header_1_0(buf, header)
    else:
        npy_format.write_array_header_2_0(buf, header)
    return buf.getvalue()


def npy_request(bucket: Bucket, data: bytes) -> JobRequest:
    """A request whose payload is ``data``, stored as a .npy claim check."""
    key = f"payloads/{uuid.uuid4().hex}.npy"
    bucket.put(key, data, "application/x-npy")
    return JobRequest("numbers", None, payload_ref={"bucket": bucket.name, "key": key, "format": "npy"})


@pytest.fixture
def small_pieces(monkeypatch):
    """Reads of 1,000 bytes and conversions of 100 items, so small payloads cross many piece boundaries."""
    monkeypatch.setattr(storage, "READ_PIECE", 1000)
    monkeypatch.setattr(protocol, "NPY_PIECE", 100)


@pytest.mark.parametrize("dtype", ["<i8", ">i8", "<i4", ">i2", "u1", "<u4", "<u8", "<f8", ">f8", "<f4", "<f2"])
def test_npy_payload_becomes_a_native_int64_or_float64_array(bucket, small_pieces, dtype):
    # Given: 1,001 numbers (not a multiple of any piece size) in one of the int/float dtypes
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    rng = np.random.default_rng(1)
    if info:
        values = rng.integers(info.min, min(info.max, 2**63 - 1), 1001, endpoint=True).astype(dtype)
    else:
        values = (rng.standard_normal(1001) * 100).astype(dtype)

    # When
    got = load_payload(npy_request(bucket, npy_bytes(values)), bucket, max_bytes=10**6)["numbers"]

    # Then
    assert got.dtype == (np.float64 if info is None else np.int64) and got.dtype.isnative
    assert got.tolist() == values.tolist()
    assert got.flags.writeable and got.flags.c_contiguous


def test_npy_uint64_beyond_int64_is_left_for_the_job_to_name(bucket):
    values = np.array([1, 2**64 - 1, 3], dtype=np.uint64)

    got = load_payload(npy_request(bucket, npy_bytes(values)), bucket, max_bytes=10**6)["numbers"]

    with pytest.raises(InvalidInput, match="item 2 is an integer too large for 64 bits: 18446744073709551615"):
        numbers.compute(got, overwrite=True)


def test_npy_payload_gives_the_same_results_as_the_array_sent(bucket, small_pieces):
    sent = np.random.default_rng(2).standard_normal(12_345) * 1e6
    body = encode_request(JobRequest("numbers", {"numbers": sent}), bucket, max_inline=10**6)

    got = load_payload(JobRequest.decode(body), bucket, max_bytes=10**6)["numbers"]

    assert numbers.compute(got, overwrite=True) == numbers.compute(sent)


def test_npy_version_2_header_is_read(bucket):
    data = npy_header("<i8", (3,), version=(2, 0)) + np.array([5, 1, 3], dtype="<i8").tobytes()

    got = load_payload(npy_request(bucket, data), bucket, max_bytes=10**6)["numbers"]

    assert got.tolist() == [5, 1, 3]


@pytest.mark.parametrize("data, fragment", [
    (b"", "not a readable .npy array"),
    (b"1,2,3", "not a readable .npy array"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': '<i8'", "not a readable .npy array"),
    (b"\x93NUMPY\x01\x00\x08\x00garbage\n" + bytes(8), "not a readable .npy array"),
    (b"\x93NUMPY\x03\x00" + bytes(16), "version 3.0 is not supported"),
    (npy_header("<i8", (-2,)), "announces -2 numbers"),
    (npy_header("<q9", (1,)), "not a readable .npy array"),
])
def test_npy_corrupt_header_is_invalid_input(bucket, data, fragment):
    with pytest.raises(InvalidInput, match=re.escape(fragment)):
        load_payload(npy_request(bucket, data), bucket, max_bytes=10**6)


@pytest.mark.parametrize("array, fragment", [
    (np.array([True, False]), "holds an array of bool"),
    (np.array([1 + 2j, 3j]), "holds an array of complex128"),
    (np.array(["1", "2"]), "holds an array of <U1"),
    (np.zeros(3, dtype=[("a", "<i8")]), "holds an array of [('a', '<i8')]"),
    (np.zeros((2, 3)), "1-D array of numbers, got a 2-D array of shape (2, 3)"),
    (np.float64(4.0), "got a 0-D array"),
])
def test_npy_of_the_wrong_kind_is_refused(bucket, array, fragment):
    with pytest.raises(InvalidInput, match=re.escape(fragment)):
        load_payload(npy_request(bucket, npy_bytes(array)), bucket, max_bytes=10**6)


def test_npy_object_array_is_refused_and_never_unpickled(bucket, tmp_path):
    # Given: an object array whose pickle would create a directory when loaded
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    data = npy_header("|O", (1,)) + pickle.dumps([Evil()])

    # When / Then
    with pytest.raises(InvalidInput, match="holds an array of object"):
        load_payload(npy_request(bucket, data), bucket, max_bytes=10**6)
    assert not marker.exists()


def test_npy_truncated_or_padded_body_is_invalid_input(bucket):
    data = npy_bytes(np.arange(100, dtype=np.int64))

    with pytest.raises(InvalidInput, match="is truncated: its header announces 100 numbers"):
        load_payload(npy_request(bucket, data[:-5]), bucket, max_bytes=10**6)
    with pytest.raises(InvalidInput, match="has 3 unexpected bytes after its 100 numbers"):
        load_payload(npy_request(bucket, data + b"abc"), bucket, max_bytes=10**6)


def test_npy_header_announcing_more_than_the_object_holds_allocates_nothing(bucket):
    # 10**15 numbers would be 8 PB: refused from the object's size, before any array is made.
    data = npy_header("<f8", (10**15,)) + bytes(64)

    with pytest.raises(InvalidInput, match="is truncated"):
        load_payload(npy_request(bucket, data), bucket, max_bytes=10**6)


def test_npy_over_max_bytes_is_too_large_before_it_is_read(bucket):
    data = npy_bytes(np.arange(100, dtype=np.int64))
    req = npy_request(bucket, data)
    garbage = npy_request(bucket, b"x" * len(data))

    with pytest.raises(TooLarge, match="over the limit"):
        load_payload(req, bucket, max_bytes=len(data) - 1)
    with pytest.raises(TooLarge):  # a corrupt object too: the size is checked before anything is parsed
        load_payload(garbage, bucket, max_bytes=len(data) - 1)
    assert load_payload(req, bucket, max_bytes=len(data))["numbers"].tolist() == list(range(100))


def test_bucket_open_reads_into_buffers_in_pieces(bucket, small_pieces):
    data = bytes(range(256)) * 20
    bucket.put("payloads/raw.bin", data)

    with bucket.open("payloads/raw.bin", max_bytes=len(data)) as stream:
        assert stream.size == len(data)
        head = bytearray(10)
        assert stream.readinto(head) == 10 and bytes(head) == data[:10]
        rest = np.empty(len(data), dtype=np.uint8)  # larger than what is left
        assert stream.readinto(rest) == len(data) - 10
        assert rest[: len(data) - 10].tobytes() == data[10:]
        assert stream.read(1) == b""
    with pytest.raises(NotFound):
        bucket.open("payloads/missing.bin")


def test_a_cut_connection_is_an_aws_error_not_bad_input():
    # A real botocore body that announces more bytes than arrive (what a dropped connection looks like):
    # the job must not be answered "invalid_input", the AWS error is kept as the cause.
    data = npy_bytes(np.arange(10, dtype=np.int64))
    for cut in (20, len(data) - 8):
        body = StreamingBody(io.BytesIO(data[:cut]), len(data))
        stream = storage.ObjectReader(body, len(data), "s3://b/payloads/x.npy")
        with pytest.raises(AwsError, match="s3://b/payloads/x.npy") as info:
            protocol.read_npy(stream, "payloads/x.npy")
        assert isinstance(info.value.__cause__, IncompleteReadError)


def test_npy_is_read_to_the_end_so_the_checksum_is_verified():
    # botocore checks a response's checksum only once the body has been read to its end: a payload
    # altered in transit must fail there rather than reach the job.
    data = npy_bytes(np.arange(10, dtype=np.int64))
    wrong = base64.b64encode(b"\0\0\0\0").decode()
    body = StreamingChecksumBody(io.BytesIO(data), len(data), Crc32Checksum(), wrong)
    stream = storage.ObjectReader(body, len(data), "s3://b/payloads/x.npy")

    with pytest.raises(AwsError, match="checksum") as info:
        protocol.read_npy(stream, "payloads/x.npy")
    assert isinstance(info.value.__cause__, FlexibleChecksumError)


# -- encoding and ids ----------------------------------------------------------------------------------

def test_a_request_that_cannot_be_json_is_refused_by_name():
    for payload in ({"x": float("nan")}, {"x": object()}):
        with pytest.raises(InvalidInput, match="cannot be sent as JSON"):
            JobRequest(kind="numbers", payload=payload).encode()
    looped: dict = {}
    looped["self"] = looped
    with pytest.raises(InvalidInput, match="Circular reference"):
        JobRequest(kind="numbers", payload=looped).encode()
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidInput, match="nested too deeply"):
        JobRequest(kind="numbers", payload={"x": deep}).encode()


def test_job_ids_are_32_hex_digits_and_a_seed_does_not_repeat_them():
    import random
    random.seed(1)
    first = [protocol.new_id() for _ in range(1000)]
    random.seed(1)  # a notebook seeding its random lists must not make two students' job ids collide
    again = [protocol.new_id() for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in first)
    assert len(set(first + again)) == 2000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_draws_other_job_ids_than_its_parent():
    protocol.new_id()  # a child of a process that made ids must not hand out the same ones
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, "".join(protocol.new_id() for _ in range(3)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    parent = "".join(protocol.new_id() for _ in range(3))
    assert len(child) == 96 and child != parent

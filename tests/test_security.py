"""Nobody gets in: the emulator listens on 127.0.0.1 only, no credential leaks into anything labkit
writes, and object keys taken from messages stay inside their prefixes."""

from __future__ import annotations

import io
import json
import os
import posixpath
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.aws.storage import Bucket
from labkit.config import PROCESSED_PREFIX, UNPROCESSED_PREFIX, Settings, read_state
from labkit.errors import InvalidInput, RemoteJobError
from labkit.keys import output_key, safe_key
from labkit.protocol import JobRequest
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET, ROOT
from tests.helpers import labkit

FAKE_TOKEN = "labkitFakeSessionTokenDoNotLeak0000000001"
SECRETS = (FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN)


# -- the emulator listens on loopback only ----------------------------------------------------------

def _ipv4(hex_addr: str) -> str:
    return socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_addr)[::-1])


def _ipv6(hex_addr: str) -> str:
    """/proc/net/tcp6 writes an address as four 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, decode in (("/proc/net/tcp", _ipv4), ("/proc/net/tcp6", _ipv6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            addr, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(decode(addr))
    return found


def other_local_addresses() -> list[tuple]:
    """This machine's own addresses other than loopback, as socket addresses (port 0)."""
    out: list[tuple] = []
    try:
        last = None
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            text = line.strip()
            if text.startswith("|--"):
                last = text[3:].strip()
            elif "/32 host LOCAL" in text and last and not last.startswith("127."):
                out.append((socket.AF_INET, (last, 0)))
    except FileNotFoundError:
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            hex_addr, ifindex = line.split()[:2]
            addr = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hex_addr)) if len(hex_addr) == 32 else None
            if addr and addr != "::1":
                out.append((socket.AF_INET6, (addr, 0, 0, int(ifindex, 16))))
    except FileNotFoundError:
        pass
    return list(dict.fromkeys(out))


def assert_loopback_only(port: int) -> int:
    """The port listens on 127.0.0.1 only and cannot be reached on any other local address; returns how
    many other addresses were tried."""
    assert listening_addresses(port) == {"127.0.0.1"}
    others = other_local_addresses()
    for family, addr in others:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            with pytest.raises(OSError):
                s.connect((addr[0], port, *addr[2:]))
    return len(others)


def test_emulator_listens_on_loopback_only(emulator):
    port = int(emulator.url.rsplit(":", 1)[1])
    tried = assert_loopback_only(port)
    print(f"\n[security] emulator port {port}: listening on 127.0.0.1 only; {tried} other local address(es) "
          "refused the connection")


def test_the_check_sees_a_socket_open_to_all_addresses():
    # The check itself must catch a wildcard bind (so the test above can fail).
    with socket.create_server(("0.0.0.0", 0)) as s:
        port = s.getsockname()[1]
        assert listening_addresses(port) == {"0.0.0.0"}


# -- no credential in anything produced -------------------------------------------------------------

def _png(path: Path) -> Path:
    Image.new("RGB", (32, 24), "green").save(path)
    return path


@pytest.mark.slow
def test_no_credential_in_logs_output_state_or_notebooks(tmp_path):
    # Given known fake credentials in the environment (access key, secret, session token)
    env = {**os.environ, "AWS_SESSION_TOKEN": FAKE_TOKEN, "PYTHONUNBUFFERED": "1"}
    assert env["AWS_ACCESS_KEY_ID"] == FAKE_KEY_ID and env["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET
    state = tmp_path / "state"
    sd = ["--state-dir", str(state)]
    transcript: list[str] = []

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        r = labkit(*args, base=env, cwd=tmp_path)
        transcript.append(f"$ labkit {' '.join(args)}\n[{r.returncode}]\n{r.stdout}\n{r.stderr}")
        assert (r.returncode == 0) == ok, r.stderr
        return r

    s3_logs = tmp_path / "s3-logs"
    try:
        # When labkit comes up on the emulator, a worker shipping its log to the bucket runs a burst
        cli("up", "--local", *sd, "--workers", "0")
        settings = Settings.load(state_dir=state, env={})
        clients = Clients(settings)
        requests = Queue.by_name(clients.sqs, settings.request_queue)
        for i in range(5):
            requests.send(f"{i},{i + 1},{i + 2}")  # the original lab's plain-text jobs
        burst = cli("worker", *sd, "--burst", "--log-to-s3", "-v")
        assert burst.stdout.count("ok=true") == 5
        # And `labkit up` starts a background worker, and the CLI is used as a person would
        cli("up", "--local", *sd, "--workers", "1")
        assert '"count": 3' in cli("submit", "numbers", "1", "5", "22", *sd).stdout
        assert "error" in cli("submit", "numbers", "1", "x", *sd, ok=False).stderr
        cli("submit", "image", str(_png(tmp_path / "green.png")), "--op", "grayscale", "--out",
            str(tmp_path / "out.png"), *sd)
        cli("status", *sd)
        cli("status", "--json", *sd)
        cli("dlq", "show", "requests", *sd)
        # (and the background emulator `labkit up` started listens on loopback only)
        assert_loopback_only(int(read_state(state)["emulator"]["url"].rsplit(":", 1)[1]))
        bucket = Bucket(clients.s3, read_state(state)["bucket"])
        for obj in bucket.list("logs/"):
            target = s3_logs / obj.key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bucket.get(obj.key))
    finally:
        cli("down", *sd)
    (tmp_path / "cli-output.txt").write_text("\n".join(transcript))
    # Then none of the credential values appears in any file produced (the transcript included)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    notebooks = list((ROOT / "runs").rglob("*.ipynb")) if (ROOT / "runs").is_dir() else []
    for path in files + notebooks:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret[:8]}... found in {path}"
    # (and the files searched are the real thing, not empty)
    assert (state / "state.json").is_file()
    assert "ok=true" in (state / "logs" / "worker-0.log").read_text()
    assert (state / "logs" / "emulator.log").is_file()
    assert sum(p.read_text().count("ok=true") for p in s3_logs.rglob("*.log")) == 5
    print(f"\n[security] searched {len(files)} produced files and {len(notebooks)} executed notebooks for 3 "
          "credential values: none found")


# -- object keys stay inside their prefixes -----------------------------------------------------------

SEGMENTS = st.sampled_from(["..", ".", "", "a", "b.png", "%2e%2e", "..\\", "\\", "/", "~", "images", "processed",
                            "unprocessed", " ", "\x00", "\n", "é", "..."])
NAMES = st.one_of(st.text(max_size=40), st.lists(SEGMENTS, max_size=8).map("/".join),
                  st.lists(SEGMENTS, max_size=8).map("".join))


@given(name=NAMES, prefix=st.sampled_from([UNPROCESSED_PREFIX, PROCESSED_PREFIX]))
def test_safe_key_never_leaves_its_prefix(name, prefix):
    try:
        key = safe_key(prefix, name)
    except InvalidInput:
        return
    assert key.startswith(prefix)
    rest = key[len(prefix):]
    assert rest and not rest.startswith("/") and "\\" not in key
    assert all(seg not in ("", ".", "..") for seg in rest.split("/"))
    assert posixpath.normpath(key) == key


@given(name=NAMES)
def test_output_key_never_leaves_processed(name):
    try:
        key = output_key(UNPROCESSED_PREFIX + "cat.png", "png", name)
    except InvalidInput:
        return
    assert key.startswith(PROCESSED_PREFIX) and posixpath.normpath(key) == key


def test_client_refuses_keys_outside_their_prefix(lab, tmp_path):
    png = _png(tmp_path / "x.png")
    for bad in ("../x.png", "a/../../x.png", "/etc/passwd", "..\\x.png"):
        with pytest.raises(InvalidInput):
            lab.upload_image(png, name=bad)
        with pytest.raises(InvalidInput):
            lab.download_image(bad, tmp_path)
    assert lab.bucket.list("") == []


@pytest.mark.slow
def test_message_keys_cannot_read_or_write_outside_their_prefixes(settings, lab, start_worker):
    # Given objects outside the image prefixes, one of them at the path a traversal would reach
    start_worker()
    bucket = lab.bucket
    cat = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(cat, "PNG")
    secrets = {"secret.txt": b"top secret", "payloads/secret.json": b'{"numbers": [4, 5, 6]}',
               "logs/w/1.log": b"a log line", "images/unprocessed/cat.png": cat.getvalue()}
    for key, data in secrets.items():
        bucket.put(key, data)
    before = {o.key: bucket.get(o.key) for o in bucket.list("")}
    attempts = [
        {"key": "../secret.txt"},
        {"key": "images/unprocessed/../../secret.txt"},
        {"key": "/secret.txt"},
        {"key": "images/unprocessed/..\\..\\secret.txt"},
        {"key": "images/unprocessed/./../../payloads/secret.json"},
        {"key": "images/unprocessed/%2e%2e/%2e%2e/secret.txt"},  # a literal key in S3: simply not there
        {"key": "images/unprocessed/cat.png", "output": "../../secret.txt"},
        {"key": "images/unprocessed/cat.png", "output": "../unprocessed/cat.png"},
        {"key": "images/unprocessed/cat.png", "output": "/logs/w/1.log"},
        {"key": "images/unprocessed/cat.png", "bucket": "someone-elses-bucket"},
    ]
    # When image jobs name them (and number jobs try the claim check)
    jobs = [lab.submit("image", {"bucket": bucket.name, "ops": [{"op": "invert"}], **a}) for a in attempts]
    requests = Queue.by_name(lab.clients.sqs, settings.request_queue)
    for ref_key in ("payloads/../secret.txt", "images/unprocessed/cat.png", "secret.txt"):
        req = JobRequest("numbers", None, reply_to=lab.reply_queue.url,
                         payload_ref={"bucket": bucket.name, "key": ref_key})
        jobs.append(lab.track(req.id, "numbers"))
        requests.send(req.encode())
    # Then every one is refused with an error reply that carries nothing it read
    for job in jobs:
        with pytest.raises(RemoteJobError) as info:
            job.result(timeout=30)
        assert info.value.code in ("invalid_input", "not_found"), str(info.value)
        assert "top secret" not in str(info.value) and "a log line" not in str(info.value)
    # And no object outside images/processed/ was written or changed
    after = {o.key: bucket.get(o.key) for o in bucket.list("")}
    assert {k: v for k, v in after.items() if not k.startswith(PROCESSED_PREFIX)} == before
    assert json.loads(after["payloads/secret.json"]) == {"numbers": [4, 5, 6]}

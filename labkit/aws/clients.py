"""The one place boto3 clients are built, so every client gets the same endpoint, region, retries
and call counter."""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from labkit.config import Settings

# The embedded emulator accepts any credentials; these fixed, obviously fake ones keep real
# credentials from ever being sent to it.
EMULATOR_CREDENTIALS = {"aws_access_key_id": "labkit-emulator", "aws_secret_access_key": "labkit-emulator"}
# An emulator that enforces IAM (moto with INITIAL_NO_AUTH_ACTION_COUNT, as tests/test_iam.py runs one) needs
# the keys of a user it knows: these variables name them. They are only ever sent to an emulator.
EMULATOR_KEY_VARS = {"LABKIT_EMULATOR_ACCESS_KEY_ID": "aws_access_key_id",
                     "LABKIT_EMULATOR_SECRET_ACCESS_KEY": "aws_secret_access_key",
                     "LABKIT_EMULATOR_SESSION_TOKEN": "aws_session_token"}


def emulator_credentials(env: dict[str, str] | None = None) -> dict[str, str]:
    """The credentials requests to an emulator are signed with: the ``LABKIT_EMULATOR_*`` keys when set,
    else fixed fake ones (never the AWS credentials of the environment)."""
    env = os.environ if env is None else env
    given = {arg: env[var] for var, arg in EMULATOR_KEY_VARS.items() if env.get(var)}
    return given if "aws_access_key_id" in given else dict(EMULATOR_CREDENTIALS)


class CallCounter:
    """Counts AWS API calls by ``service.Operation`` (hooked on botocore's ``before-call`` event)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def _on_call(self, model: Any = None, **_: Any) -> None:
        if model is None:
            return
        name = f"{model.service_model.service_name}.{model.name}"
        with self._lock:
            self._counts[name] += 1

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._on_call)

    def snapshot(self) -> dict[str, int]:
        """Calls so far, by operation."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


# Every call this process makes through any Clients: what a notebook's summary prices (labkit.notebooks).
PROCESS_CALLS = CallCounter()


class Clients:
    """Builds and caches boto3 clients for one :class:`Settings` (thread-safe, reuse it)."""

    def __init__(self, settings: Settings, counter: CallCounter | None = None) -> None:
        self.settings = settings
        self.counter = counter or CallCounter()
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._bucket: str | None = None
        self._account: str | None = None
        self._account_lock = threading.Lock()  # apart from _lock: asked from inside S3 calls
        self._no_owner = False
        creds = emulator_credentials() if settings.is_local else {}
        self._session = boto3.session.Session(region_name=settings.region, **creds)

    def __call__(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self._build(service)
                self._clients[service] = client
            return client

    def _build(self, service: str) -> Any:
        config = Config(
            region_name=self.settings.region,
            # Long polls hold a connection for up to queue_wait seconds: read timeout must exceed it.
            read_timeout=self.settings.queue_wait + 15,
            connect_timeout=5,
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=32,
            s3={"addressing_style": "path"} if self.settings.is_local else None,
            signature_version="s3v4" if service == "s3" else None,
        )
        client = self._session.client(service, endpoint_url=self.settings.endpoint_url, config=config)
        self.counter.attach(client)
        PROCESS_CALLS.attach(client)
        if service == "s3":
            client.meta.events.register("before-parameter-build.s3", self._expect_owner)
        return client

    def _expect_owner(self, params: dict[str, Any], model: Any, context: dict[str, Any] | None = None,
                      **_: Any) -> None:
        """Every S3 call that names a bucket says whose bucket it must be (``ExpectedBucketOwner``: this
        account). The default bucket name ``labkit-<account>-<region>`` is easy to guess: should someone else
        own a bucket by that name, S3 refuses the call (403) instead of letting labkit read or write there.
        Not on presigned URLs: whoever opens one would have to send the header too."""
        shape = getattr(model, "input_shape", None)
        if shape is None or "ExpectedBucketOwner" not in shape.members or "ExpectedBucketOwner" in params:
            return
        if (context or {}).get("is_presign_request"):
            return
        owner = self.bucket_owner()
        if owner:
            params["ExpectedBucketOwner"] = owner

    @property
    def sqs(self) -> Any:
        return self("sqs")

    @property
    def s3(self) -> Any:
        return self("s3")

    def bucket_name(self) -> str:
        """The configured bucket, or the account's default name (looked up once)."""
        if self.settings.bucket:
            return self.settings.bucket
        if self._bucket is None:
            # labkit-<account>-<region>: unique to the account and region, as S3 names must be.
            self._bucket = f"labkit-{self.account_id()}-{self.settings.region}"
        return self._bucket

    def account_id(self) -> str:
        """This account's id (STS, asked once)."""
        with self._account_lock:
            if self._account is None:
                self._account = self("sts").get_caller_identity()["Account"]
            return self._account

    def bucket_owner(self) -> str | None:
        """The account that must own the buckets labkit touches; None on an endpoint that cannot say (an
        S3-compatible server without STS), where the check is left out."""
        if self._no_owner:
            return None
        try:
            return self.account_id()
        except Exception:
            if self.settings.endpoint_url is None:
                raise  # on AWS, STS always answers whoever holds valid credentials
            self._no_owner = True  # asked once: not again on every S3 call
            return None


def credentials_configured(env: dict[str, str] | None = None) -> bool:
    """True when AWS credentials are configured in the environment or in ~/.aws.

    Deliberately does not ask the EC2 instance metadata service (that would mean network traffic and a
    delay on every machine that is not an EC2 instance): on EC2, pass ``--aws`` explicitly.
    """
    env = os.environ if env is None else env
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    home = Path(env.get("HOME", "~")).expanduser()
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws/credentials",
             env.get("AWS_CONFIG_FILE") or home / ".aws/config"]
    return any(Path(f).is_file() and Path(f).stat().st_size > 0 for f in files)

"""The one place boto3 clients are built, so every client gets the same endpoint, region, retries
and call counter, and signs with credentials that can be renewed while it runs.

Keys read from a file or the environment are read once by botocore and never again; session keys (AWS Academy's
last about four hours) then expire under a running process. :class:`Clients` hands its clients keys it can
replace (:class:`RenewableCredentials`): once AWS refuses them (:func:`labkit.errors.credentials_error`), it looks
in the usual places again, at most every :data:`RENEW_LOOK` seconds, and the next call signs with the renewed
ones. Credentials botocore refreshes itself (SSO, a role, the instance role) are left to it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import Credentials, RefreshableCredentials

from labkit.config import Settings
from labkit.errors import EXPIRED_CODES, INVALID_CODES, response_error_code

# The embedded emulator accepts any credentials; these fixed, obviously fake ones keep real
# credentials from ever being sent to it.
EMULATOR_CREDENTIALS = {"aws_access_key_id": "labkit-emulator", "aws_secret_access_key": "labkit-emulator"}
# An emulator that enforces IAM (moto with INITIAL_NO_AUTH_ACTION_COUNT, as tests/test_iam.py runs one) needs
# the keys of a user it knows: these variables name them. They are only ever sent to an emulator.
EMULATOR_KEY_VARS = {"LABKIT_EMULATOR_ACCESS_KEY_ID": "aws_access_key_id",
                     "LABKIT_EMULATOR_SECRET_ACCESS_KEY": "aws_secret_access_key",
                     "LABKIT_EMULATOR_SESSION_TOKEN": "aws_session_token"}
# Or a profile of the shared credentials file whose keys an emulator is to be sent (tests sign requests to the
# emulator as a student's process signs them to AWS: with session keys from that file, renewed there).
EMULATOR_PROFILE_VAR = "LABKIT_EMULATOR_PROFILE"
RENEW_LOOK = 2.0  # seconds between looks for renewed credentials while AWS refuses the ones in use
# Where botocore found credentials (Credentials.method), for people.
SOURCES = {"env": "the environment", "shared-credentials-file": "the shared credentials file",
           "config-file": "the AWS config file", "sso": "SSO", "assume-role": "an assumed role",
           "assume-role-with-web-identity": "a web identity token", "iam-role": "the EC2 instance metadata",
           "container-role": "the container's credentials endpoint", "custom-process": "credential_process",
           "login": "`aws login`", "explicit": "keys given to labkit"}
# Credentials botocore refreshes by itself, by source: their kind, for people.
REFRESHED = {"sso": "SSO", "iam-role": "instance role", "container-role": "container role",
             "assume-role": "assumed role", "assume-role-with-web-identity": "web identity role",
             "custom-process": "temporary (credential_process)", "login": "login session"}


def emulator_credentials(env: dict[str, str] | None = None) -> dict[str, str]:
    """The credentials requests to an emulator are signed with: the ``LABKIT_EMULATOR_*`` keys when set,
    else fixed fake ones (never the AWS credentials of the environment)."""
    env = os.environ if env is None else env
    given = {arg: env[var] for var, arg in EMULATOR_KEY_VARS.items() if env.get(var)}
    return given if "aws_access_key_id" in given else dict(EMULATOR_CREDENTIALS)


def emulator_profile(settings: Settings, env: dict[str, str] | None = None) -> str | None:
    """The profile whose keys requests to ``settings``' emulator are signed with (``LABKIT_EMULATOR_PROFILE``,
    unless ``LABKIT_EMULATOR_*`` keys are given); None elsewhere."""
    env = os.environ if env is None else env
    if not settings.is_local or env.get("LABKIT_EMULATOR_ACCESS_KEY_ID"):
        return None
    return env.get(EMULATOR_PROFILE_VAR) or None


def credential_session(settings: Settings, env: dict[str, str] | None = None) -> botocore.session.Session:
    """A new botocore session that reads credentials from where ``settings`` says, afresh: on an emulator its
    fixed keys, the ``LABKIT_EMULATOR_*`` keys or ``LABKIT_EMULATOR_PROFILE``'s profile; elsewhere AWS's usual
    chain (the environment, ``AWS_PROFILE``, the shared files, SSO, the instance role)."""
    profile = emulator_profile(settings, env)
    session = botocore.session.Session(profile=profile)
    if settings.is_local and profile is None:
        keys = emulator_credentials(env)
        session.set_credentials(keys["aws_access_key_id"], keys["aws_secret_access_key"],
                                keys.get("aws_session_token"))
    return session


class RenewableCredentials(Credentials):
    """Keys read once from a file or the environment (botocore never reads such keys again), which
    :meth:`replace` can renew under every client that signs with them."""

    def __init__(self, creds: Credentials) -> None:
        frozen = creds.get_frozen_credentials()
        super().__init__(frozen.access_key, frozen.secret_key, frozen.token, creds.method,
                         getattr(creds, "account_id", None))
        self._lock = threading.Lock()  # a signer never reads half of an old key and half of a new one

    def get_frozen_credentials(self) -> Any:
        with self._lock:
            return super().get_frozen_credentials()

    def replace(self, creds: Credentials) -> bool:
        """Sign with ``creds``' keys from now on; False when they are the keys in use."""
        frozen = creds.get_frozen_credentials()
        with self._lock:
            if (frozen.access_key, frozen.secret_key, frozen.token) == (self.access_key, self.secret_key, self.token):
                return False
            self.access_key, self.secret_key, self.token = frozen.access_key, frozen.secret_key, frozen.token
            self.method = creds.method
            self._normalize()
            return True


class _Given:
    """botocore's ``credential_provider`` component, handing out one credentials object."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds

    def load_credentials(self) -> Credentials:
        return self.creds


class CallCounter:
    """Counts AWS API calls by ``service.Operation`` (hooked on botocore's ``before-call`` event)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._chunks: Counter[str] = Counter()  # SQS requests billed beyond one per call (64 KiB chunks)

    def _on_call(self, model: Any = None, params: Any = None, **_: Any) -> None:
        if model is None:
            return
        name = f"{model.service_model.service_name}.{model.name}"
        body = (params or {}).get("body") if name.startswith("sqs.") else None
        with self._lock:
            self._counts[name] += 1
        if body:
            self._add_chunks(name, len(body))

    def _on_reply(self, model: Any = None, http_response: Any = None, **_: Any) -> None:
        """An SQS answer's payload (the messages received) is billed by 64 KiB chunks too."""
        if model is not None and getattr(http_response, "raw", None) is not None and \
                model.service_model.service_name == "sqs":  # (an answer made up by a botocore plugin has no body)
            self._add_chunks(f"sqs.{model.name}", len(http_response.content or b""))

    def _add_chunks(self, name: str, size: int) -> None:
        from labkit.costs import sqs_requests  # here: the cost tables load for this count only, not with Lab
        extra = sqs_requests(size) - 1
        if extra:
            with self._lock:
                self._chunks[name] += extra

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._on_call)
        client.meta.events.register("after-call.sqs", self._on_reply)

    def snapshot(self) -> dict[str, int]:
        """Calls so far, by operation."""
        with self._lock:
            return dict(self._counts)

    def billed(self) -> dict[str, int]:
        """SQS requests billed so far, by operation, where payloads over 64 KiB made them more than the calls."""
        with self._lock:
            return {name: self._counts[name] + extra for name, extra in self._chunks.items()}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._chunks.clear()


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
        self._identity: dict[str, str] | None = None  # STS GetCallerIdentity's answer, asked once
        self._account_lock = threading.Lock()  # apart from _lock: asked from inside S3 calls
        self._no_owner = False
        self._session: Any = None  # made with the first client: finding credentials may take a call (IMDS, SSO)
        self.credentials: Credentials | None = None  # what every client signs with
        self._renew_lock = threading.Lock()
        self._refused: str | None = None  # the access key AWS refused ("" when not known), until others are found
        self._next_look = 0.0

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
        if self._session is None:
            self._session = self._signing_session()
        client = self._session.client(service, endpoint_url=self.settings.endpoint_url, config=config)
        self.counter.attach(client)
        PROCESS_CALLS.attach(client)
        client.meta.events.register("before-parameter-build", self._before_call)
        client.meta.events.register("after-call", self._after_call)
        if service == "s3":
            client.meta.events.register("before-parameter-build.s3", self._expect_owner)
        return client

    # -- credentials ----------------------------------------------------------------------------------
    def _signing_session(self) -> Any:
        """The boto3 session every client comes from: its credentials found once, in the usual places; keys that
        botocore would never read again are made renewable."""
        creds = credential_session(self.settings).get_credentials()
        if creds is not None and not isinstance(creds, RefreshableCredentials):
            creds = RenewableCredentials(creds)
        self.credentials = creds
        signing = botocore.session.Session(profile=emulator_profile(self.settings))
        if creds is not None:
            signing.register_component("credential_provider", _Given(creds))
        return boto3.session.Session(botocore_session=signing, region_name=self.settings.region)

    def _key(self) -> str | None:
        """The access key the next request is signed with (for a refreshable one: refreshed when due, as the
        signer would); None when there is none or it cannot be had (the signer says why)."""
        try:
            return self.credentials.get_frozen_credentials().access_key if self.credentials else None
        except Exception:
            return None

    def _before_call(self, context: dict[str, Any] | None = None, **_: Any) -> None:
        """Before each call: while AWS refuses the credentials, look for renewed ones (every RENEW_LOOK s at
        most); note which key this call goes with, so that a refusal is put down to that key only."""
        if self._refused is not None and time.monotonic() >= self._next_look:
            self.renew()
        if context is not None:
            context["labkit_key"] = self._key()

    def _after_call(self, parsed: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                    **_: Any) -> None:
        code = response_error_code(parsed)
        if code in EXPIRED_CODES or code in INVALID_CODES:
            self.refused((context or {}).get("labkit_key"))

    def refused(self, key: str | None = None) -> None:
        """AWS refused the credentials (``key``: the access key the refused call was signed with, when known):
        calls look for renewed ones from now on. A refusal of a key already replaced changes nothing."""
        with self._renew_lock:
            if key is not None and key != self._key():
                return
            if self._refused is None:
                self._refused = key or ""
                self._next_look = time.monotonic() + RENEW_LOOK

    @property
    def refused_now(self) -> bool:
        """True while AWS refuses the credentials in use (no renewed ones found yet)."""
        return self._refused is not None

    def renew(self) -> bool:
        """Look in the usual places for credentials other than those AWS refused, and sign every client's next
        call with them; True when the credentials in use are no longer the refused ones (or none were)."""
        with self._renew_lock:
            if self._refused is None:
                return True
            self._next_look = time.monotonic() + RENEW_LOOK
            creds = self.credentials
            if isinstance(creds, RenewableCredentials):
                try:
                    fresh = credential_session(self.settings).get_credentials()
                except Exception:  # a file half written, a profile being edited: look again later
                    fresh = None
                if fresh is not None:
                    creds.replace(fresh)
            key = self._key()  # a refreshable one refreshes here, as botocore would before a call
            if key is not None and key != self._refused:
                self._refused = None
            return self._refused is None

    def describe_credentials(self) -> dict[str, Any]:
        """What this process signs with, for people: ``kind`` (long-term keys, session keys, SSO, instance role,
        emulator keys...), ``source`` (where botocore found them), ``expires`` (epoch seconds) where known;
        never a key."""
        with self._lock:  # the session, and with it the credentials, are found with the first client
            if self._session is None:
                self._session = self._signing_session()
        creds, method = self.credentials, getattr(self.credentials, "method", None)
        profile = emulator_profile(self.settings) or (None if self.settings.is_local else os.environ.get("AWS_PROFILE"))
        out: dict[str, Any] = {"kind": "none", "source": "no AWS credentials found", "profile": profile,
                               "expires": None, "refreshed": False, "refused": self.refused_now}
        if creds is None:
            return out
        out["source"] = SOURCES.get(method or "", method or "unknown")
        if self.settings.is_local and profile is None:
            out.update(kind="emulator keys", source="fixed fake keys (an emulator accepts any)" if
                       creds.access_key == EMULATOR_CREDENTIALS["aws_access_key_id"] else "LABKIT_EMULATOR_* keys")
        elif isinstance(creds, RefreshableCredentials):
            expiry = getattr(creds, "_expiry_time", None)  # botocore's own record; no public accessor
            out.update(kind=REFRESHED.get(method or "", "temporary"), refreshed=True,
                       expires=expiry.timestamp() if expiry is not None else None)
        else:
            out["kind"] = "session keys (temporary)" if creds.token else "long-term keys"
        return out

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

    def identity(self) -> dict[str, str]:
        """Who the credentials are (STS GetCallerIdentity: Account, UserId, Arn), asked once."""
        with self._account_lock:
            if self._identity is None:
                found = self("sts").get_caller_identity()
                self._identity = {k: found[k] for k in ("Account", "UserId", "Arn")}
            return self._identity

    def account_id(self) -> str:
        """This account's id (STS, asked once)."""
        return self.identity()["Account"]

    def caller_id(self) -> str | None:
        """The caller's unique id, as IAM's ``${aws:userid}`` names it (an IAM user's AIDA..., a role session's
        AROA...:session); None where IAM tells no callers apart: an emulator signed with labkit's fixed keys (one
        person's), or one without STS. Asked of STS once (with the account)."""
        if self.settings.endpoint_url is not None:
            self("sts")  # built, so that its credentials are known
            if self._key() in (None, EMULATOR_CREDENTIALS["aws_access_key_id"]) or self.bucket_owner() is None:
                return None
        return self.identity()["UserId"]

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

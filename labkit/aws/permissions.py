"""What the caller may do, asked without doing it: who the caller is (STS), IAM's policy simulator on the caller's
own user or role, and harmless probes (EC2's ``DryRun``, reads) where IAM will not simulate. For
:mod:`labkit.doctor`; errors are :class:`~labkit.errors.AwsError`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from labkit.aws.calls import call, is_denied, pages
from labkit.errors import AwsError, CredentialsError, aws_error_code

# arn:aws:sts::123456789012:assumed-role/ROLE/SESSION: a session of the role ROLE (its path is not in the ARN).
ASSUMED = re.compile(r"arn:(?P<part>[\w-]+):sts::(?P<account>\d+):assumed-role/(?P<role>[^/]+)/.+")
DRY_RUN_OK = "DryRunOperation"  # EC2: "the request would have succeeded, but the DryRun parameter was used"


def caller(sts: Any) -> dict[str, str]:
    """``{"Account": ..., "Arn": ...}`` of the credentials in use (STS answers whoever holds valid ones)."""
    found = call(sts, "get_caller_identity", "asking STS who the credentials belong to")
    return {"Account": found["Account"], "Arn": found["Arn"]}


def principal(arn: str) -> str:
    """The IAM user or role the policy simulator takes for the caller ``arn``: an assumed-role session maps to its
    role (``arn:aws:iam::ACCOUNT:role/ROLE``; a role with a path is not found by that ARN)."""
    m = ASSUMED.fullmatch(arn)
    return f"arn:{m['part']}:iam::{m['account']}:role/{m['role']}" if m else arn


def _context(condition: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The simulator's ``ContextEntries`` for a statement's ``StringEquals`` conditions (what labkit's own calls
    would carry: the service a role is passed to, the bucket's account)."""
    equals = (condition or {}).get("StringEquals", {})
    return [{"ContextKeyName": key, "ContextKeyValues": value if isinstance(value, list) else [value],
             "ContextKeyType": "string"} for key, value in equals.items()]


def _applies(action: str, resource: str) -> bool:
    """Does ``action`` act on ``resource``? S3 object actions on keys, bucket actions on the bucket; anything else
    on every resource its statement names."""
    if not action.startswith("s3:") or resource == "*":
        return True
    on_objects = "Object" in action or action == "s3:AbortMultipartUpload"
    return on_objects == ("/" in resource.split(":::", 1)[-1])


def simulate(iam: Any, source: str, statements: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Action -> IAM's decision (``allowed``, ``implicitDeny``, ``explicitDeny``) for the principal ``source`` on
    each statement's resources, under its conditions; an action refused on any resource it acts on is refused."""
    out: dict[str, str] = {}
    for st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        extra: dict[str, Any] = {} if resources == ["*"] else {"ResourceArns": resources}
        context = _context(st.get("Condition"))
        if context:
            extra["ContextEntries"] = context
        results = pages(iam, "simulate_principal_policy", "EvaluationResults", "simulating your permissions",
                        PolicySourceArn=source, ActionNames=actions, **extra)
        for r in results:
            pairs = [(x["EvalResourceName"], x["EvalResourceDecision"]) for x in r.get("ResourceSpecificResults", [])]
            pairs = pairs or [(r.get("EvalResourceName", "*"), r["EvalDecision"])]
            for resource, decision in pairs:
                if _applies(r["EvalActionName"], resource) and out.get(r["EvalActionName"], "allowed") == "allowed":
                    out[r["EvalActionName"]] = decision
    return out


def probe(client: Any, operation: str, **kwargs: Any) -> str | None:
    """Call ``operation`` harmlessly (a read, or EC2 with ``DryRun=True``): None when IAM let it through, else the
    refusal's code. Any other answer (a missing queue, a malformed id) came after IAM's check: allowed."""
    try:
        call(client, operation, f"trying {operation} (harmless)", **kwargs)
    except CredentialsError:
        raise  # refused credentials say nothing about the permission
    except AwsError as exc:
        if is_denied(exc):
            return refusal(exc)
    return None


def refusal(exc: BaseException) -> str:
    """AWS's code for a refused call, for people: an emulator that answers a JSON protocol in XML leaves botocore
    only the HTTP status (403), which stands for AccessDenied."""
    code = aws_error_code(exc)
    return "AccessDenied" if code in ("", "403") else code

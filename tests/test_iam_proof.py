"""IAM proven, not reviewed (issue 18, item 4): every AWS call each role makes in real runs, recorded
(tests/aws_calls.py, in every real process), mapped to the IAM actions AWS's Service Authorization Reference
requires for it (dependent and tag-on-create actions included: tests/iam_actions.py), and checked against the
policy labkit generates for that role, statement by statement, resource by resource.

The runs, on the real emulator server, each a real process: ``labkit up`` (and the local worker it starts, which
answers the client's number, claim-check and image jobs), a client (``Lab()``), ``deploy`` (instances), ``deploy
--autoscale --hours`` (the cost guard's scheduled action), ``undeploy``, ``deploy`` again, ``down``, ``teardown``,
and the delivery exercise (its queues, its own worker, a duplicate and a poison message). The client runs as an IAM
user (a student), its calls checked against ``labkit policy student``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from labkit.aws.clients import Clients
from labkit.config import REPLY_QUEUE_PREFIX, Settings
from labkit.emulator import Emulator
from labkit.fleet.deployer import deployer_policy
from labkit.fleet.policy import worker_policy
from labkit.fleet.roles import IAM_PATH
from labkit.fleet.student import student_policy
from labkit.processes import python_module, settings_env
from notebooks.delivery_exercise import PREFIX as DELIVERY_PREFIX
from tests.aws_calls import REFERENCE, Call, Need, calls_env, dependents, needs, operation_actions, recorded
from tests.conftest import ROOT, unique_settings
from tests.iam_emulator import keys_env

pytestmark = pytest.mark.slow
ACCOUNT = "123456789012"  # the emulator's account

# A client as a student runs it: numbers, a list big enough to go through S3 (claim check), an image.
CLIENT = """
import numpy as np
from PIL import Image
from labkit import Lab
Image.new("RGB", (40, 30), "orange").save("cat.png")
with Lab() as lab:
    small, big, picture = lab.numbers([4, 8, 15]), lab.numbers(np.arange(20_000)), lab.image("cat.png", ["grayscale"])
    print(small.result(timeout=60)["median"], big.result(timeout=60)["count"], picture.result(timeout=60).open().mode)
"""
# Notebook 03's check of what an instance was launched with (fleet.fleet_user_data), as the deployer.
NOTEBOOK_03 = """
from labkit import Lab, fleet
with Lab() as lab:
    print("bootstrap" in fleet.fleet_user_data(lab.clients))
"""
# The delivery exercise as notebook 05 runs it, shortened: its queues, its worker, a duplicate, a poison message.
DELIVERY = f"""
import sys
from labkit.config import Settings
sys.path.insert(0, {str(ROOT / "notebooks")!r})  # beside notebook 05, as its kernel finds it
from delivery_exercise import DeliveryExercise
ex = DeliveryExercise.start(Settings.load(), [{str(ROOT / "notebooks" / "kinds" / "nap.py")!r}], visibility=2,
                            max_receive_count=1)
print(ex.duplicate([2, 9, 4]).result["median"], ex.poison([1, 2]).answer.ok, ex.close() != [])
"""


def run(s: Settings, folder: Path, args: list[str], cwd: Path = ROOT, keys: dict[str, str] | None = None) -> str:
    """A real process (``args``), signing with ``keys`` if given, its calls recorded into ``folder``; its output."""
    env = settings_env(s, extra=keys_env(keys) if keys else None)
    out = subprocess.run(args, env={**env, **calls_env(folder, env)}, cwd=cwd, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=180)
    assert out.returncode == 0, f"{' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    return out.stdout


def policies(s: Settings) -> dict[str, dict]:
    """Each role's policy, as labkit generates it (the worker's, the deployer's per command)."""
    bucket = s.bucket or ""
    out = {f"deployer {c}": deployer_policy(s, bucket, ACCOUNT, commands=[c])
           for c in ("up", "deploy", "undeploy", "teardown")}
    out["deployer"] = deployer_policy(s, bucket, ACCOUNT)  # every command's part: what an instructor holds
    out["worker"] = worker_policy(s, bucket, ACCOUNT)
    out["client"] = student_policy(s, bucket, ACCOUNT)
    # The exercise's own words when refused: "sqs:* on the queues named labkit-delivery-* and labkit-reply-*".
    queues = [f"arn:aws:sqs:{s.region}:{ACCOUNT}:{p}*" for p in (DELIVERY_PREFIX, REPLY_QUEUE_PREFIX)]
    out["delivery exercise"] = {"Statement": [{"Sid": "AsItsErrorSays", "Effect": "Allow", "Action": "sqs:*",
                                               "Resource": queues}]}
    return out


def role_of(flow: str, call: Call) -> str:
    """Whose policy a call is made under: a worker process as the worker role (on EC2 it holds the worker policy,
    whoever starts it); each labkit command as its deployer part (``down``, which has none of its own, as
    ``teardown``'s: it deletes idle reply queues too); notebook 03 as the deployer; the delivery exercise (its
    worker too) as what its error message asks for; a client as the student; ``labkit doctor`` as the whole
    deployer policy (it probes every command's permissions; its own reads are deploy's part); ``status --class``
    as ``teardown``'s part (docs/aws.md, "During the day")."""
    if flow == "delivery":
        return "delivery exercise"
    if flow == "doctor":  # it probes each command's permissions: whoever runs it holds the whole deployer policy
        return "deployer"
    if flow == "notebook 03":
        return "deployer deploy"
    if flow == "status --class":  # the instructor's view: docs/aws.md, "During the day"
        return "deployer teardown"
    if call.process == "worker":
        return "worker"
    if call.process.startswith("labkit "):
        command = call.process.split()[1]
        return f"deployer {'teardown' if command == 'down' else command}"
    return "client"


def student(s: Settings) -> str:
    """The client's IAM user."""
    return f"ada-{(s.bucket or '')[-8:]}"


def student_keys(s: Settings) -> dict[str, str]:
    """Access keys of the IAM user :func:`student` (this emulator checks no policy: the proof checks the calls)."""
    iam = Clients(s)("iam")
    iam.create_user(UserName=student(s))
    key = iam.create_access_key(UserName=student(s))["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def leave_what_teardown_meets(s: Settings) -> None:
    """What a class leaves and teardown deals with: an upload a killed client never finished (S3 bills its parts)
    and a reply queue an older client made without its last-seen tag (teardown reads its creation time instead).
    Made here, unrecorded: they stand for processes gone."""
    clients = Clients(s)
    clients.s3.create_multipart_upload(Bucket=s.bucket, Key="payloads/killed-mid-upload")
    clients.sqs.create_queue(QueueName=f"{REPLY_QUEUE_PREFIX}{(s.bucket or '')[-8:]}-old")


@pytest.fixture(scope="module")
def proof(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[tuple[str, Call]]]:
    """Every flow run once, its calls recorded: (settings, [(flow, call)])."""
    tmp = tmp_path_factory.mktemp("iam-proof")
    s = unique_settings(emulator, tmp / "state")
    folders: dict[str, Path] = {}

    def flow(name: str, args: list[str], cwd: Path = ROOT, keys: dict[str, str] | None = None) -> str:
        folders[name] = tmp / "calls" / name
        return run(s, folders[name], args, cwd, keys)

    labkit = python_module("labkit")
    try:
        flow("up", [*labkit, "up", "--workers", "1"])
        student = student_keys(s)
        assert flow("client", [sys.executable, "-c", CLIENT], cwd=tmp, keys=student).split() == ["8", "20000", "L"]
        flow("deploy", [*labkit, "deploy", "--workers", "1"])
        flow("deploy --autoscale --hours", [*labkit, "deploy", "--autoscale", "0:2", "--hours", "2"])
        flow("undeploy", [*labkit, "undeploy"])
        flow("deploy again", [*labkit, "deploy", "--workers", "1"])
        assert flow("notebook 03", [sys.executable, "-c", NOTEBOOK_03], cwd=tmp).split() == ["True"]
        assert flow("delivery", [sys.executable, "-c", DELIVERY], cwd=tmp).split() == ["4", "True", "True"]
        flow("doctor", [*labkit, "doctor", "--workers", "2"])
        flow("status --class", [*labkit, "status", "--class"])
    finally:
        flow("down", [*labkit, "down"])
        leave_what_teardown_meets(s)
        flow("teardown", [*labkit, "teardown", "--yes"])
    calls = [(name, c) for name, folder in folders.items() for c in recorded(folder)]
    for name in folders:  # botocore swallows a plugin's errors: a flow with no call recorded means it failed
        assert any(f == name for f, _ in calls), f"no call recorded for {name}"
    return s, calls



def _listed(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def granted_by(policy: dict[str, Any], need: Need) -> str | None:
    """The Sid of the policy's first statement that allows ``need`` (its action, on its resource), else None."""
    for i, st in enumerate(policy["Statement"]):
        actions, resources = _listed(st["Action"]), _listed(st["Resource"])
        if st["Effect"] == "Allow" and any(fnmatchcase(need.action.lower(), a.lower()) for a in actions) and any(
                fnmatchcase(need.resource, r) for r in resources):
            return st.get("Sid") or f"statement {i}"
    return None


def proof_rows(s: Settings, calls: list[tuple[str, Call]]) -> list[tuple[str, str, str, str]]:
    """(role, call, action on resource, granting statement or "-") for every distinct need, in run order."""
    pols, everything = policies(s), [c for _, c in calls]
    rows: dict[tuple[str, str, str, str], None] = {}
    for flow, call in calls:
        role = role_of(flow, call)
        for need in needs(call, everything, ACCOUNT, IAM_PATH):
            if need.source == REFERENCE:  # the reference lists it for the call's own action: the data agrees
                base = need_action(call)
                assert need.action in dependents(base), f"{need.action} is no dependent action of {base}"
            granted = granted_by(pols[role], need)
            rows[(role, f"{call.service}:{call.operation}", short(s, need), granted or "-")] = None
    return list(rows)


def need_action(call: Call) -> str:
    return operation_actions(call.service, call.operation)[0][0]


def short(s: Settings, need: Need) -> str:
    """``action on resource`` with the run's random names made generic, for a table a reader can scan."""
    tag = (s.bucket or "")[-8:]
    resource = need.resource.replace(f"arn:aws:sqs:{s.region}:{ACCOUNT}:", "queue ").replace("arn:aws:s3:::", "")
    resource = resource.replace(f"arn:aws:iam::{ACCOUNT}:", "").replace(tag, "<tag>")
    resource = re.sub(r"/[0-9a-f]{16,}(?=[/.])", "/<id>", resource)  # a job's or a build's random part
    return f"{need.action} on {resource}"


def test_every_call_each_role_makes_is_granted_by_the_policy_labkit_generates_for_it(proof) -> None:
    # Given every AWS call of every role's real runs, each mapped to the actions AWS's Service Authorization
    # Reference requires (dependent and tag-on-create actions too)
    s, calls = proof
    rows = proof_rows(s, calls)
    width = max(len(r[2]) for r in rows)
    print("\nrole | call | action required on resource | granted by")
    for role, call, need, granted in rows:
        print(f"{role:18} {call:42} {need:{width}} {granted}")
    # Then every one is granted by the role's policy, statement and resource
    missing = [f"{role}: {call} needs {need}" for role, call, need, granted in rows if granted == "-"]
    assert missing == [], "\n".join(missing)
    # And every role and flow was seen doing its work (the runs are the proof: none may silently do nothing)
    roles = {r[0] for r in rows}
    assert roles == {"deployer", "deployer up", "deployer deploy", "deployer undeploy", "deployer teardown", "worker",
                     "client", "delivery exercise"}, roles
    ops = {r[1] for r in rows}
    for op in ("cloudwatch:PutMetricAlarm", "ec2:DescribeInstanceAttribute", "ec2:RunInstances",
               "autoscaling:CreateAutoScalingGroup", "s3:ListMultipartUploads", "s3:AbortMultipartUpload",
               "sqs:GetQueueAttributes", "sqs:SendMessageBatch", "autoscaling:PutScheduledUpdateGroupAction",
               "autoscaling:DescribeScheduledActions", "autoscaling:DeleteScheduledAction"):
        assert op in ops, op

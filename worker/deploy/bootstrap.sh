#!/bin/bash
# labkit worker bootstrap: EC2 user data for Amazon Linux 2023 (runs once, as root, at first boot).
#
# It installs Python, creates a virtual environment in /opt/labkit/venv, installs the worker's dependencies
# pinned with their SHA-256 (written into this script by labkit deploy, from worker/deploy/requirements.txt),
# fetches the labkit wheel from the bucket with the instance role's credentials (no access keys anywhere),
# checks its SHA-256, installs it, writes /etc/labkit/worker.env (names, region and the instance's id: no
# secrets) and the systemd unit labkit-worker.service (shipped in the wheel), then enables and starts the
# worker. Its output goes to /var/log/cloud-init-output.log. Running it again is safe.
#
# Every step that needs the network is retried with a growing pause (5 s, doubling up to a minute) for up to
# LABKIT_RETRY_FOR seconds: the instance role may not have reached IAM yet, a package mirror may hiccup. When a
# step still fails (or any command fails), the bootstrap records why in s3://<bucket>/logs/health/<instance-id>.json
# (if it can) and powers the instance off: it stops billing, and `labkit status` / `labkit deploy` show what failed.
# A lone instance was launched to terminate on shutdown. An Auto Scaling group ignores that setting (a stopped
# instance is only found unhealthy at its next health check), so in a group (LABKIT_GROUP) the bootstrap also
# records the failure in s3://<bucket>/logs/health/failed/<build>/ and tells the group the instance is unhealthy:
# the group replaces it at once. After STOP_AFTER failures of this build within an hour it stops the group instead
# (min, max and desired 0: the worker role may do nothing else to it), so that a broken build does not boot,
# fail and bill in a loop forever; `labkit status` says so, and `labkit deploy` starts the group again.
#
# `labkit deploy` fills in the settings below. Each one can also come from the environment, which
# is how the tests run this very script in a sandbox. Knobs for that (never set on EC2):
#   LABKIT_ROOT=DIR          write everything under DIR instead of / (DIR/opt/labkit, DIR/etc/...)
#   LABKIT_SKIP_SYSTEM=1     skip the steps that change the machine itself: dnf, useradd, systemctl, power off
#   LABKIT_PYTHON=PATH       the interpreter that creates the venv (default python3.11)
#   LABKIT_EXTRA_SITE=DIR    make DIR's packages visible in the venv (a .pth file): reuse an
#                            environment that already has the dependencies instead of downloading them
#   LABKIT_REQUIREMENTS=FILE install these pinned requirements instead of the ones written in below
#   LABKIT_PIP_OPTIONS=...   extra options for pip (the tests pass --no-index --find-links DIR)
#   LABKIT_ENDPOINT_URL=URL  talk to this endpoint instead of AWS (the emulator), for the wheel and the worker
#   LABKIT_INSTANCE_ID=ID    the instance's id (default: from cloud-init, else the instance metadata service)
#   LABKIT_RETRY_FOR=SECONDS how long to retry a failing step (default 300); LABKIT_RETRY_DELAY its first pause
#   LABKIT_POWEROFF=COMMAND  what powering off runs (default: systemctl poweroff; nothing with LABKIT_SKIP_SYSTEM=1)
#   LABKIT_AWS_CLI=1         make the AWS calls on failure with the AWS CLI even when the venv has boto3
set -euo pipefail
umask 022

# -- settings (written by labkit deploy) ------------------------------------------------------------
: "${AWS_REGION:=}"
: "${LABKIT_BUCKET:=}"
: "${LABKIT_REQUEST_QUEUE:=}"
: "${LABKIT_RESPONSE_QUEUE:=}"
: "${LABKIT_IMAGE_INBOX:=}"
: "${LABKIT_IMAGE_OUTBOX:=}"
: "${LABKIT_WHEEL_KEY:=}"
: "${LABKIT_WHEEL_SHA256:=}"
: "${LABKIT_CONCURRENCY:=4}"
: "${LABKIT_ENDPOINT_URL:=}"
# Your job modules (LABKIT_JOB_MODULES), by import name: the wheel holds them as top-level modules.
: "${LABKIT_JOB_MODULES:=}"
# The Auto Scaling group this instance belongs to (only in the group's launch template).
: "${LABKIT_GROUP:=}"
# -- end of settings --------------------------------------------------------------------------------

# -- the worker's dependencies, pinned with their hashes (labkit deploy copies worker/deploy/requirements.txt
# in between these two lines) ---------------------------------------------------------------------------
PINNED="$(cat <<'LABKIT_REQUIREMENTS'
LABKIT_REQUIREMENTS
)"

ROOT="${LABKIT_ROOT:-}"
SKIP_SYSTEM="${LABKIT_SKIP_SYSTEM:-0}"
PYTHON="${LABKIT_PYTHON:-python3.11}"
RETRY_FOR="${LABKIT_RETRY_FOR:-300}"
RETRY_DELAY="${LABKIT_RETRY_DELAY:-5}"
INSTANCE_ID="${LABKIT_INSTANCE_ID:-}"
APP="$ROOT/opt/labkit"
VENV="$APP/venv"
ETC="$ROOT/etc/labkit"
UNIT_DIR="$ROOT/etc/systemd/system"
UNIT=labkit-worker.service
WHEEL="$APP/wheels/${LABKIT_WHEEL_KEY##*/}"
BUILD="${LABKIT_WHEEL_SHA256:0:16}"  # labkit's name for this build
FAILED_PREFIX="logs/health/failed/$BUILD/"  # one object per failed bootstrap in a group: <epoch>-<instance>.json
STOP_AFTER=3  # failed bootstraps of one build within STOP_WINDOW seconds that stop its group
STOP_WINDOW=3600

log() { echo "labkit-bootstrap: $*"; }

# -- giving up: say why where labkit reads it, tell the group, power off ------------------------------------
use_boto3() {  # may the AWS calls below use the venv's boto3? (it is there once pip has run)
    [ "${LABKIT_AWS_CLI:-0}" != 1 ] && [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import boto3' 2>/dev/null
}

aws_api() {  # aws_api SERVICE OPERATION JSON: one call with the instance role; its answer as JSON on stdout
    # boto3 when the venv has it, else the AWS CLI (Amazon Linux ships it): a failure can come before pip ran.
    if use_boto3 && timeout 60 "$VENV/bin/python" -c '
import json, sys, boto3
service, operation, params, region, endpoint = sys.argv[1:6]
client = boto3.client(service, region_name=region, endpoint_url=endpoint or None)
answer = getattr(client, operation)(**json.loads(params))
answer.pop("ResponseMetadata", None)
print(json.dumps(answer, default=str))
' "$1" "$2" "$3" "$AWS_REGION" "$LABKIT_ENDPOINT_URL"; then
        return 0
    fi
    command -v aws >/dev/null || return 1
    local service=$1
    if [ "$service" = s3 ]; then
        service=s3api
    fi
    timeout 60 aws "$service" "${2//_/-}" --cli-input-json "$3" --region "$AWS_REGION" --output json \
        ${LABKIT_ENDPOINT_URL:+--endpoint-url "$LABKIT_ENDPOINT_URL"}
}

put_doc() {  # put_doc KEY JSON: a small JSON document into the bucket (boto3, else the AWS CLI)
    if use_boto3 && printf '%s' "$2" | timeout 60 "$VENV/bin/python" -c '
import sys, boto3
region, bucket, key, endpoint = sys.argv[1:5]
boto3.client("s3", region_name=region, endpoint_url=endpoint or None).put_object(
    Bucket=bucket, Key=key, Body=sys.stdin.buffer.read(), ContentType="application/json")
' "$AWS_REGION" "$LABKIT_BUCKET" "$1" "$LABKIT_ENDPOINT_URL"; then
        return 0
    fi
    command -v aws >/dev/null || return 1
    printf '%s' "$2" | timeout 60 aws s3 cp - "s3://$LABKIT_BUCKET/$1" --region "$AWS_REGION" \
        --content-type application/json ${LABKIT_ENDPOINT_URL:+--endpoint-url "$LABKIT_ENDPOINT_URL"} >/dev/null
}

failure_doc() {  # failure_doc STEP ATTEMPTS: the failed heartbeat labkit reads (labkit/fleet/health.py)
    local step=${1//\"/\'}
    printf '{"v": 1, "instance": "%s", "status": "failed", "step": "%s", "attempts": %s, "at": %s}' \
        "$INSTANCE_ID" "${step//\\/\/}" "$2" "$(date +%s)"
}

leave_group() {  # leave_group STEP ATTEMPTS: the group replaces this instance, or stops after STOP_AFTER failures
    local now failures query
    now="$(date +%s)"
    put_doc "$FAILED_PREFIX$now-$INSTANCE_ID.json" "$(failure_doc "$1" "$2")" \
        || log "could not record the failure in s3://$LABKIT_BUCKET/$FAILED_PREFIX"
    # This build's failures within the window: the keys after <prefix><now - window> (epochs sort as text).
    query="{\"Bucket\": \"$LABKIT_BUCKET\", \"Prefix\": \"$FAILED_PREFIX\", \"StartAfter\": \"$FAILED_PREFIX$((now - STOP_WINDOW))\"}"
    failures="$(aws_api s3 list_objects_v2 "$query" | grep -o '"KeyCount": *[0-9]*' | grep -o '[0-9]*$')" || failures=1
    if (( failures >= STOP_AFTER )); then
        echo "labkit-bootstrap: error: build $BUILD failed to boot $failures times within an hour: stopping the Auto" \
             "Scaling group $LABKIT_GROUP (min, max and desired 0) so that it stops replacing it; fix the cause" \
             "(s3://$LABKIT_BUCKET/$FAILED_PREFIX) and run labkit deploy again" >&2
        if aws_api autoscaling update_auto_scaling_group "{\"AutoScalingGroupName\": \"$LABKIT_GROUP\", \
\"MinSize\": 0, \"MaxSize\": 0, \"DesiredCapacity\": 0}" >/dev/null; then
            return 0  # the group terminates its instances, this one too
        fi
        log "could not stop the group $LABKIT_GROUP"
    fi
    if aws_api autoscaling set_instance_health "{\"InstanceId\": \"$INSTANCE_ID\", \"HealthStatus\": \"Unhealthy\", \
\"ShouldRespectGracePeriod\": false}" >/dev/null; then
        log "told the group $LABKIT_GROUP that this instance is unhealthy: it terminates it ($failures failure(s) of" \
            "build $BUILD within an hour)"
    else
        log "could not mark the instance unhealthy: the group finds it powered off at its next health check"
    fi
}

stop_here() {  # stop_here STEP ATTEMPTS: record the failure, leave the group, power off (a broken instance must not bill)
    report_failure "$1" "$2" || log "could not record the failure in s3://$LABKIT_BUCKET/logs/health/"
    if [ -n "$LABKIT_GROUP" ] && [ -n "$INSTANCE_ID" ]; then
        leave_group "$1" "$2"
    fi
    if [ -n "${LABKIT_POWEROFF:-}" ]; then
        log "powering off: $LABKIT_POWEROFF"
        sh -c "$LABKIT_POWEROFF" || true
    elif [ "$SKIP_SYSTEM" != 1 ]; then
        log "powering off"
        systemctl poweroff || shutdown -h now || true
    fi
    exit 1
}

report_failure() {  # report_failure STEP ATTEMPTS: the failed heartbeat, best effort
    [ -n "$INSTANCE_ID" ] || return 0
    put_doc "logs/health/$INSTANCE_ID.json" "$(failure_doc "$1" "$2")"
}

on_error() {  # any command that fails where no retry covers it (set -e would end the boot without a word)
    trap - ERR
    fail "command failed at line $1: $2"
}

fail() {  # fail MESSAGE: a failure no retry can mend
    echo "labkit-bootstrap: error: $*" >&2
    stop_here "$*" 1
}

give_up() {  # give_up STEP ATTEMPTS: a step that kept failing
    echo "labkit-bootstrap: error: $1 failed $2 time(s) over ${RETRY_FOR}s; powering the instance off so that" \
         "it stops billing and is replaced" >&2
    stop_here "$1" "$2"
}

retry() {  # retry STEP COMMAND...: run COMMAND until it succeeds, pausing longer each time; give up after RETRY_FOR
    local step=$1 attempt=1 delay=$RETRY_DELAY started=$SECONDS
    shift
    until "$@"; do
        if (( SECONDS - started + delay > RETRY_FOR )); then
            give_up "$step" "$attempt"
        fi
        log "$step failed (attempt $attempt); trying again in ${delay}s"
        sleep "$delay"
        attempt=$((attempt + 1))
        delay=$(( delay * 2 > 60 ? 60 : delay * 2 ))
    done
}

# -- the steps (each one command, or a function whose every command must succeed: `until` turns off set -e) --
instance_id() {  # cloud-init knows it; else ask the instance metadata service (IMDSv2)
    local token
    if [ -s /var/lib/cloud/data/instance-id ]; then
        INSTANCE_ID="$(cat /var/lib/cloud/data/instance-id)" && return 0
    fi
    token="$(curl -fsS -m 5 -X PUT http://169.254.169.254/latest/api/token \
             -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')" || return 1
    INSTANCE_ID="$(curl -fsS -m 5 -H "X-aws-ec2-metadata-token: $token" \
                   http://169.254.169.254/latest/meta-data/instance-id)" || return 1
    [ -n "$INSTANCE_ID" ]
}

pinned_requirements() {  # the pinned requirements into $APP/requirements.txt
    if [ -n "${LABKIT_REQUIREMENTS:-}" ]; then
        cp "$LABKIT_REQUIREMENTS" "$APP/requirements.txt"
    elif [ -n "$PINNED" ]; then
        printf '%s\n' "$PINNED" > "$APP/requirements.txt"
    else
        fail "no pinned requirements: run the user data labkit deploy wrote, or set LABKIT_REQUIREMENTS"
    fi
}

pip_install() {  # pip_install ARGS...: quiet, no version check, the sandbox's options
    # shellcheck disable=SC2086  # LABKIT_PIP_OPTIONS holds several words on purpose
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check ${LABKIT_PIP_OPTIONS:-} "$@"
}

fetch_wheel() {  # the wheel from the bucket, with the instance role (boto3 from the pinned dependencies)
    "$VENV/bin/python" - "$AWS_REGION" "$LABKIT_BUCKET" "$LABKIT_WHEEL_KEY" "$WHEEL" "$LABKIT_ENDPOINT_URL" <<'PY'
import os
import sys

import boto3
from botocore.config import Config

region, bucket, key, dest, endpoint = sys.argv[1:6]
config = Config(retries={"mode": "standard", "max_attempts": 3},
                s3={"addressing_style": "path"} if endpoint else None)
s3 = boto3.client("s3", region_name=region, endpoint_url=endpoint or None, config=config)
s3.download_file(bucket, key, dest + ".part")
os.replace(dest + ".part", dest)
PY
}

set -E
trap 'on_error "$LINENO" "$BASH_COMMAND"' ERR

# -- the settings, checked before anything changes ---------------------------------------------
for var in AWS_REGION LABKIT_BUCKET LABKIT_REQUEST_QUEUE LABKIT_RESPONSE_QUEUE LABKIT_IMAGE_INBOX \
           LABKIT_IMAGE_OUTBOX LABKIT_WHEEL_KEY LABKIT_WHEEL_SHA256; do
    [ -n "${!var}" ] || fail "$var is not set (labkit deploy writes it into the user data)"
done
for var in LABKIT_CONCURRENCY RETRY_FOR RETRY_DELAY; do
    case "${!var}" in
        '' | *[!0-9]*) fail "$var must be a whole number, got '${!var}'" ;;
    esac
done

# -- the machine: Python and an unprivileged user --------------------------------------------------
if [ "$SKIP_SYSTEM" = 1 ]; then
    log "LABKIT_SKIP_SYSTEM=1: not installing packages, not creating the user, not touching systemd"
else
    log "installing Python"
    retry "installing Python (dnf)" dnf install -y -q python3.11 python3.11-pip
    if ! id -u labkit >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/labkit --no-create-home --shell /sbin/nologin labkit
    fi
fi
if [ -z "$INSTANCE_ID" ]; then
    retry "reading the instance's id" instance_id
fi
log "instance $INSTANCE_ID"

# -- the virtual environment and the pinned dependencies -----------------------------------------------
mkdir -p "$APP/wheels" "$ETC" "$UNIT_DIR"
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ -n "${LABKIT_EXTRA_SITE:-}" ]; then
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$LABKIT_EXTRA_SITE" > "$site/labkit-extra-site.pth"
fi
pinned_requirements
log "installing the pinned dependencies"
retry "installing the pinned dependencies" \
    pip_install --require-hashes --only-binary :all: -r "$APP/requirements.txt"

# -- the wheel: fetched with the instance role, checked, installed --------------------------------
log "fetching s3://$LABKIT_BUCKET/$LABKIT_WHEEL_KEY"
retry "fetching the labkit wheel" fetch_wheel
actual="$(sha256sum "$WHEEL" | cut -d' ' -f1)"
[ "$actual" = "$LABKIT_WHEEL_SHA256" ] || fail "checksum mismatch for $WHEEL: expected $LABKIT_WHEEL_SHA256, got $actual"
log "installing ${WHEEL##*/}"
retry "installing the labkit wheel" pip_install --no-deps --force-reinstall "$WHEEL"

# -- configuration: names, region and the instance's id only ---------------------------------------------
log "writing $ETC/worker.env"
{
    echo "# Written by the labkit bootstrap. Names and region only: credentials come from the instance role."
    echo "AWS_REGION=$AWS_REGION"
    echo "AWS_DEFAULT_REGION=$AWS_REGION"
    echo "LABKIT_BUCKET=$LABKIT_BUCKET"
    echo "LABKIT_REQUEST_QUEUE=$LABKIT_REQUEST_QUEUE"
    echo "LABKIT_RESPONSE_QUEUE=$LABKIT_RESPONSE_QUEUE"
    echo "LABKIT_IMAGE_INBOX=$LABKIT_IMAGE_INBOX"
    echo "LABKIT_IMAGE_OUTBOX=$LABKIT_IMAGE_OUTBOX"
    echo "LABKIT_CONCURRENCY=$LABKIT_CONCURRENCY"
    echo "LABKIT_INSTANCE_ID=$INSTANCE_ID"
    echo "LABKIT_STATE_DIR=/var/lib/labkit"
    echo "PYTHONUNBUFFERED=1"
    if [ -n "$LABKIT_ENDPOINT_URL" ]; then
        echo "LABKIT_ENDPOINT_URL=$LABKIT_ENDPOINT_URL"
    fi
    if [ -n "$LABKIT_JOB_MODULES" ]; then
        echo "LABKIT_JOB_MODULES=$LABKIT_JOB_MODULES"
    fi
} > "$ETC/worker.env.tmp"
chmod 0644 "$ETC/worker.env.tmp"
mv "$ETC/worker.env.tmp" "$ETC/worker.env"

log "installing $UNIT_DIR/$UNIT"
"$VENV/bin/python" - "$UNIT_DIR/$UNIT" <<'PY'
import os
import shutil
import sys

import worker

shutil.copyfile(os.path.join(os.path.dirname(worker.__file__), "deploy", "labkit-worker.service"), sys.argv[1])
PY
chmod 0644 "$UNIT_DIR/$UNIT"

# -- start ----------------------------------------------------------------------------------------
if [ "$SKIP_SYSTEM" != 1 ]; then
    systemctl daemon-reload
    systemctl enable "$UNIT"
    # Type=notify: this returns once the worker says it serves. If it cannot start, systemd keeps restarting
    # it and, after too many failures, powers the instance off (the unit's FailureAction).
    systemctl restart "$UNIT" || log "$UNIT did not start yet: systemd keeps trying (journalctl -u $UNIT)"
    log "$UNIT started: journalctl -u $UNIT -f"
fi
log "done"

#!/bin/bash
# labkit worker bootstrap: EC2 user data for Amazon Linux 2023 (runs once, as root, at first boot).
#
# It installs Python, creates a virtual environment in /opt/labkit/venv, fetches the labkit wheel
# from the bucket with the instance role's credentials (no access keys anywhere), checks its
# SHA-256, installs it, writes /etc/labkit/worker.env (names and region only: no secrets) and the
# systemd unit labkit-worker.service (shipped in the wheel), then enables and starts the worker.
# Its output goes to /var/log/cloud-init-output.log. Running it again is safe.
#
# `labkit deploy` fills in the settings below. Each one can also come from the environment, which
# is how the tests run this very script in a sandbox. Knobs for that (never set on EC2):
#   LABKIT_ROOT=DIR          write everything under DIR instead of / (DIR/opt/labkit, DIR/etc/...)
#   LABKIT_SKIP_SYSTEM=1     skip the steps that change the machine itself: dnf, useradd, systemctl
#   LABKIT_PYTHON=PATH       the interpreter that creates the venv (default python3.11)
#   LABKIT_EXTRA_SITE=DIR    make DIR's packages visible in the venv (a .pth file): reuse an
#                            environment that already has the dependencies instead of downloading them
#   LABKIT_PIP_OPTIONS=...   extra options for installing the wheel (the tests pass --no-deps)
#   LABKIT_ENDPOINT_URL=URL  talk to this endpoint instead of AWS (the emulator), for the wheel and the worker
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
# -- end of settings --------------------------------------------------------------------------------

ROOT="${LABKIT_ROOT:-}"
SKIP_SYSTEM="${LABKIT_SKIP_SYSTEM:-0}"
PYTHON="${LABKIT_PYTHON:-python3.11}"
APP="$ROOT/opt/labkit"
VENV="$APP/venv"
ETC="$ROOT/etc/labkit"
UNIT_DIR="$ROOT/etc/systemd/system"
UNIT=labkit-worker.service

log() { echo "labkit-bootstrap: $*"; }
fail() { echo "labkit-bootstrap: error: $*" >&2; exit 1; }

for var in AWS_REGION LABKIT_BUCKET LABKIT_REQUEST_QUEUE LABKIT_RESPONSE_QUEUE LABKIT_IMAGE_INBOX \
           LABKIT_IMAGE_OUTBOX LABKIT_WHEEL_KEY LABKIT_WHEEL_SHA256; do
    [ -n "${!var}" ] || fail "$var is not set (labkit deploy writes it into the user data)"
done
case "$LABKIT_CONCURRENCY" in
    '' | *[!0-9]*) fail "LABKIT_CONCURRENCY must be a whole number, got '$LABKIT_CONCURRENCY'" ;;
esac

# -- the machine: Python and an unprivileged user --------------------------------------------------
if [ "$SKIP_SYSTEM" = 1 ]; then
    log "LABKIT_SKIP_SYSTEM=1: not installing packages, not creating the user, not touching systemd"
else
    log "installing Python"
    dnf install -y -q python3.11 python3.11-pip
    if ! id -u labkit >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/labkit --no-create-home --shell /sbin/nologin labkit
    fi
fi

# -- the virtual environment ----------------------------------------------------------------------
mkdir -p "$APP/wheels" "$ETC" "$UNIT_DIR"
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ -n "${LABKIT_EXTRA_SITE:-}" ]; then
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$LABKIT_EXTRA_SITE" > "$site/labkit-extra-site.pth"
fi
if ! "$VENV/bin/python" -c 'import boto3' 2>/dev/null; then
    log "installing boto3 to fetch the wheel"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check boto3
fi

# -- the wheel: fetched with the instance role, checked, installed --------------------------------
WHEEL="$APP/wheels/${LABKIT_WHEEL_KEY##*/}"
log "fetching s3://$LABKIT_BUCKET/$LABKIT_WHEEL_KEY"
"$VENV/bin/python" - "$AWS_REGION" "$LABKIT_BUCKET" "$LABKIT_WHEEL_KEY" "$WHEEL" "$LABKIT_ENDPOINT_URL" <<'PY'
import os
import sys

import boto3
from botocore.config import Config

region, bucket, key, dest, endpoint = sys.argv[1:6]
config = Config(retries={"mode": "standard", "max_attempts": 10},
                s3={"addressing_style": "path"} if endpoint else None)
s3 = boto3.client("s3", region_name=region, endpoint_url=endpoint or None, config=config)
s3.download_file(bucket, key, dest + ".part")
os.replace(dest + ".part", dest)
PY
actual="$(sha256sum "$WHEEL" | cut -d' ' -f1)"
[ "$actual" = "$LABKIT_WHEEL_SHA256" ] || fail "checksum mismatch for $WHEEL: expected $LABKIT_WHEEL_SHA256, got $actual"
log "installing ${WHEEL##*/}"
# shellcheck disable=SC2086  # LABKIT_PIP_OPTIONS holds several words on purpose
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
    ${LABKIT_PIP_OPTIONS:-} "$WHEEL"

# -- configuration: names and region only ---------------------------------------------------------
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
    systemctl restart "$UNIT"
    log "$UNIT started: journalctl -u $UNIT -f"
fi
log "done"

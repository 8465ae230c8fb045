"""The ``labkit`` command. Each command parses its arguments, calls the library and prints what it
returns (through :mod:`labkit.presenters` where a widget shows the same); the logic lives elsewhere.

Commands by module: ``stack`` (up, down, status, worker, emulator, teardown), ``jobs`` (submit, purge,
dlq), ``fleet`` (deploy, undeploy), ``tools`` (run-notebooks, bench, demo), ``doctor``. A new command goes in the
module of its kind, with a ``cmd_*`` function and its parser in that module's ``register``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from labkit.cli import doctor, fleet, jobs, stack, tools
from labkit.errors import run_command

EPILOG = """\
Settings come from arguments, then the environment (LABKIT_ENDPOINT_URL or AWS_ENDPOINT_URL,
AWS_REGION, LABKIT_REQUEST_QUEUE, LABKIT_RESPONSE_QUEUE, LABKIT_IMAGE_INBOX, LABKIT_IMAGE_OUTBOX,
LABKIT_BUCKET, LABKIT_STATE_DIR, LABKIT_JOB_MODULES), then the state file .labkit/state.json written
by `labkit up`.

Quick start (no AWS account needed):
  labkit up                      # embedded emulator + provisioning + one local worker
  labkit submit numbers 1 5 22   # {"count": 3, "min": 1, ...}
  labkit status
  labkit down
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", metavar="DIR", help="where state.json and logs live (default .labkit)")
    common.add_argument("--region", help="AWS region (default: AWS_REGION, else us-east-1)")
    parser = argparse.ArgumentParser(prog="labkit", description="Send number and image jobs through SQS and S3 "
                                     "to workers, on AWS or on an embedded emulator.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str,
            parents: list[argparse.ArgumentParser] | None = None, **kwargs: Any) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, parents=[common] if parents is None else parents,
                            **kwargs)
        sp.set_defaults(fn=fn)
        return sp

    stack.register(add)
    jobs.register(add, common)
    fleet.register(add, common)
    tools.register(add)
    doctor.register(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.fn(args), getattr(args, "state_dir", None))


if __name__ == "__main__":
    sys.exit(main())

"""Commands that start, show and stop labkit: up, down, status, worker, emulator, teardown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from labkit.cli.common import confirm, print_changes, print_json, print_tables, say, settings
from labkit.config import read_state
from labkit.presenters import billing_table, status_tables

Add = Any  # the parser-adding function of labkit.cli.build_parser


def cmd_up(args: argparse.Namespace) -> int:
    from labkit import local
    s = settings(args)
    use_local = True if args.local else (False if args.aws else None)
    if s.state_origin in ("above", "lab"):
        say(f"this lab's {s.state_source}" + (
            "; `mkdir .labkit` first for a lab of this folder's own" if s.state_origin == "lab" else ""))
    if local.choose_local(s, use_local) is False:
        say(local.where_up_goes(s))
    out = local.up(s, use_local, workers=args.workers, concurrency=args.concurrency, progress=say)
    report, state = out["report"], out["state"]
    print_changes(created=report.created, updated=report.updated)
    where = f"{state['endpoint_url']} (the embedded emulator)" if state["local"] else \
        state["endpoint_url"] or f"AWS {state['region']}"
    print(f"labkit is up on {where}: bucket {state['bucket']}, {len(state['workers'])} local worker(s)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from labkit.local import runs_own_emulator
    from labkit.teardown import down
    s = settings(args)
    state = read_state(s.state_dir)
    elsewhere = bool(state.get("bucket")) and not state.get("local") and not runs_own_emulator(s, state)
    out = down(s)
    print(f"stopped {len(out['workers_stopped'])} worker(s)"
          + (", the emulator" if out["emulator_stopped"] else "")
          + (f"; deleted {len(out['reply_queues_deleted'])} leftover reply queue(s)"
             if out["reply_queues_deleted"] else "")
          + (f"; kept {len(out['reply_queues_kept'])} reply queue(s) of clients still running"
             if out["reply_queues_kept"] else ""))
    if out["emulator_stopped"]:
        print("deleted the embedded emulator's data with it: its queues, messages and bucket lived in its memory "
              "(the next `labkit up` starts empty)")
    elif elsewhere:
        print(f"kept the queues and the bucket {state['bucket']} on {s.endpoint_url or f'AWS {s.region}'}, with "
              "their messages and objects (`labkit teardown` deletes them)")
    for note in out["notes"]:
        print(f"note: {note}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    if args.class_view:
        return _class_status(args)
    with Lab(settings(args)) as lab:
        st = lab.status()
        refused = st.get("credentials", {}).get("problem")  # AWS refuses them: what it could not be asked is left out
        if read_state(lab.settings.state_dir).get("fleet") and not refused:
            from labkit import fleet
            st["fleet"] = fleet.fleet_status(lab.clients)
    st["state"] = {"file": str(lab.settings.state_file), "origin": lab.settings.state_origin}
    if args.json:
        print_json(st)
        return 1 if refused else 0
    print(f"{lab.settings.state_source}\n")
    print_tables(*status_tables(st), billing_table(st, local=lab.settings.is_local))
    if "fleet" in st:
        from labkit import fleet
        print(fleet.format_status(st["fleet"]))
    if refused:
        print(f"labkit: error: {refused}", file=sys.stderr)
        return 1
    return 0


def _class_status(args: argparse.Namespace) -> int:
    """``labkit status --class``: the instructor's view (labkit.classview)."""
    from labkit.aws.clients import Clients
    from labkit.classview import class_view
    from labkit.presenters import class_tables
    s = settings(args)
    view = class_view(Clients(s))
    if args.json:
        print_json(view)
    else:
        print(f"{s.state_source}\n")
        print_tables(*[t for t in class_tables(view) if getattr(t, "kind", None) != "error"])
    if view["refused"]:  # what could be read is shown; the refusal is one line, as every command's
        print(f"labkit: error: {view['refused']}", file=sys.stderr)
        return 1
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """``labkit worker ...``: the worker owns its command line (:mod:`worker.cli`); its arguments go to it as given."""
    from worker.cli import main
    return main(args.worker_args)


def cmd_emulator(args: argparse.Namespace) -> int:
    from labkit.emulator import serve
    serve(args.port, Path(args.ready_file) if args.ready_file else None)
    return 0


def cmd_teardown(args: argparse.Namespace) -> int:
    from labkit.teardown import teardown
    s = settings(args)
    what = ("bucket's images and other objects" if not args.all else "bucket with its images") \
        if not args.keep_bucket else "nothing in the bucket"
    if not s.is_local and not args.yes and not confirm(
            f"Delete labkit's worker fleet and queues, and the {what} in {s.region}? [y/N] ", "y|yes",
            f"teardown on real AWS deletes the worker fleet and the queues, and the {what}: add --yes to confirm"):
        print("nothing deleted")
        return 1
    report = teardown(s, keep_bucket=args.keep_bucket, delete_bucket=args.all, progress=say)
    kept = [f"{x} (in use: a client still runs)" for x in report.kept]
    if report.bucket_kept:
        kept.append(f"bucket {report.bucket_kept}, empty: it costs nothing, and keeping it keeps its name for the "
                    "next `labkit up` (S3 may hold a deleted bucket's name for hours); `labkit teardown --all` "
                    "deletes it")
    print_changes(deleted=report.deleted, kept=kept, note=report.notes)
    if report.left:
        print(f"still there (SQS may list a deleted queue for up to 60 s): {', '.join(report.left)}")
    return 0


def register(add: Add) -> None:
    from worker.cli import DESCRIPTION
    sp = add("up", cmd_up, "start the emulator if local, provision queues and bucket, start local workers")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--local", action="store_true", help="use the embedded emulator (default when no AWS "
                   "credentials and no endpoint are configured)")
    g.add_argument("--aws", action="store_true", help="use real AWS with your configured credentials")
    sp.add_argument("--workers", type=int, default=1, metavar="N", help="local worker processes (default 1)")
    sp.add_argument("--concurrency", type=int, default=4, metavar="N", help="jobs at once per worker (default 4)")

    add("down", cmd_down, "stop what `up` started (workers, emulator); keep nothing running")

    sp = add("status", cmd_status, "endpoint, queues with depths, bucket, workers, the EC2 fleet if deployed")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.add_argument("--class", dest="class_view", action="store_true", help="the instructor's view: every "
                    "student's reply queue with its last activity, each lane's jobs waiting, in flight and dead, the "
                    "fleet's size and health, the day's cost so far")

    # No parsing here: every argument, --help too, goes to the worker's own parser (no argument starts with "\0").
    sp = add("worker", cmd_worker, DESCRIPTION, parents=[], add_help=False, prefix_chars="\0")
    sp.add_argument("worker_args", nargs=argparse.REMAINDER)

    sp = add("emulator", cmd_emulator, "run the embedded emulator in the foreground (127.0.0.1 only)", parents=[])
    sp.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    sp.add_argument("--ready-file", help=argparse.SUPPRESS)

    sp = add("teardown", cmd_teardown, "undeploy the EC2 fleet, stop local workers, delete every queue, empty the "
             "bucket (--all: delete it too), stop the emulator")
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation (real AWS)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--keep-bucket", action="store_true", help="keep the bucket and its objects")
    g.add_argument("--all", action="store_true", help="delete the emptied bucket too (by default it stays: an "
                   "empty bucket costs nothing, and S3 may hold a deleted bucket's name for hours)")

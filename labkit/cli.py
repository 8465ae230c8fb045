"""The ``labkit`` command. It parses arguments and calls the library; the logic lives elsewhere."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from labkit.config import Settings
from labkit.errors import AwsError, LabkitError

PRESET = [1, 5, 22, 33, 9, 0, -15, 8, 22, 100, 33, 62, 90, 150, 1, 2, 3]  # the original lab's list
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}

EPILOG = """\
Settings come from arguments, then the environment (LABKIT_ENDPOINT_URL or AWS_ENDPOINT_URL,
AWS_REGION, LABKIT_REQUEST_QUEUE, LABKIT_RESPONSE_QUEUE, LABKIT_IMAGE_INBOX, LABKIT_IMAGE_OUTBOX,
LABKIT_BUCKET, LABKIT_STATE_DIR), then the state file .labkit/state.json written by `labkit up`.

Quick start (no AWS account needed):
  labkit up                      # embedded emulator + provisioning + one local worker
  labkit submit numbers 1 5 22   # {"count": 3, "min": 1, ...}
  labkit status
  labkit down
"""


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(state_dir=getattr(args, "state_dir", None), region=getattr(args, "region", None))


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# -- commands ---------------------------------------------------------------------------------------

def cmd_up(args: argparse.Namespace) -> int:
    from labkit import local
    settings = _settings(args)
    use_local = True if args.local else (False if args.aws else None)
    if local.choose_local(settings, use_local) is False:
        print(f"labkit: using real AWS in {settings.region}: queues and a bucket will be created "
              "(they cost money while they hold data; `labkit teardown` deletes them)", file=sys.stderr)
    out = local.up(settings, use_local, workers=args.workers, concurrency=args.concurrency)
    report, state = out["report"], out["state"]
    for line in report.created:
        print(f"created   {line}")
    for line in report.updated:
        print(f"updated   {line}")
    where = state["endpoint_url"] or f"AWS {state['region']}"
    print(f"labkit is up on {where}: bucket {state['bucket']}, {len(state['workers'])} local worker(s)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from labkit import local
    out = local.down(_settings(args))
    print(f"stopped {len(out['workers_stopped'])} worker(s)"
          + (", the emulator" if out["emulator_stopped"] else "")
          + (f"; deleted {len(out['reply_queues_deleted'])} leftover reply queue(s)"
             if out["reply_queues_deleted"] else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    from labkit.config import read_state
    with Lab(_settings(args)) as lab:
        st = lab.status()
        if read_state(lab.settings.state_dir).get("fleet"):
            st["fleet"] = lab.fleet()
    if args.json:
        _print_json(st)
        return 0
    print(f"endpoint   {st['endpoint']}")
    print(f"{'queue':<28}{'visible':>9}{'in flight':>11}{'dead-letter':>13}")
    for name, q in st["queues"].items():
        if "error" in q:
            print(f"{name:<28}{q['error']:>9}")
            continue
        dl = q.get("dead_letter")
        print(f"{name:<28}{q['visible']:>9}{q['in_flight']:>11}{'' if dl is None else dl:>13}")
    print(f"reply queues {st['reply_queues']}")
    b = st["bucket"]
    if b and "error" not in b:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(b["by_prefix"].items())) or "empty"
        print(f"bucket     {b['name']} ({parts})")
    else:
        print(f"bucket     {b['name'] if b else '?'} (missing)")
    from labkit.local import _ours
    workers = st["workers"]
    alive = [w for w in workers if _ours(w)]
    print(f"workers    {len(alive)} local running" + "".join(f"\n  pid {w['pid']}  log {w['log']}" for w in alive))
    if "fleet" in st:
        from labkit.fleet import format_status
        print(format_status(st["fleet"]))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.loop import run_worker
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    roles = tuple(r.strip() for r in args.queues.split(",") if r.strip())
    return run_worker(_settings(args), roles=roles, concurrency=args.concurrency, burst=args.burst,
                      poll_wait=args.poll_wait, job_timeout=args.job_timeout, log_to_s3=args.log_to_s3)


def cmd_submit_numbers(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    from labkit.jobs.numbers import parse_text
    with Lab(_settings(args)) as lab:
        if args.random is not None:
            values: Any = lab.random_numbers(args.random, seed=args.seed)
        elif args.preset:
            values = PRESET
        elif args.numbers:
            values = parse_text(" ".join(args.numbers))
        else:
            raise LabkitError("give numbers (labkit submit numbers 1 5 22), --preset or --random N")
        result = lab.numbers(values).result(timeout=args.timeout)
    _print_json(result)
    return 0


def cmd_submit_image(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    from labkit.jobs.images import parse_op_spec
    ops = [parse_op_spec(s) for s in args.op]
    path = Path(args.path)
    with Lab(_settings(args)) as lab:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise LabkitError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
            keys = [lab.upload_image(p) for p in files]
            payloads = [{"bucket": lab.bucket.name, "key": k, "ops": ops, "format": args.format} for k in keys]
            jobs = lab.submit_many("image", payloads, progress=True, desc="images")
            out_dir = Path(args.out) if args.out else None
            failed = 0
            for f, job in zip(files, jobs, strict=True):
                try:
                    res = job.result(timeout=0)
                except LabkitError as exc:
                    failed += 1
                    print(f"{f.name}: error: {exc}", file=sys.stderr)
                    continue
                dest = res.download(out_dir) if out_dir else None
                print(f"{f.name} -> s3://{res['bucket']}/{res.key} ({res['width']}x{res['height']})"
                      + (f" -> {dest}" if dest else ""))
            return 1 if failed else 0
        if not path.exists():
            raise LabkitError(f"no file or folder at {path}")
        res = lab.image(path, ops, format=args.format, quality=args.quality).result(timeout=args.timeout)
        info = dict(res.info)
        if args.out:
            info["downloaded_to"] = str(res.download(args.out))
    _print_json(info)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    with Lab(_settings(args)) as lab:
        names = lab.purge(args.queue)
    print("purged " + ", ".join(names))
    return 0


def cmd_dlq_show(args: argparse.Namespace) -> int:
    from labkit.aws.clients import Clients
    from labkit.dlq import DeadLetters
    letters = DeadLetters(Clients(_settings(args)), args.queue)
    shown = letters.show(limit=args.limit)
    if args.json:
        _print_json([d.to_dict() for d in shown])
        return 0
    total = letters.count()
    print(f"{letters.dlq.name}: {total} dead letter(s)" + (f", showing {len(shown)}" if len(shown) < total else "")
          + (f"; `labkit dlq redrive {letters.source.name}` sends them back" if total else ""))
    for i, d in enumerate(shown, 1):
        job = f"job {d.job_id} kind={d.kind or '?'}" if d.job_id else "no job id (plain text or malformed)"
        print(f"{i:>3}. sqs {d.message_id}  received {d.receives}x  {job}")
        if d.reply_to:
            print(f"     reply_to {_preview(d.reply_to)}")
        print(f"     body {_preview(d.body)}")
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    from labkit.aws.clients import Clients
    from labkit.dlq import DeadLetters
    letters = DeadLetters(Clients(_settings(args)), args.queue)
    report = letters.redrive(limit=args.limit)
    print(f"moved {report.moved} message(s) from {letters.dlq.name} back to {report.source}")
    if report.not_deleted:
        print(f"{report.not_deleted} of them could not be deleted from {letters.dlq.name} and will show there "
              "again (their job may run twice; clients drop the duplicate reply)", file=sys.stderr)
    for line in report.failed:
        print(f"not moved: {line}", file=sys.stderr)
    return 1 if report.failed else 0


def _preview(text: str, limit: int = 160) -> str:
    """One printable line: control and format characters (terminal escapes, newlines) escaped, long text cut."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + (f"... ({len(text):,} characters)" if len(text) > limit else "")


def cmd_emulator(args: argparse.Namespace) -> int:
    from labkit.emulator import serve
    serve(args.port, Path(args.ready_file) if args.ready_file else None)
    return 0


def _progress(text: str) -> None:
    print(f"labkit: {text}", file=sys.stderr, flush=True)


def cmd_deploy(args: argparse.Namespace) -> int:
    from labkit import fleet
    from labkit.client import Lab
    settings = _settings(args)
    autoscale = fleet.parse_autoscale(args.autoscale) if args.autoscale else None
    open_ssh = fleet.is_open_cidr(args.ssh_cidr)
    if open_ssh and not args.yes:
        if not sys.stdin.isatty():
            raise LabkitError(f"--ssh-cidr {args.ssh_cidr} opens SSH to the whole internet: give your own address "
                              "range, use Session Manager, or add --yes to confirm that you mean it")
        answer = input(f"Open SSH (port 22) to the whole internet ({args.ssh_cidr})? Type 'open' to confirm: ")
        if answer.strip() != "open":
            print("nothing deployed")
            return 1
    if settings.is_local:
        _progress("on the emulator the resources are created but no instance boots: the local workers "
                  "from `labkit up` do the work")
    else:
        _progress(f"deploying EC2 workers in {settings.region}: instances cost money while they run "
                  "(`labkit undeploy` removes them; see docs/aws.md for prices)")
    with Lab(settings) as lab:
        report = lab.deploy(workers=args.workers, instance_type=args.instance_type, autoscale=autoscale,
                            ssh_cidr=args.ssh_cidr, key_name=args.key_name, instance_profile=args.instance_profile,
                            concurrency=args.concurrency, allow_open_ssh=open_ssh, progress=_progress)
        for kind, lines in (("created", report.created), ("updated", report.updated), ("deleted", report.deleted)):
            for line in lines:
                print(f"{kind:<10}{line}")
        for note in report.notes:
            print(f"note      {note}")
        print(fleet.format_status(lab.fleet()))
    return 0


def _undeploy(clients: Any, quiet_if_denied: bool = False) -> None:
    from labkit import fleet
    from labkit.config import read_state
    try:
        report = fleet.undeploy(clients, progress=_progress)
    except AwsError as exc:
        # teardown on an account that never had a fleet and may not read EC2 or IAM: nothing to undo
        recorded = read_state(clients.settings.state_dir).get("fleet")
        if quiet_if_denied and not recorded and exc.code in ("AccessDenied", "UnauthorizedOperation",
                                                              "AccessDeniedException"):
            print(f"note      fleet not checked: {exc}")
            return
        raise
    for line in report.deleted:
        print(f"deleted   {line}")
    for note in report.notes:
        print(f"note      {note}")


def cmd_undeploy(args: argparse.Namespace) -> int:
    from labkit.aws.clients import Clients
    settings = _settings(args)
    clients = Clients(settings)
    _undeploy(clients)
    print(f"the worker fleet for bucket {clients.bucket_name()} is gone")
    return 0


def cmd_teardown(args: argparse.Namespace) -> int:
    from labkit import local, provision
    from labkit.aws.clients import Clients
    settings = _settings(args)
    if not settings.is_local and not args.yes:
        if not sys.stdin.isatty():
            raise LabkitError("teardown on real AWS deletes the worker fleet, the queues and the bucket with its "
                              "images: add --yes to confirm")
        answer = input(f"Delete labkit's worker fleet, queues and bucket in {settings.region}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    clients = Clients(settings)
    _undeploy(clients, quiet_if_denied=True)
    report = provision.teardown(clients, delete_bucket=not args.keep_bucket)
    for line in report.deleted:
        print(f"deleted   {line}")
    local.down(settings)
    return 0


def cmd_run_notebooks(args: argparse.Namespace) -> int:
    from labkit.notebooks import main_run
    return main_run(aws=args.aws, pairs=args.parameter, out=args.out, only=args.only)


def cmd_bench(args: argparse.Namespace) -> int:
    from labkit import bench

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.sweep:
        rows = bench.sweep(windows=args.sweep_windows, workers=args.sweep_workers, jobs=args.jobs or 500,
                           aws=args.aws, log=log)
        if args.json:
            _print_json(rows)
        else:
            print(bench.format_sweep(rows))
        return 0
    only = tuple(x.strip() for x in args.only.split(",") if x.strip()) if args.only else None
    sizes = {"jobs": args.jobs, "window": args.window, "workers": args.workers, "concurrency": args.concurrency,
             "big": args.big, "images": args.images, "only": only}
    plan = bench.Plan.quick(**sizes) if args.quick else bench.Plan.full(**sizes)
    report = bench.run_bench(plan, aws=args.aws, log=log)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(bench.format_table(report))
    wrong = [f"{r.name} ({r.jobs - r.correct} of {r.jobs})" for r in report.results.values() if r.correct < r.jobs]
    if wrong:
        print("labkit: error: wrong or missing results in " + ", ".join(wrong), file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from labkit.demo import run_demo
    return run_demo(random_length=args.random_length)


# -- parser -----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", metavar="DIR", help="where state.json and logs live (default .labkit)")
    common.add_argument("--region", help="AWS region (default: AWS_REGION, else us-east-1)")

    p = argparse.ArgumentParser(prog="labkit", description="Send number and image jobs through SQS and S3 to "
                                "workers, on AWS or on an embedded emulator.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Any, help: str,
            parents: list[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, parents=[common] if parents is None else parents)
        sp.set_defaults(fn=fn)
        return sp

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

    sp = add("worker", cmd_worker, "run a worker in the foreground (same as `python -m worker`)")
    sp.add_argument("--queues", default="numbers,images", help="which request queues to serve: numbers, "
                    "images or both (default numbers,images)")
    sp.add_argument("--concurrency", type=int, default=4, metavar="N", help="jobs at once (default 4)")
    sp.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    sp.add_argument("--poll-wait", type=int, default=10, metavar="S",
                    help="long-poll seconds per receive, 0-20 (default 10; a stop waits at most this long)")
    sp.add_argument("--job-timeout", type=float, default=600, metavar="S",
                    help="abandon a job with an error reply after S seconds (default 600)")
    sp.add_argument("--log-to-s3", action="store_true", help="also write job log lines to the bucket under logs/")

    sp = add("submit", lambda a: (a.submit_parser.print_help(), 2)[1], "send a job and print its result")
    sp.set_defaults(submit_parser=sp)
    ssub = sp.add_subparsers(dest="what", metavar="KIND")
    sn = ssub.add_parser("numbers", parents=[common], help="a number job: count, min, max, mean, median",
                         description="Send a number job and print its result as JSON.")
    sn.set_defaults(fn=cmd_submit_numbers)
    sn.add_argument("numbers", nargs="*", help="the numbers (spaces or commas between them)")
    sn.add_argument("--random", type=int, metavar="N", help="a random list of N integers instead")
    sn.add_argument("--seed", type=int, help="seed for --random")
    sn.add_argument("--preset", action="store_true", help="the original lab's preset list")
    sn.add_argument("--timeout", type=float, default=120, metavar="S", help="seconds to wait (default 120)")
    si = ssub.add_parser("image", parents=[common], help="an image job: process an image (or a folder of them)",
                         description="Upload an image, process it on a worker, print where the result is.")
    si.set_defaults(fn=cmd_submit_image)
    si.add_argument("path", help="an image file, or a folder: every image in it")
    si.add_argument("--op", action="append", default=[], metavar="OP",
                    help="an operation, repeatable, applied in order: grayscale, bw[:LEVEL], resize:WxH, "
                    "thumbnail:N, rotate:DEG, flip, mirror, crop:L,T,R,B, blur:R, sharpen, edges, "
                    "autocontrast, invert, sepia")
    si.add_argument("--format", default="png", choices=["png", "jpeg", "webp"], help="output format (default png)")
    si.add_argument("--quality", type=int, help="JPEG/WebP quality 1-95")
    si.add_argument("--out", metavar="PATH", help="download the result here (a file, or a folder for folders)")
    si.add_argument("--timeout", type=float, default=120, metavar="S", help="seconds to wait (default 120)")

    sp = add("purge", cmd_purge, "empty a queue (name, or requests|responses|inbox|outbox) or all four")
    sp.add_argument("queue", help="queue name, role, or 'all'")

    sp = add("dlq", lambda a: (a.dlq_parser.print_help(), 2)[1], "inspect dead letters (requests that could not "
             "be answered) and send them back")
    sp.set_defaults(dlq_parser=sp)
    dsub = sp.add_subparsers(dest="action", metavar="ACTION")
    ds = dsub.add_parser("show", parents=[common], help="list dead letters without consuming them",
                         description="List the dead letters of a request queue. They stay in the dead-letter "
                         "queue: each is received, then released at once.")
    ds.set_defaults(fn=cmd_dlq_show)
    ds.add_argument("queue", metavar="QUEUE", help="request queue name (or its -dlq name, or requests|inbox)")
    ds.add_argument("--limit", type=int, default=10, metavar="N", help="show at most N (default 10)")
    ds.add_argument("--json", action="store_true", help="print JSON")
    dr = dsub.add_parser("redrive", parents=[common], help="send dead letters back to their request queue",
                         description="Move dead letters back to their request queue. Each is deleted from the "
                         "dead-letter queue only after it was sent.")
    dr.set_defaults(fn=cmd_dlq_redrive)
    dr.add_argument("queue", metavar="QUEUE", help="request queue name (or its -dlq name, or requests|inbox)")
    dr.add_argument("--limit", type=int, metavar="N", help="move at most N (default: all present now)")

    sp = add("emulator", cmd_emulator, "run the embedded emulator in the foreground (127.0.0.1 only)", parents=[])
    sp.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    sp.add_argument("--ready-file", help=argparse.SUPPRESS)

    sp = add("deploy", cmd_deploy, "run workers on EC2: a least-privilege instance role, a security group with no "
             "inbound rule, N instances or an Auto Scaling group sized by the queues' backlog")
    sp.add_argument("--workers", type=int, default=1, metavar="N", help="instances to run (default 1)")
    sp.add_argument("--instance-type", default="t3.micro", metavar="TYPE", help="EC2 instance type (default "
                    "t3.micro; Graviton types like t4g.micro get the arm64 image)")
    sp.add_argument("--autoscale", metavar="MIN:MAX", help="an Auto Scaling group instead of --workers: MIN "
                    "instances when idle (0 is fine), up to MAX while requests wait")
    sp.add_argument("--ssh-cidr", metavar="CIDR", help="open SSH from this range only (e.g. 203.0.113.7/32); "
                    "default: no inbound rule at all, reach instances with Session Manager")
    sp.add_argument("--key-name", metavar="NAME", help="EC2 key pair for SSH (needed with --ssh-cidr)")
    sp.add_argument("--instance-profile", metavar="NAME", help="use this existing instance profile instead of "
                    "creating a role (for accounts that may not create IAM roles)")
    sp.add_argument("--concurrency", type=int, default=4, metavar="N", help="jobs at once per instance (default 4)")
    sp.add_argument("--yes", action="store_true", help="confirm opening SSH to the whole internet without asking")

    add("undeploy", cmd_undeploy, "terminate the EC2 workers and delete everything `deploy` made (role, profile, "
        "security group, launch template, group, alarms, wheels)")

    sp = add("teardown", cmd_teardown, "undeploy the EC2 fleet, delete every resource provisioning created, then "
             "`down`")
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation (real AWS)")
    sp.add_argument("--keep-bucket", action="store_true", help="keep the bucket and its objects")

    sp = add("run-notebooks", cmd_run_notebooks, "execute the notebooks in order with papermill (emulator and a "
             "local worker started and stopped for you); executed notebooks and figures go to runs/<time>/",
             parents=[])
    sp.add_argument("--aws", action="store_true", help="run against real AWS with your credentials (creates queues "
                    "and a bucket that cost money; 99_teardown deletes them)")
    sp.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="set a notebook parameter, repeatable (e.g. -p random_length 1000000 -p batch_jobs 500); "
                    "it goes to the notebooks that declare it")
    sp.add_argument("--out", default="runs", metavar="DIR", help="where run folders go (default runs/; "
                    "runs/latest points at the newest)")
    sp.add_argument("--only", action="append", metavar="PATTERN", help="run only the notebooks matching PATTERN "
                    "(a glob or part of the name, e.g. 01 or numbers), repeatable")

    sp = add("bench", cmd_bench, "measure throughput, latency and big jobs against a floor taken in the same run "
             "(see docs/benchmark.md)", parents=[])
    sp.add_argument("--jobs", type=int, metavar="N", help="small number jobs for throughput (default 2000; "
                    "--quick 200)")
    sp.add_argument("--window", type=int, metavar="W", help="jobs in flight (default: the client's own, 20 on the "
                    "emulator, adaptive from 200 on AWS)")
    sp.add_argument("--workers", type=int, metavar="K", help="worker processes (default 1)")
    sp.add_argument("--concurrency", type=int, metavar="C", help="jobs at once per worker (default 4)")
    sp.add_argument("--big", type=int, metavar="N", help="length of the big random list (default 10000000)")
    sp.add_argument("--images", type=int, metavar="N", help="1080p images to process (default 50)")
    sp.add_argument("--only", metavar="LIST", help="scenarios to run, comma-separated: floor, labkit, round_trip, "
                    "original, big, images (default all)")
    sp.add_argument("--quick", action="store_true", help="a small run (seconds, for tests and notebooks)")
    sp.add_argument("--json", action="store_true", help="print the results as JSON")
    sp.add_argument("--aws", action="store_true", help="run on real AWS (creates and deletes its own queues and "
                    "bucket; costs a few cents)")
    sp.add_argument("--sweep", action="store_true", help="instead: throughput and latency against the window "
                    "and the number of workers")
    sp.add_argument("--sweep-windows", type=_int_list, default=(10, 20, 40, 80), metavar="LIST",
                    help="windows for --sweep (default 10,20,40,80)")
    sp.add_argument("--sweep-workers", type=_int_list, default=(1, 2), metavar="LIST",
                    help="worker counts for --sweep (default 1,2)")

    sp = add("demo", cmd_demo, "the whole thing on the embedded emulator: start, send jobs, print, stop",
             parents=[])
    sp.add_argument("--random-length", type=int, default=100_000, metavar="N",
                    help="length of the random list (default 100000)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        print("labkit: interrupted", file=sys.stderr)
        return 130
    except LabkitError as exc:
        print(f"labkit: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    """Turn well-known boto errors into one line; anything else is a bug and keeps its traceback."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    if isinstance(exc, EndpointConnectionError):
        print(f"labkit: error: cannot reach {exc.kwargs.get('endpoint_url')}: is the emulator running? "
              "(`labkit up`)", file=sys.stderr)
        return 1
    if isinstance(exc, NoCredentialsError):
        print("labkit: error: no AWS credentials found: configure them (aws configure, AWS_PROFILE) or use "
              "the emulator (`labkit up --local`)", file=sys.stderr)
        return 1
    if isinstance(exc, ClientError):
        print(f"labkit: error: {AwsError.from_client_error(exc)}", file=sys.stderr)
        return 1
    raise exc


if __name__ == "__main__":
    sys.exit(main())

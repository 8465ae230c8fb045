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
    with Lab(_settings(args)) as lab:
        st = lab.status()
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


def cmd_emulator(args: argparse.Namespace) -> int:
    from labkit.emulator import serve
    serve(args.port, Path(args.ready_file) if args.ready_file else None)
    return 0


def cmd_teardown(args: argparse.Namespace) -> int:
    from labkit import local, provision
    from labkit.aws.clients import Clients
    settings = _settings(args)
    if not settings.is_local and not args.yes:
        if not sys.stdin.isatty():
            raise LabkitError("teardown on real AWS deletes the queues and the bucket with its images: "
                              "add --yes to confirm")
        answer = input(f"Delete labkit's queues and bucket in {settings.region}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    report = provision.teardown(Clients(settings), delete_bucket=not args.keep_bucket)
    for line in report.deleted:
        print(f"deleted   {line}")
    local.down(settings)
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

    sp = add("status", cmd_status, "endpoint, queues with depths, bucket, workers")
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

    sp = add("emulator", cmd_emulator, "run the embedded emulator in the foreground (127.0.0.1 only)", parents=[])
    sp.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    sp.add_argument("--ready-file", help=argparse.SUPPRESS)

    sp = add("teardown", cmd_teardown, "delete every resource provisioning created, then `down`")
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation (real AWS)")
    sp.add_argument("--keep-bucket", action="store_true", help="keep the bucket and its objects")

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

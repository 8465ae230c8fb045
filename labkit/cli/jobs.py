"""Commands that send jobs and look after the queues: submit numbers|image, purge, dlq show|redrive."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from labkit.cli.common import preview, print_json, settings
from labkit.errors import LabkitError
from labkit.keys import EXTENSION_OF_FORMAT

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
Add = Any


def cmd_submit_numbers(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    from labkit.jobs.numbers import PRESET, parse_text
    with Lab(settings(args)) as lab:
        if args.random is not None:
            values: Any = lab.random_numbers(args.random, seed=args.seed)
        elif args.preset:
            values = list(PRESET)
        elif args.numbers:
            values = parse_text(" ".join(args.numbers))
        else:
            raise LabkitError("give numbers (labkit submit numbers 1 5 22), --preset or --random N")
        result = lab.numbers(values).result(timeout=args.timeout)
    print_json(result)
    return 0


def cmd_submit_image(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    from labkit.jobs.images import check_output, parse_ops
    ops = parse_ops(args.op)
    check_output(args.format, args.quality)
    path = Path(args.path)
    with Lab(settings(args)) as lab:
        if path.is_dir():
            return _submit_folder(lab, path, ops, args)
        if not path.exists():
            raise LabkitError(f"no file or folder at {path}")
        res = lab.image(path, ops, format=args.format, quality=args.quality).result(timeout=args.timeout)
        info = dict(res.info)
        if args.out:
            info["downloaded_to"] = str(res.download(args.out))
    print_json(info)
    return 0


def _submit_folder(lab: Any, folder: Path, ops: Any, args: argparse.Namespace) -> int:
    """Every image in ``folder`` as one batch with a progress bar; results into the ``--out`` folder."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LabkitError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise LabkitError(f"--out {out_dir} is a file: a folder of images needs a folder to download into")
        out_dir.mkdir(parents=True, exist_ok=True)
    keys = [lab.upload_image(p) for p in files]
    payloads = [{"bucket": lab.bucket.name, "key": k, "ops": ops.to_list(), "format": args.format}
                | ({"quality": args.quality} if args.quality is not None else {}) for k in keys]
    jobs = lab.submit_many("image", payloads, progress=True, desc="images")
    failed = 0
    used: set[str] = set()
    for i, (f, job) in enumerate(zip(files, jobs, strict=True)):
        try:
            res = job.result(timeout=0)
        except LabkitError as exc:
            failed += 1
            print(f"{f.name}: error: {exc}", file=sys.stderr)
            continue
        ext = EXTENSION_OF_FORMAT.get(res["format"], "." + res["format"])
        name = f"{f.stem}{ext}" if f"{f.stem}{ext}" not in used else f"{f.stem}-{i}{ext}"  # a.png and a.jpg
        used.add(name)
        dest = res.download(out_dir / name) if out_dir else None
        print(f"{f.name} -> s3://{res['bucket']}/{res.key} ({res['width']}x{res['height']})"
              + (f" -> {dest}" if dest else ""))
    return 1 if failed else 0


def cmd_purge(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    from labkit.presenters import purge_report
    with Lab(settings(args)) as lab:
        table, note = purge_report(lab.purge(args.queue))
    print(table)
    if note.kind == "ok":
        return 0
    print(f"labkit: error: {note.text}", file=sys.stderr)  # some queue was not purged: exit 1
    return 1


def cmd_trace(args: argparse.Namespace) -> int:
    from labkit.journal import Journal
    from labkit.presenters import timeline_table
    s = settings(args)
    record = Journal(s.state_dir).find(args.job_id)
    if record is None:
        raise LabkitError(f"no job {args.job_id!r} in {s.state_dir}/journal.jsonl: trace knows the jobs this machine's "
                          "clients sent with this state folder (give the whole id, or its first 6 characters or more)")
    if args.json:
        print_json(record)
        return 0
    print(timeline_table(record["events"], f"job {record['id']} ({record['kind']})"))
    return 0


def cmd_dlq_show(args: argparse.Namespace) -> int:
    from labkit.aws.clients import Clients
    from labkit.dlq import DeadLetters
    letters = DeadLetters(Clients(settings(args)), args.queue)
    shown = letters.show(limit=args.limit)
    if args.json:
        print_json([d.to_dict() for d in shown])
        return 0
    total = letters.count()
    print(f"{letters.dlq.name}: {total} dead letter(s)" + (f", showing {len(shown)}" if len(shown) < total else "")
          + (f"; `labkit dlq redrive {letters.source.name}` sends them back" if total else ""))
    for i, d in enumerate(shown, 1):
        job = f"job {d.job_id} kind={d.kind or '?'}" if d.job_id else "no job id (plain text or malformed)"
        print(f"{i:>3}. sqs {d.message_id}  received {d.receives}x  {job}")
        if d.reply_to:
            print(f"     reply_to {preview(d.reply_to)}")
        print(f"     body {preview(d.body)}")
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    from labkit.aws.clients import Clients
    from labkit.dlq import DeadLetters
    letters = DeadLetters(Clients(settings(args)), args.queue)
    report = letters.redrive(limit=args.limit)
    print(f"moved {report.moved} message(s) from {letters.dlq.name} back to {report.source}")
    if report.not_deleted:
        print(f"{report.not_deleted} of them could not be deleted from {letters.dlq.name} and will show there "
              "again (their job may run twice; clients drop the duplicate reply)", file=sys.stderr)
    for line in report.failed:
        print(f"not moved: {line}", file=sys.stderr)
    return 1 if report.failed else 0


def register(add: Add, common: argparse.ArgumentParser) -> None:
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
    si.add_argument("--quality", type=int, help="JPEG quality 1-95, WebP 1-100")
    si.add_argument("--out", metavar="PATH", help="download the result here (a file, or a folder for folders: "
                    "created if missing, one file per image)")
    si.add_argument("--timeout", type=float, default=120, metavar="S", help="seconds to wait (default 120)")

    sp = add("trace", cmd_trace, "print a job's life: sent, each delivery, started, finished, replied, result "
             "(jobs this machine's clients sent)")
    sp.add_argument("job_id", metavar="JOB_ID", help="the job's id (or its first 6 characters or more)")
    sp.add_argument("--json", action="store_true", help="print the journal's record as JSON")

    sp = add("purge", cmd_purge, "empty a queue (name, or requests|responses|inbox|outbox) or all four; each "
             "queue's outcome is shown (SQS allows one purge per queue every 60 s), exit 1 if any was not purged")
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

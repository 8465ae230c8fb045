"""Commands that send jobs and look after the queues: submit numbers|image, purge, dlq show|redrive."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from labkit.cli.common import preview, print_json, settings
from labkit.errors import LabkitError
from labkit.future import download_target, names_folder, writable_folder
from labkit.jobs.numbers import MAX_RANDOM_LENGTH
from labkit.keys import EXTENSION_OF_FORMAT, FORMAT_OF_EXTENSION, format_for_key, output_key

Add = Any


def cmd_submit_numbers(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    from labkit.jobs.numbers import PRESET, parse_text
    given = [what for what, on in (("numbers", args.numbers), ("--preset", args.preset),
                                   ("--random", args.random is not None)) if on]
    if len(given) > 1:
        raise LabkitError(f"give one list: numbers, --preset or --random N, not {' and '.join(given)} together")
    if args.seed is not None and args.random is None:
        raise LabkitError("--seed only applies to --random N: add --random N, or drop --seed")
    if args.random is not None and args.random > MAX_RANDOM_LENGTH:
        raise LabkitError(f"--random makes at most {MAX_RANDOM_LENGTH:,} numbers, got {args.random:,}: for more, "
                          "write them to a file and send @FILE (or send several jobs)")
    if not given:
        raise LabkitError("give numbers (labkit submit numbers 1 5 22, @FILE, or - for standard input), --preset "
                          "or --random N")
    # Read and parsed before connecting: a bad item fails before anything is made or sent.
    values: Any = parse_text(_numbers_text(args.numbers)) if args.numbers else list(PRESET)
    with Lab(settings(args)) as lab:
        if args.random is not None:
            values = lab.random_numbers(args.random, seed=args.seed)
        result = lab.numbers(values).result(timeout=args.timeout)
    print_json(result)
    return 0


def _numbers_text(items: list[str]) -> str:
    """The numbers given on the command line as one text: ``@FILE`` stands for the file's text, ``-`` for
    standard input's."""
    parts = []
    for item in items:
        if item == "-":
            parts.append(sys.stdin.read())
        elif item.startswith("@"):
            path = Path(item[1:])
            try:
                parts.append(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise LabkitError(f"cannot read the numbers in {path}: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise LabkitError(f"{path} is not a text file: write the numbers as text, separated by "
                                  "spaces, commas or new lines") from None
        else:
            parts.append(item)
    return " ".join(parts)


def cmd_submit_image(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    from labkit.jobs.images import parse_ops
    ops = parse_ops(args.op)
    path = Path(args.path)
    if not path.exists():
        raise LabkitError(f"no file or folder at {path}")
    fmt = _output_format(args.format, None if path.is_dir() or names_folder(args.out) else args.out)
    _check_quality(fmt, args.quality)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix[1:].lower() in FORMAT_OF_EXTENSION)
        if not files:
            raise LabkitError(f"no images ({', '.join(sorted('.' + ext for ext in FORMAT_OF_EXTENSION))}) in {path}")
        names = _result_names(files, fmt)
        out_dir = _out_folder(args.out, files, names) if args.out else None
        with Lab(settings(args)) as lab:
            return _submit_folder(lab, files, names, out_dir, ops, fmt, args)
    target = download_target(args.out, _result_names([path], fmt)[0]) if args.out else None
    if target is not None:
        _refuse_overwriting([path], [target])
        writable_folder(target.parent)  # before the job: a place that cannot be written fails first
    with Lab(settings(args)) as lab:
        res = lab.image(path, ops, format=fmt, quality=args.quality).result(timeout=args.timeout)
        info = dict(res.info)
        if target is not None:
            info["downloaded_to"] = str(res.download(target))
    print_json(info)
    return 0


def _output_format(given: str | None, out_file: str | None) -> str:
    """The format to write: ``--format``, else the one ``--out``'s extension names, else png. A ``--format``
    that contradicts ``--out``'s extension is refused rather than writing, say, JPEG bytes into a ``.png``."""
    from labkit.jobs.images import check_output
    fmt = check_output(given) if given is not None else None
    named = format_for_key(out_file) if out_file else None
    if fmt and named and fmt != named:
        ext = EXTENSION_OF_FORMAT[fmt]
        raise LabkitError(f"--out {out_file} names a {named} file but --format is {fmt}: write to "
                          f"{Path(out_file).with_suffix(ext)} (with --format {fmt}), or leave --format out "
                          f"(the extension chooses {named})")
    return fmt or named or "png"


def _check_quality(fmt: str, quality: int | None) -> None:
    """``--quality`` checked against the format; refused where the format would ignore it."""
    from labkit.jobs.images import QUALITY_RANGE, check_output
    if quality is not None and fmt not in QUALITY_RANGE:
        raise LabkitError(f"--quality applies to jpeg and webp only, and the output is {fmt}, which ignores it: "
                          "drop --quality, or add --format jpeg (or webp)")
    check_output(fmt, quality)


def _result_names(files: list[Path], fmt: str) -> list[str]:
    """The file name of each file's result, as the worker names it (``cat.jpg`` as png: ``cat.png``); a
    second ``a.png`` (from ``a.jpg`` beside ``a.png``) gets its file's place in the list: ``a-1.png``."""
    used: set[str] = set()
    names = []
    for i, f in enumerate(files):
        name = PurePosixPath(output_key(f.name, fmt)).name
        name = name if name not in used else f"{Path(name).stem}-{i}{Path(name).suffix}"
        used.add(name)
        names.append(name)
    return names


def _out_folder(out: str, files: list[Path], names: list[str]) -> Path:
    """The ``--out`` folder of a folder of images: made when missing, checked before anything is sent."""
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise LabkitError(f"--out {out_dir} is a file: a folder of images needs a folder to download into")
    writable_folder(out_dir)
    _refuse_overwriting(files, [out_dir / name for name in names])
    return out_dir


def _refuse_overwriting(sources: list[Path], targets: list[Path]) -> None:
    """Refuse (before anything is sent) an ``--out`` whose result would replace one of the source images."""
    for target in targets:
        source = next((s for s in sources if target.exists() and target.samefile(s)), None)
        if source is not None:
            raise LabkitError(f"the result would be written over its own source {source}: give --out another "
                              "file name or folder")


def _submit_folder(lab: Any, files: list[Path], names: list[str], out_dir: Path | None, ops: Any, fmt: str,
                   args: argparse.Namespace) -> int:
    """Every image of a folder as one batch with a progress bar; results into the ``--out`` folder."""
    from labkit.jobs.images import job_payload
    keys = [lab.upload_image(p) for p in files]
    payloads = [job_payload(lab.bucket.name, k, ops, fmt, args.quality) for k in keys]
    jobs = lab.submit_many("image", payloads, progress=True, desc="images")
    failed = 0
    for f, name, job in zip(files, names, jobs, strict=True):
        try:
            res = job.result(timeout=0)
            dest = res.download(out_dir / name) if out_dir else None
        except LabkitError as exc:  # this image's error, or a result that could not be written: say so, go on
            failed += 1
            print(f"{f.name}: error: {exc}", file=sys.stderr)
            continue
        print(f"{f.name} -> s3://{res['bucket']}/{res.key} ({res['width']}x{res['height']})"
              + (f" -> {dest}" if dest else ""))
    return 1 if failed else 0


def cmd_download(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    key = args.key.removeprefix("s3://").partition("/")[2] if args.key.startswith("s3://") else args.key
    with Lab(settings(args)) as lab:
        path = lab.download_image(key, args.out)
    print(path)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from labkit.client import Lab
    from labkit.presenters import purge_report
    with Lab(settings(args)) as lab:
        # No queue: what this caller may purge (a student's own reply queues; all of them, for an instructor)
        table, note = purge_report(lab.purge(args.queue), asked=args.queue is not None)
    if table.rows:
        print(table)
    if note.kind == "info":  # what it left: the instructor's to purge
        print(note.text)
    if note.kind in ("ok", "info"):
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
    sn = ssub.add_parser("numbers", parents=[common], help="a number job: count, min, max, mean, median, sum, std",
                         description="Send a number job and print its result as JSON: count, min, max, mean, "
                         "median, sum and std (population standard deviation). Give one list: numbers, --preset "
                         "or --random N.")
    sn.set_defaults(fn=cmd_submit_numbers)
    sn.add_argument("numbers", nargs="*", help="the numbers (spaces, commas or new lines between them); @FILE reads "
                    "them from a file, - from standard input (labkit submit numbers @big.txt)")
    sn.add_argument("--random", type=int, metavar="N", help=f"a random list of N integers from -1000 to 1000 "
                    f"(1 to {MAX_RANDOM_LENGTH:,})")
    sn.add_argument("--seed", type=int, help="seed for --random (the same seed, the same list)")
    sn.add_argument("--preset", action="store_true", help="the original lab's preset list")
    sn.add_argument("--timeout", type=float, default=120, metavar="S", help="seconds to wait (default 120)")
    si = ssub.add_parser("image", parents=[common], help="an image job: process an image (or a folder of them)",
                         description="Upload an image, process it on a worker, print where the result is.")
    si.set_defaults(fn=cmd_submit_image)
    si.add_argument("path", help="an image file, or a folder: every image in it")
    si.add_argument("--op", action="append", default=[], metavar="OP",
                    help="an operation, repeatable, applied in order: grayscale (or greyscale), bw[:LEVEL] (or "
                    "threshold), autocontrast[:CUTOFF], invert, sepia, resize:WxH (resize:256x or resize:x128 "
                    "keep the aspect ratio), thumbnail:N (or thumbnail:WxH), rotate:DEG, flip, mirror, "
                    "crop:L,T,R,B, blur[:R], sharpen, edges; any parameter by name: OP:key=value,... "
                    "(resize:width=256)")
    si.add_argument("--format", metavar="FORMAT", help="output format: png, jpeg (or jpg), webp, gif, bmp or tiff "
                    "(or tif); default: the one --out's extension names, else png")
    si.add_argument("--quality", type=int, help="JPEG quality 1-95, WebP 1-100 (the other formats have none)")
    si.add_argument("--out", metavar="PATH", help="download the result here: a file, or a folder (one that exists, "
                    "or written with a trailing /: made if missing) to save it in under its own name; for a folder "
                    "of images, a folder. A result never replaces its source, and a --format that contradicts "
                    "--out's extension is refused")
    si.add_argument("--timeout", type=float, default=120, metavar="S", help="seconds to wait (default 120)")

    sp = add("download", cmd_download, "fetch a processed image from the bucket (the key `labkit submit image` "
             "printed)")
    sp.add_argument("key", metavar="KEY", help="images/processed/<job id>/<name> (or s3://<bucket>/<key>)")
    sp.add_argument("--out", metavar="PATH", help="a file, or a folder to save it in under its own name (default: "
                    "the current folder)")

    sp = add("trace", cmd_trace, "print a job's life: sent, each delivery, started, finished, replied, result "
             "(jobs this machine's clients sent)")
    sp.add_argument("job_id", metavar="JOB_ID", help="the job's id (or its first 6 characters or more)")
    sp.add_argument("--json", action="store_true", help="print the journal's record as JSON")

    sp = add("purge", cmd_purge, "empty a queue (name, or requests|responses|inbox|outbox) or all (the four "
             "and your kinds' queues, not dead letters); each queue's outcome is shown (SQS allows one purge per "
             "queue every 60 s), exit 1 if any was not purged; without a queue, what your credentials may purge "
             "(your own reply queues; all for an instructor), saying what it left")
    sp.add_argument("queue", nargs="?", help="queue name, role, or 'all' (default: what your credentials may purge)")

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

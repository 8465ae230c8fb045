"""What every command shares: settings from the arguments, printing, confirmation."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from labkit.config import Settings
from labkit.errors import LabkitError
from labkit.presenters import Table


def settings(args: argparse.Namespace) -> Settings:
    """Settings from ``--state-dir`` and ``--region``, then the environment and the state file."""
    return Settings.load(state_dir=getattr(args, "state_dir", None), region=getattr(args, "region", None))


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def print_changes(**lines: list[str]) -> None:
    """``created   queue requestQueue``: one line per resource, by kind of change."""
    for change, items in lines.items():
        for line in items:
            print(f"{change:<10}{line}")


def print_tables(*tables: Table) -> None:
    print("\n\n".join(str(t) for t in tables))


def say(text: str) -> None:
    """Progress on stderr (stdout stays for results)."""
    print(f"labkit: {text}", file=sys.stderr, flush=True)


def confirm(question: str, answer: str, refuse: str) -> bool:
    """Ask on a terminal; without one, raise ``refuse`` as a user error (never assume yes)."""
    if not sys.stdin.isatty():
        raise LabkitError(refuse)
    return input(question).strip().lower() in answer.split("|")


def preview(text: str, limit: int = 160) -> str:
    """One printable line: control and format characters (terminal escapes, newlines) escaped, long text cut."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + (f"... ({len(text):,} characters)" if len(text) > limit else "")


def int_list(text: str) -> tuple[int, ...]:
    """``"10,20,40"`` -> (10, 20, 40), each at least 1."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values

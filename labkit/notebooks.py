"""Helpers the notebooks share (and the panels of :mod:`labkit.widgets`).

In a notebook::

    lab = notebooks.connect(state_dir, backend)     # a Lab on what 00_setup started
    notebooks.summary("3 jobs done", jobs=3)         # one line `labkit run-notebooks` prints for this notebook

Running the notebooks unattended is :mod:`labkit.unattended`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labkit import costs, endpoints
from labkit.aws.clients import PROCESS_CALLS
from labkit.client import Lab
from labkit.config import Settings
from labkit.errors import ConfigError
from labkit.local import resolve_backend

SUMMARY_MIME = "application/vnd.labkit.summary+json"


def connect(state_dir: str | Path = ".labkit", backend: str = "local") -> Lab:
    """A :class:`Lab` on what ``00_setup`` (or ``labkit up``) started; a clear error when nothing is."""
    settings = Settings.load(state_dir=state_dir)
    backend = resolve_backend(backend, settings)
    if backend == "local":
        if not settings.is_local:
            raise ConfigError(f"no embedded emulator is recorded in {settings.state_file}: run 00_setup.ipynb "
                              "(or `labkit up --local`) first")
        if not endpoints.reachable(settings.endpoint_url or ""):
            raise ConfigError(f"the emulator at {settings.endpoint_url} does not answer: run 00_setup.ipynb "
                              "(or `labkit up --local`) again")
    elif settings.is_local:
        raise ConfigError(f"{settings.state_file} points at the embedded emulator: use backend 'local'")
    return Lab(settings)


def summary(headline: str, **data: Any) -> None:
    """Show a notebook's result in one line; ``labkit run-notebooks`` prints it in its summary.

    ``data`` must be JSON-ready (numbers, strings, lists); ``jobs`` counts the jobs this notebook ran. The
    AWS requests this notebook's kernel made are added (``api_calls`` by operation, ``sqs_billed``: the SQS
    requests billed where payloads over 64 KiB made them more, ``cost_usd`` at the list prices of
    ``prices_as_of``) and shown as a table above the line.
    """
    from labkit.presenters import calls_table
    calls, billed = PROCESS_CALLS.snapshot(), PROCESS_CALLS.billed()
    record = {"headline": headline, **data, "api_calls": calls, "sqs_billed": billed,
              "cost_usd": costs.cost(calls, billed)["total_usd"], "prices_as_of": costs.AS_OF}
    json.dumps(record)  # fail here, not in labkit.unattended, if something is not JSON-ready
    from IPython.display import display
    display(calls_table(calls, "AWS requests this notebook made", billed))
    display({SUMMARY_MIME: record, "text/plain": f"summary: {headline}"}, raw=True)


def number_or_text(text: str) -> int | float | str:
    """``text`` as an int, else a float, else the string itself (for typed parameter values)."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text

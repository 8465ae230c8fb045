"""Your own job kinds: two examples a worker loads when this file is named in LABKIT_JOB_MODULES.

    LABKIT_JOB_MODULES=notebooks/kinds/wordcount.py labkit up     # local workers know these kinds
    labkit deploy                                                  # ... and so do EC2 workers

    lab.submit("wordcount", {"text": "to be or not to be"}).result()
    # {'words': 6, 'distinct': 4, 'top': [['to', 2], ['be', 2], ['or', 1], ['not', 1]]}

A handler takes the job's payload (a dict), returns a JSON-ready dict, and raises InvalidInput for input
it cannot use: the sender gets that message back as an ``invalid_input`` error.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from labkit.errors import InvalidInput
from labkit.kinds import job_kind

MAX_TEXT = 200_000  # characters: bigger texts belong in a file in the bucket


@job_kind("wordcount")
def wordcount(payload: dict[str, Any]) -> dict[str, Any]:
    """Words in a text: how many, how many distinct, the ten most frequent."""
    text = payload.get("text")
    if not isinstance(text, str):
        raise InvalidInput(f"'text' must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"'text' has {len(text):,} characters, over the limit of {MAX_TEXT:,}")
    words = re.findall(r"[\w']+", text.lower())
    counts = Counter(words)
    return {"words": len(words), "distinct": len(counts), "top": [[w, n] for w, n in counts.most_common(10)]}


@job_kind("histogram")
def histogram(payload: dict[str, Any]) -> dict[str, Any]:
    """Counts of ``numbers`` in ``bins`` equal-width bins (default 10) between their min and max."""
    values = payload.get("numbers")
    bins = payload.get("bins", 10)
    if not isinstance(values, list) or not values:
        raise InvalidInput("'numbers' must be a non-empty list")
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 1000:
        raise InvalidInput(f"'bins' must be an integer from 1 to 1000, got {bins!r}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidInput(f"item {i} is not a finite number: {v!r}")
    low, high = min(values), max(values)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - low) / width), bins - 1)] += 1
    return {"edges": [low + i * width for i in range(bins + 1)], "counts": counts}

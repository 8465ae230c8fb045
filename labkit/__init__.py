"""labkit: send number and image jobs through SQS and S3 to workers, on AWS or an embedded emulator.

The names below load on first use, so that ``import labkit.jobs.numbers`` (a worker's job code, a test)
does not load boto3 and the client.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "Lab": "labkit.client", "Job": "labkit.future", "ImageResult": "labkit.future", "Settings": "labkit.config",
    "LabkitError": "labkit.errors", "RemoteJobError": "labkit.errors", "JobTimeout": "labkit.errors",
    "job_kind": "labkit.kinds",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'labkit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

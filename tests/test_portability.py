"""labkit on a second, independent SQS/S3 emulator (fauxqs): what works here does not lean on moto."""

from __future__ import annotations

from pathlib import Path

from labkit import provision
from labkit.aws.clients import Clients
from labkit.client import Lab
from labkit.config import Settings


def test_number_job_end_to_end_on_fauxqs(fauxqs: str, tmp_path: Path, start_worker) -> None:
    # Given labkit's queues and bucket provisioned on fauxqs
    s = Settings.load(state_dir=tmp_path / "state", endpoint_url=fauxqs, env={}, bucket="labkit-portable")
    report = provision.ensure(Clients(s))
    assert "queue requestQueue" in report.created
    # When a real worker serves them and a client sends a number job
    start_worker(s=s)
    with Lab(s) as lab:
        result = lab.numbers([1, 5, 22]).result(timeout=60)
    # Then the result is the same as on moto
    assert (result["count"], result["min"], result["max"], result["median"]) == (3, 1, 22, 5)

"""Panels that start and stop labkit: :class:`SetupPanel` and :class:`TeardownPanel`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as W

from labkit import local, provision, teardown
from labkit.client import Lab
from labkit.config import Settings
from labkit.errors import ConfigError
from labkit.local import resolve_backend
from labkit.presenters import Note, Table, changes_table, doctor_note, doctor_table, status_tables
from labkit.widgets.base import TOGGLES, IntField, Panel


class SetupPanel(Panel):
    """Choose the backend, start the emulator and local workers if local, provision, show status.

    On real AWS, ``plan()`` warns what will be created (and that it costs money until torn down)
    before ``start()`` creates anything.
    """

    def __init__(self, state_dir: str | Path = ".labkit", backend: str = "local", workers: int = 1,
                 concurrency: int = 4) -> None:
        super().__init__()
        self.state_dir = Path(state_dir)
        self.backend = W.ToggleButtons(options=[("embedded emulator", "local"), ("AWS", "aws")],
                                       value=resolve_backend(backend, self.settings()), description="backend",
                                       style=TOGGLES)
        self.workers = IntField(workers, 0, 8, "local workers",
                                tooltip="worker processes to start on this machine (0 to 8)")
        self.concurrency = concurrency
        self.start_button = W.Button(description="Start", button_style="primary", icon="play",
                                     tooltip="start the emulator (local), provision queues and bucket, start workers")
        self.status_button = W.Button(description="Refresh status", icon="refresh")
        self._button(self.start_button, self.start, "starting labkit: emulator, queues, bucket, workers")
        self._button(self.status_button, self.status, "reading the queues and the bucket")
        self.backend.observe(lambda _: self._label(), "value")
        self._label()
        self.box = W.VBox([self.backend, self.workers, W.HBox([self.start_button, self.status_button]), self.busy,
                           self.out])

    def _label(self) -> None:
        aws = self.backend.value == "aws"
        self.start_button.description = "Create on AWS" if aws else "Start"
        self.start_button.button_style = "warning" if aws else "primary"

    def settings(self) -> Settings:
        return Settings.load(state_dir=self.state_dir)

    @property
    def is_aws(self) -> bool:
        return self.backend.value == "aws"

    def plan(self) -> dict[str, Any]:
        """What ``start()`` will use and create; on AWS, a warning that it costs money until torn down."""
        s = self.settings()
        names = list(provision.queue_attributes(s))
        if self.is_aws:
            from labkit.aws.clients import Clients
            self._check_aws(s)
            bucket = Clients(s).bucket_name()
            where = f"AWS region {s.region}" + (f" (endpoint {s.endpoint_url})" if s.endpoint_url else "")
        else:
            bucket = s.bucket or "labkit-<account>-<region> (in the emulator)"
            where = "the embedded emulator on 127.0.0.1 (nothing leaves this machine, nothing costs money)"
        plan = {"backend": self.backend.value, "where": where, "queues": names, "bucket": bucket,
                "workers": self.workers.value}
        rows = [["where", where], ["queues", ", ".join(names)], ["bucket", bucket],
                ["local workers", self.workers.value]]
        self.show(Table(rows, None, "Plan"))
        if self.is_aws:
            self.show(Note(
                f"this creates real resources in your AWS account ({s.region}): {len(names)} SQS queues "
                f"({', '.join(names)}) and the S3 bucket {bucket}. They cost money while they exist and hold "
                "data (SQS requests, S3 storage and requests) until you tear them down with "
                "99_teardown.ipynb or `labkit teardown`.", "warning"))
        return plan

    def _check_aws(self, s: Settings) -> None:
        if s.is_local:
            raise ConfigError(f"{s.state_file} points at the embedded emulator ({s.endpoint_url}): stop it "
                              "first (99_teardown.ipynb or `labkit down`), or use backend 'local'")

    def start(self) -> dict[str, Any]:
        """Start (or find running) the emulator and workers, provision; returns what changed."""
        s = self.settings()
        if self.is_aws:
            self._check_aws(s)
        out = local.up(s, local=not self.is_aws, workers=self.workers.checked(), concurrency=self.concurrency,
                       progress=lambda text: self.show(Note(text)))
        report, state = out["report"], out["state"]
        already = [f"{len(report.unchanged)} resources"] if report.unchanged else []
        self.show(changes_table("Provisioning", created=report.created, updated=report.updated,
                                **{"already there": already}))
        where = state.get("endpoint_url") or f"AWS {state['region']}"
        self.show(Note(f"labkit is up on {where}: bucket {state['bucket']}, "
                          f"{len(state['workers'])} local worker(s)", "ok"))
        return {"backend": "local" if state.get("local") else "aws", "endpoint": state.get("endpoint_url"),
                "bucket": state["bucket"], "created": list(report.created), "workers": len(state["workers"])}

    def doctor(self, **plan: Any) -> list[Any]:
        """Show ``labkit doctor``'s table (credentials, permissions, quota, bucket, versions: :mod:`labkit.doctor`) and
        its one line; ``plan``: :class:`labkit.doctor.Plan`'s fields (``workers``, ``instance_type``...). Returns the
        rows."""
        from labkit import doctor
        from labkit.aws.clients import Clients
        checks = doctor.run(Clients(self.settings()), doctor.Plan(**plan))
        self.show(doctor_table(checks), doctor_note(checks))
        return checks

    def class_view(self) -> dict[str, Any]:
        """Show the instructor's view of the class, as ``labkit status --class`` prints it (:mod:`labkit.classview`):
        every student's reply queue with its last activity, the lanes, the fleet, the day's cost so far. Returns the
        data. One pass: about two SQS requests per student."""
        from labkit.aws.clients import Clients
        from labkit.classview import class_view
        from labkit.presenters import class_tables
        view = class_view(Clients(self.settings()))
        self.show(*class_tables(view))
        return view

    def status(self) -> dict[str, Any]:
        """Show queues (visible / in flight / dead-letter), bucket and workers; returns ``Lab.status()``."""
        with Lab(self.settings()) as lab:
            st = lab.status()
        st["workers_running"] = len(local.running(st.get("workers", [])))
        self.show(*status_tables(st))
        return st


class TeardownPanel(Panel):
    """Delete every resource labkit made (the EC2 fleet too), stop local workers and the emulator, and
    show that nothing is left: :func:`labkit.teardown.teardown`, as ``labkit teardown`` does. On AWS, the
    notebook asks for a click before anything is deleted."""

    def __init__(self, state_dir: str | Path = ".labkit", backend: str = "local", keep_bucket: bool = False,
                 delete_bucket: bool = False) -> None:
        super().__init__()
        self.state_dir = Path(state_dir)
        self.backend = resolve_backend(backend, self.settings())
        self.keep_bucket = W.Checkbox(value=keep_bucket, description="keep the bucket and its objects", indent=False)
        self.delete_bucket = W.Checkbox(value=delete_bucket, indent=False, description="delete the emptied bucket "
                                        "too (S3 may then hold its name for hours)")
        self.teardown_button = W.Button(description="Delete everything", button_style="danger", icon="trash")
        self._button(self.teardown_button, self.teardown, "deleting queues and bucket, stopping local processes")
        self.box = W.VBox([self.keep_bucket, self.delete_bucket, self.teardown_button, self.busy, self.out])

    def settings(self) -> Settings:
        return Settings.load(state_dir=self.state_dir)

    @property
    def is_aws(self) -> bool:
        return self.backend == "aws"

    def _checked(self) -> Settings:
        s = self.settings()
        if self.is_aws and s.is_local:
            raise ConfigError(f"{s.state_file} points at the embedded emulator ({s.endpoint_url}): use backend "
                              "'local' to tear it down")
        return s

    def plan(self) -> list[str]:
        """Show and return the resources that exist now (what ``teardown()`` deletes)."""
        s = self.settings()
        left = self.leftovers()
        where = f"AWS {s.region}" if self.is_aws else (s.endpoint_url or "the embedded emulator (not running)")
        self.show(Table([[x] for x in left] or [["(nothing)"]], ["resource"], f"labkit resources on {where}"))
        return left

    def leftovers(self) -> list[str]:
        """labkit's fleet, queues (dead-letter and reply queues too) and bucket that exist."""
        return teardown.leftovers(self._checked())

    def teardown(self) -> dict[str, Any]:
        """Delete everything and stop local processes; returns what was deleted and what is left (``left``
        and ``processes_left`` are empty when all went)."""
        report = teardown.teardown(self._checked(), keep_bucket=self.keep_bucket.value,
                                   delete_bucket=self.delete_bucket.value, forget_wait=90 if self.is_aws else 0)
        self.show(changes_table("Teardown", deleted=report.deleted, note=report.notes,
                                kept=[f"{x} (in use: a client still runs)" for x in report.kept]))
        running = ", ".join(map(str, report.processes_left))
        rest = [x for x in report.left if x not in (report.fleet_left or [])]
        rows = [["EC2 worker fleet", report.fleet_line()],
                ["labkit queues and bucket", ", ".join(rest) if rest else "none left"
                 + (f" (bucket {report.bucket_kept} kept, empty: it costs nothing)" if report.bucket_kept else "")],
                ["local workers", f"{report.workers_stopped} stopped" + (f"; still running: {running}"
                                                                          if running else "")],
                ["emulator", "stopped" if report.emulator_stopped else "was not running"]]
        self.show(Table(rows, None, "What is left after teardown"))
        gone = (f"no fleet, no queue, no labkit process; the bucket {report.bucket_kept} stays, empty (it costs "
                "nothing; delete_bucket=True deletes it)" if report.bucket_kept else
                "no fleet, no queue, no bucket, no labkit process")
        self.show(Note(f"nothing is left: {gone}" if report.ok else "something is still there: see the table above",
                       "ok" if report.ok else "warning"))
        return {"deleted": report.deleted, "left": report.left, "fleet_left": report.fleet_left,
                "processes_left": report.processes_left, "bucket_kept": report.bucket_kept,
                "workers_stopped": report.workers_stopped, "emulator_stopped": report.emulator_stopped}

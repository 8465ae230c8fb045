"""Dead letters: look at the requests SQS gave up on, and send them back.

A request queue ``Q`` has a dead-letter queue ``Q-dlq``: SQS moves a request there after
``max_receive_count`` receives without a delete (its reply could not be sent, say).

    letters = DeadLetters(clients, "requestQueue")
    letters.show(limit=10)     # read without consuming: each is received, then released (visibility 0)
    letters.redrive()          # move back to requestQueue; deleted from the DLQ only once re-sent

Redrive is at least once, like everything else: a crash between the send and the delete leaves a copy
in both queues, and the client drops the duplicate reply by id.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from labkit import kinds
from labkit.aws.clients import Clients
from labkit.aws.queues import MAX_BATCH, NON_EXISTENT, Message, Queue
from labkit.config import DLQ_SUFFIX
from labkit.errors import AwsError, ConfigError
from labkit.protocol import json_loads, peek
from labkit.timeline import event

# Hold received dead letters this long while showing or moving them (released or deleted before).
HOLD_SECONDS = 60


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, as read (not consumed) from a dead-letter queue."""

    message_id: str
    body: str
    receives: int  # receives so far, the source queue's included (and this look)
    sent_at: float | None
    job_id: str | None = None
    kind: str | None = None
    reply_to: str | None = None

    @classmethod
    def from_message(cls, m: Message) -> DeadLetter:
        fields = peek(m.body) or {}
        return cls(m.message_id, m.body, m.receive_count, m.sent_at, fields.get("id"), fields.get("kind"),
                   fields.get("reply_to"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RedriveReport:
    """What :meth:`DeadLetters.redrive` did."""

    source: str
    moved: int = 0
    failed: list[str] = field(default_factory=list)  # one line per message that stayed in the DLQ
    not_deleted: int = 0  # re-sent but still in the DLQ too (it will be redriven again: a duplicate)


class DeadLetters:
    """The dead-letter queue of one request queue (name, ``-dlq`` name or role)."""

    def __init__(self, clients: Clients, queue: str) -> None:
        settings = clients.settings
        name = kinds.source_queue(settings, queue)
        self.source = Queue.by_name(clients.sqs, name)
        try:
            self.dlq = Queue.by_name(clients.sqs, name + DLQ_SUFFIX)
        except AwsError as exc:
            if exc.code != NON_EXISTENT[0]:
                raise
            names = ", ".join(kinds.request_queues(settings).values())
            raise ConfigError(f"queue {name!r} has no dead-letter queue: request queues have one ({names})") from exc

    def count(self) -> int:
        """Dead letters waiting (approximate, as SQS counts)."""
        return self.dlq.depth()["visible"]

    def show(self, limit: int = 10) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, left in the queue: each is received, then released at once."""
        held: dict[str, Message] = {}
        try:
            while len(held) < limit:
                batch = self.dlq.receive(min(MAX_BATCH, limit - len(held)), wait=1, visibility=HOLD_SECONDS,
                                         sent_times=True)
                if not batch:
                    break
                for m in batch:
                    held.setdefault(m.message_id, m)
        finally:
            if held:
                self.dlq.change_visibility([m.receipt for m in held.values()], 0)
        return [DeadLetter.from_message(m) for m in held.values()]

    def redrive(self, limit: int | None = None) -> RedriveReport:
        """Move dead letters back to the source queue (all of those present at the start, or ``limit``).

        Each is sent to the source first and deleted from the DLQ only once the send succeeded; one
        whose send fails stays in the DLQ (released at once) and is named in the report.
        """
        report = RedriveReport(self.source.name)
        todo = self.count() if limit is None else limit
        while report.moved + len(report.failed) < todo:
            batch = self.dlq.receive(min(MAX_BATCH, todo - report.moved - len(report.failed)), wait=1,
                                     visibility=HOLD_SECONDS)
            if not batch:
                break
            self._move(batch, report)
        return report

    def _move(self, batch: list[Message], report: RedriveReport) -> None:
        try:
            failures = self.source.send_batch([with_history(m) for m in batch])
        except Exception:
            self.dlq.change_visibility([m.receipt for m in batch], 0)
            raise
        refused = {f.index: f for f in failures}
        if refused:
            self.dlq.change_visibility([batch[i].receipt for i in refused], 0)
            report.failed += [f"{batch[i].message_id}: {f.code} {f.message}" for i, f in refused.items()]
        sent = [m for i, m in enumerate(batch) if i not in refused]
        if sent:
            report.not_deleted += len(self.dlq.delete_batch([m.receipt for m in sent]))
            report.moved += len(sent)


def with_history(m: Message) -> str:
    """The body to send back: a v1 request gets ``history`` events (its first delivery, as SQS recorded it,
    and this redrive), so that its answer's timeline tells the whole story. Other bodies go back as they
    came (the original lab's plain text, a malformed body)."""
    try:
        data = json_loads(m.body)
    except (ValueError, RecursionError):
        return m.body
    if not isinstance(data, dict) or data.get("v") != 1:
        return m.body
    history = data.get("history") if isinstance(data.get("history"), list) else []
    if m.first_received_at:
        history.append(event("received", m.first_received_at, receive_count=1, inferred=True))
    history.append(event("redriven", time.time(), receive_count=m.receive_count))
    try:
        return json.dumps({**data, "history": history}, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # a literal JSON cannot write back (an integer of 4,000 digits): as it came
        return m.body

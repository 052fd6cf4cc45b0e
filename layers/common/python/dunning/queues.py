"""SQS adapters: channel queues for actions, the shard queue for evaluation tasks.

The adapter owns SQS's limits: batches of ten, per-entry failures retried,
what SQS did not accept reported back (it stays in the outbox).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter

from dunning.model import Action, Channel

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

ACTION = TypeAdapter(Action)
SQS_BATCH = 10
ATTEMPTS = 3


class SqsActionQueue:
    def __init__(self, client: SQSClient, channel_urls: Mapping[Channel, str], shard_url: str):
        self._sqs: Any = client
        self._urls = dict(channel_urls)
        self._shard_url = shard_url
        self.send_calls = 0

    def _send(
        self,
        url: str,
        bodies: Sequence[tuple[str, str]],
        attributes: Mapping[str, Any] | None = None,
    ) -> set[str]:
        """Send (id, body) pairs in batches of ten; returns the ids SQS accepted."""
        accepted: set[str] = set()
        extra = {"MessageAttributes": dict(attributes)} if attributes else {}
        for i in range(0, len(bodies), SQS_BATCH):
            pending = dict(bodies[i : i + SQS_BATCH])
            for _attempt in range(ATTEMPTS):
                entries = [
                    {"Id": str(n), "MessageBody": body, **extra}
                    for n, body in enumerate(pending.values())
                ]
                ids = list(pending)
                self.send_calls += 1
                out = self._sqs.send_message_batch(QueueUrl=url, Entries=entries)
                for ok in out.get("Successful", []):
                    accepted.add(ids[int(ok["Id"])])
                failed = {ids[int(f["Id"])] for f in out.get("Failed", [])}
                pending = {k: v for k, v in pending.items() if k in failed}
                if not pending:
                    break
        return accepted

    def send_actions(
        self, actions: Sequence[Action], queued_at: datetime | None = None
    ) -> list[Action]:
        """Send actions to their channel queues. `queued_at` (the run's instant)
        travels as the `queued_at` message attribute: the delivery side records it
        with the outcome, so the outbox record keeps when it was queued."""
        attributes = (
            None
            if queued_at is None
            else {"queued_at": {"DataType": "String", "StringValue": queued_at.isoformat()}}
        )
        by_channel: dict[Channel, list[Action]] = defaultdict(list)
        for action in actions:
            by_channel[action.channel].append(action)
        accepted: list[Action] = []
        for channel, group in by_channel.items():
            ok = self._send(
                self._urls[channel],
                [(a.action_id, ACTION.dump_json(a).decode()) for a in group],
                attributes,
            )
            accepted += [a for a in group if a.action_id in ok]
        return accepted

    def send_tasks(self, tasks: Sequence[BaseModel]) -> int:
        bodies = [(str(n), t.model_dump_json()) for n, t in enumerate(tasks)]
        accepted = self._send(self._shard_url, bodies)
        if len(accepted) != len(bodies):
            raise RuntimeError(f"SQS accepted {len(accepted)} of {len(bodies)} shard tasks")
        return len(accepted)

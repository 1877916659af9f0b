"""What ``status``, ``list``, ``logs`` and ``cancel`` read: the table, and this machine's queued records."""

from __future__ import annotations

from typing import Any

from dispatcher.adapters.store import Store
from dispatcher.core.errors import SweepqError
from dispatcher.settings import Settings
from producer import queued
from producer.aws import Aws, queue_depth, region_from_queue_url


class Reader:
    """The table, and this machine's records of sweeps it sent that the table may not have yet."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.aws = Aws(region_hint=region_from_queue_url(settings.queue_url))
        self.store = Store(settings.table, self.aws.client("dynamodb"))

    def queued(self, sweep_id: str | None = None) -> list[dict[str, Any]]:
        """Records of sweeps still missing from the table (the others are forgotten on the way)."""
        entries = [queued.get(sweep_id, table=self.settings.table, region=self.aws.region)] if sweep_id else \
            queued.pending(table=self.settings.table, region=self.aws.region)
        entries = [e for e in entries if e is not None]
        if not entries:
            return []
        stored = {s["sweep_id"] for s in self.store.batch_get_sweeps([e["sweep_id"] for e in entries])}
        for sid in stored:
            queued.forget(sid)
        return [e for e in entries if e["sweep_id"] not in stored]

    def queued_doc(self, entry: dict[str, Any]) -> dict[str, Any]:
        depth = None
        if entry.get("queue_url"):
            try:
                depth = queue_depth(self.aws.client("sqs"), str(entry["queue_url"]))
            except SweepqError:
                depth = None
        return queued.status_doc(entry, depth)

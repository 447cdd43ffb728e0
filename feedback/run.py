"""The retraining run record: one entry of the stream `keys.retrain_runs()` per run of the job,
whatever its outcome, for the people who operate the loop (`chatbot status`, the console)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis
from redis.typing import EncodableT, FieldT

from feedback import keys

Status = Literal["skipped", "promoted", "rejected", "failed"]
KEEP_RUNS = 1000  # entries kept (approximately): a year of hourly runs is 9000; the latest matter


@dataclass
class RetrainRun:
    status: Status
    reason: str
    new_ratings: int = 0
    dataset_version: str | None = None
    version_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the gate's numbers
    started: float = 0.0
    seconds: float = 0.0

    def to_fields(self) -> dict[FieldT, EncodableT]:
        return {
            "status": self.status, "reason": self.reason, "new_ratings": str(self.new_ratings),
            "dataset_version": self.dataset_version or "", "version_id": self.version_id or "",
            "details": json.dumps(self.details), "started": f"{self.started:.3f}", "seconds": f"{self.seconds:.1f}",
        }  # fmt: skip

    @classmethod
    def from_fields(cls, data: Mapping[str, str]) -> RetrainRun:
        return cls(
            cast("Status", data["status"]), data.get("reason", ""), int(data.get("new_ratings") or 0),
            data.get("dataset_version") or None, data.get("version_id") or None, json.loads(data.get("details") or "{}"),
            float(data.get("started") or 0), float(data.get("seconds") or 0),
        )  # fmt: skip


def record(r: redis.Redis, run: RetrainRun) -> None:
    r.xadd(keys.retrain_runs(), run.to_fields(), maxlen=KEEP_RUNS, approximate=True)


def recent(r: redis.Redis, count: int = 20) -> list[RetrainRun]:
    """The latest runs, newest first (`r` decodes responses)."""
    entries = cast("list[tuple[str, dict[str, str]]]", r.xrevrange(keys.retrain_runs(), count=count))
    return [RetrainRun.from_fields(fields) for _, fields in entries]

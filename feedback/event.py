"""The rating event: one entry of the stream `keys.events()`, which tells the retraining job
which answers' ratings changed since its watermark.

Written by the rating script (feedback/lua/rate.lua: rate, unrate) and by thread deletion
(feedback/thread.py: delete); read by training/collect.py. The fields are defined here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from redis.typing import EncodableT, FieldT

Action = Literal["rate", "unrate", "delete"]
ACTIONS: tuple[Action, ...] = ("rate", "unrate", "delete")


@dataclass(frozen=True, slots=True)
class RatingEvent:
    action: Action
    exchange: str  # the answer whose rating changed
    thread: str
    user: str  # who rated it (thread deletion: the thread's owner)
    ts: float  # when it happened (a spooled rating: when the user clicked)
    value: int | None = None  # 1 up, 0 down; only for "rate"

    def to_fields(self) -> dict[FieldT, EncodableT]:
        """The stream entry's fields (what XADD takes)."""
        fields: dict[FieldT, EncodableT] = {"action": self.action, "exchange": self.exchange, "thread": self.thread, "user": self.user, "ts": f"{self.ts:.6f}"}
        if self.value is not None:
            fields["value"] = str(self.value)
        return fields

    @classmethod
    def from_fields(cls, data: Mapping[str, str]) -> RatingEvent:
        """ValueError for an entry that is not an event (a missing field or an unknown action)."""
        try:
            action, value = data["action"], data.get("value")
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r}")
            return cls(action, data["exchange"], data["thread"], data["user"], float(data["ts"]), None if value is None else int(value))
        except KeyError as exc:
            raise ValueError(f"rating event without {exc}") from None

"""A local append-only spool for writes made while Redis is down.

Each write is one JSON line, fsync'd before the user is told it was kept. Replay applies the
lines in order and records its progress in a side file; every write carries an op id that the
Redis scripts remember, so a line applied twice (a crash between applying and recording
progress) changes nothing.

A line that can never be applied (unreadable JSON, or refused by Redis for a reason other than
an outage: WRONGTYPE, OOM, a script error) is moved to the dead-letter file with its error, so
one bad write cannot hold back every write behind it. A rating the rating script refuses once
Redis can check it (someone else's answer, an unknown one: nothing an operator can fix) goes to
the refused file instead, for the record, and is never retried. `chatbot spool` shows all three
files and puts dead letters back in the queue once their cause is fixed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def _parse(line: str) -> dict[str, Any]:
    """A spooled op from its line; ValueError for a line that is not one (e.g. cut short by a crash)."""
    op = json.loads(line)
    if not isinstance(op, dict) or not isinstance(op.get("op"), str):
        raise ValueError("not a spooled op")
    return op


def _append_line(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = path.with_suffix(".offset")
        self.dead_path = path.with_suffix(".dead.jsonl")
        self.refused_path = path.with_suffix(".refused.jsonl")
        self._lock = threading.Lock()
        # Cached so the hot path (every write while Redis is up) never touches the disk.
        self._has_pending = path.exists()

    def append(self, op: dict[str, Any]) -> None:
        with self._lock:
            _append_line(self.path, op)
            self._has_pending = True

    def dead_letter(self, item: dict[str, Any] | str, error: str) -> None:
        """Keep a write that cannot be applied (an op, or the raw line that did not parse)."""
        record = {"failed_at": time.time(), "error": error, **({"op": item} if isinstance(item, dict) else {"line": item})}
        with self._lock:
            _append_line(self.dead_path, record)

    def dead(self) -> list[dict[str, Any]]:
        """Dead letters, oldest first: {"failed_at", "error", "op" or "line"}."""
        return _records(self.dead_path)

    def refuse(self, op: dict[str, Any], reason: str) -> None:
        """Keep a write that was refused as the user's mistake once Redis could check it: shown by
        `chatbot spool`, never requeued."""
        with self._lock:
            _append_line(self.refused_path, {"refused_at": time.time(), "reason": reason, "op": op})

    def refused(self) -> list[dict[str, Any]]:
        """Refused writes, oldest first: {"refused_at", "reason", "op"}."""
        return _records(self.refused_path)

    def requeue_dead(self) -> int:
        """Put every dead-lettered op back at the end of the queue; returns how many.

        Op ids make a retry safe: an op that did reach Redis is not applied twice.
        """
        with self._lock:
            dead = self.dead()
            ops = [d["op"] for d in dead if "op" in d]
            for op in ops:
                _append_line(self.path, op)
            keep = [d for d in dead if "op" not in d]  # unreadable lines cannot be retried
            if keep:
                tmp = self.dead_path.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in keep), encoding="utf-8")
                os.replace(tmp, self.dead_path)
            else:
                self.dead_path.unlink(missing_ok=True)
            if ops:
                self._has_pending = True
        return len(ops)

    def _offset(self) -> int:
        return int(self.offset_path.read_text() or 0) if self.offset_path.exists() else 0

    def _set_offset(self, n: int) -> None:
        tmp = self.offset_path.with_suffix(".tmp")
        tmp.write_text(str(n))
        os.replace(tmp, self.offset_path)

    def _lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with self._lock:
            return self.path.read_text(encoding="utf-8", errors="replace").splitlines()

    def pending(self) -> list[dict[str, Any]]:
        """Ops not yet replayed, oldest first (unreadable lines left out: replay dead-letters them)."""
        ops = []
        for line in self._lines()[self._offset() :]:
            try:
                ops.append(_parse(line))
            except ValueError:
                continue
        return ops

    def __len__(self) -> int:
        return len(self.pending())

    def has_pending(self) -> bool:
        return self._has_pending

    def refresh(self) -> bool:
        """Look at the disk again (`chatbot spool --requeue` may have queued writes from another process)."""
        with self._lock:
            self._has_pending = self._has_pending or self.path.exists()
            return self._has_pending

    async def replay(self, apply: Callable[[dict[str, Any]], Awaitable[None]]) -> int:
        """Apply pending lines in order; stop at the first exception `apply` raises (retried next time).

        `apply` decides what a failure means: it raises to stop (an outage) or dead-letters the op
        and returns. Returns how many lines were consumed. The spool is emptied once all are.
        """
        done = 0
        start = self._offset()
        for i, line in enumerate(self._lines()[start:]):
            if line.strip():
                try:
                    op = _parse(line)
                except ValueError as exc:
                    self.dead_letter(line, f"unreadable spool line: {exc}")
                else:
                    await apply(op)
            self._set_offset(start + i + 1)
            done += 1
        with self._lock:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines() if self.path.exists() else []
            if self._offset() >= len(lines):
                self.path.unlink(missing_ok=True)
                self.offset_path.unlink(missing_ok=True)
                self._has_pending = False
        return done

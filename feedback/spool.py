"""A local append-only spool for writes made while Redis is down.

Each write is one JSON line, fsync'd before the user is told it was kept. Replay applies the
lines in order and records its progress in a side file; every write carries an op id that the
Redis scripts remember, so a line applied twice (a crash between applying and recording
progress) changes nothing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = path.with_suffix(".offset")
        self._lock = threading.Lock()
        # Cached so the hot path (every write while Redis is up) never touches the disk.
        self._has_pending = path.exists()

    def append(self, op: dict[str, Any]) -> None:
        line = json.dumps(op, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._has_pending = True

    def _offset(self) -> int:
        return int(self.offset_path.read_text() or 0) if self.offset_path.exists() else 0

    def _set_offset(self, n: int) -> None:
        tmp = self.offset_path.with_suffix(".tmp")
        tmp.write_text(str(n))
        os.replace(tmp, self.offset_path)

    def pending(self) -> list[dict[str, Any]]:
        """Ops not yet replayed, oldest first."""
        if not self.path.exists():
            return []
        with self._lock:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines[self._offset():] if line.strip()]

    def __len__(self) -> int:
        return len(self.pending())

    def has_pending(self) -> bool:
        return self._has_pending

    async def replay(self, apply: Callable[[dict[str, Any]], Awaitable[None]]) -> int:
        """Apply pending ops in order; stop at the first failure (it is retried next time).

        Returns how many were applied. The spool is emptied once everything is applied.
        """
        done = 0
        start = self._offset()
        for i, op in enumerate(self.pending()):
            await apply(op)
            self._set_offset(start + i + 1)
            done += 1
        with self._lock:
            lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
            if self._offset() >= len(lines):
                self.path.unlink(missing_ok=True)
                self.offset_path.unlink(missing_ok=True)
                self._has_pending = False
        return done

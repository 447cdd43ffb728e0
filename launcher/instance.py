"""One `chatbot up` per data directory: an OS lock on DATA_DIR/chatbot.lock, held while it runs.

A second instance on the same DATA_DIR would start a second Redis on the same AOF file and unix
socket (and its stop would remove the first one's socket). `flock` is tied to the open file: the
kernel releases it when the process ends, however it ends (`kill -9` included), so a lock file
left behind never blocks a new start. The file names the holder (pid, URL) for the refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from launcher.process import StartupError


class AlreadyRunning(StartupError):
    """Another live process holds the data directory's lock."""


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, url: str) -> None:
        """Take the lock and write who holds it; AlreadyRunning (naming the holder) when a live
        process has it. The descriptor is close-on-exec: the services started later don't keep
        it, so the lock ends with this process."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").split()
            os.close(fd)
            pid, where = [*holder, "?", "?"][:2]
            raise AlreadyRunning(
                f"Loop is already running from this directory ({self.path.parent}) (pid {pid}, {where}): "
                "use that one, or stop it first (Ctrl-C where it runs); set DATA_DIR to run another instance."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {url}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock up before this process ends (`chatbot up` keeps it to its end)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # the lock file then names no one
            os.close(self._fd)
            self._fd = None

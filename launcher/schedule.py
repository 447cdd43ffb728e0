"""The retraining schedule of `chatbot up`: a `chatbot retrain` subprocess every interval.

A subprocess, so a training crash or its memory never touches the web UI; the job itself skips
when too few ratings came in and holds a Redis lock, so overlapping triggers make one run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


class RetrainSchedule:
    def __init__(self, interval_s: int, min_new_ratings: int, env: dict[str, str], log_path: Path, options: Sequence[str] = ()) -> None:
        self.interval_s = interval_s
        self.argv = [sys.executable, "-m", "launcher.cli", "retrain", *options, "--min-new-ratings", str(min_new_ratings)]
        self.env = env
        self.log_path = log_path
        self.next_at = time.monotonic() + interval_s
        self.proc: subprocess.Popen[bytes] | None = None

    def tick(self) -> bool:
        """Start a run when one is due and none is running; True when one was started."""
        if self.interval_s <= 0 or time.monotonic() < self.next_at:
            return False
        self.next_at = time.monotonic() + self.interval_s
        if self.proc is not None and self.proc.poll() is None:
            return False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return True

    def stop(self, timeout_s: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

"""The retraining schedule of `chatbot up`: a `chatbot retrain` subprocess every interval, and
a `chatbot retrain --now` as soon as the console asks for one (feedback.progress.request_run).

A subprocess, so a training crash or its memory never touches the web UI; the job itself skips
when too few ratings came in and holds a Redis lock, so overlapping triggers make one run.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

REQUEST_RETRY_S = 30.0


class RetrainSchedule:
    def __init__(
        self,
        interval_s: int,
        min_new_ratings: int,
        env: dict[str, str],
        log_path: Path,
        options: Sequence[str] = (),
        redis_url: str | None = None,
        cluster: bool = False,
    ) -> None:
        """redis_url: where run requests are looked for (default: the env's REDIS_URL; none: never)."""
        self.interval_s = interval_s
        self.argv = [sys.executable, "-m", "launcher.cli", "retrain", *options, "--min-new-ratings", str(min_new_ratings)]
        self.now_argv = [sys.executable, "-m", "launcher.cli", "retrain", *options, "--now"]  # asked for: whatever came in
        self.env = env
        self.log_path = log_path
        self.redis_url = redis_url or env.get("REDIS_URL")
        self.cluster = cluster
        self.next_at = time.monotonic() + interval_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._redis: redis.Redis | None = None
        self._look_after = 0.0  # after a failed look for requests: not before this (no log flood)
        self._said_next: float | None = None  # the next_at last written for the console

    def tick(self) -> bool:
        """Start a run when one was asked for or is due, and none is running; True when one was
        started. A request waits for the running run to end; a due interval is dropped. A run
        asked for leaves the schedule as it was: the next scheduled run comes when it was due."""
        due = self.interval_s > 0 and time.monotonic() >= self.next_at
        if due:
            self.next_at = time.monotonic() + self.interval_s
        if self.interval_s > 0 and self._said_next != self.next_at:
            self._say_next()
        if self.proc is not None and self.proc.poll() is None:
            return False
        if self._take_request():
            self._start(self.now_argv)
            return True
        if not due:
            return False
        self._start(self.argv)
        return True

    def _take_request(self) -> bool:
        """Whether a run was asked for (the request is removed); a Redis error is logged, never
        raised: `up` must not stop for it."""
        if self.redis_url is None or time.monotonic() < self._look_after:
            return False
        from feedback import progress

        try:
            request = progress.take_request(self._connection())
        except Exception as exc:  # Redis restarting, unreachable: `up` goes on
            log.warning("could not look for a retraining request (%s); looking again in %.0f s", exc, REQUEST_RETRY_S)
            self._look_after = time.monotonic() + REQUEST_RETRY_S
            return False
        if request is not None:
            log.info("retraining run asked for by %s", request.get("by", "?"))
        return request is not None

    def _connection(self) -> redis.Redis:
        from feedback.connection import connect_sync

        assert self.redis_url is not None
        if self._redis is None:
            self._redis = connect_sync(self.redis_url, timeout_s=2.0, cluster=self.cluster)
        return self._redis

    def _say_next(self) -> None:
        """Tell the console when the next scheduled run starts (best effort, like the requests)."""
        if self.redis_url is None or time.monotonic() < self._look_after:
            return
        from feedback import progress

        try:
            progress.set_next(self._connection(), time.time() + self.next_at - time.monotonic(), self.interval_s)
        except Exception as exc:  # Redis restarting, unreachable: `up` goes on
            log.warning("could not write the next retraining time (%s); trying again in %.0f s", exc, REQUEST_RETRY_S)
            self._look_after = time.monotonic() + REQUEST_RETRY_S
            return
        self._said_next = self.next_at

    def _start(self, argv: list[str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, timeout_s: float = 10) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

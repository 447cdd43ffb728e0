"""Child processes that start together and stop together (Ctrl-C stops all of them cleanly)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from feedback.errors import ServiceError


class StartupError(ServiceError):
    """A service did not come up; the message says which and what to change."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**settings: str) -> dict[str, str]:
    """This process's environment without any of the product's settings (the variable of every
    Settings field), plus `settings`: a child process that sees exactly the settings it is given,
    whatever the caller's shell exports."""
    from feedback.settings import Settings

    names = {name.upper() for name in Settings.model_fields}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **settings}


def wait_until(check: Callable[[], bool], timeout_s: float, proc: subprocess.Popen[Any] | None = None, what: str = "service") -> None:
    """Poll check() until it is true; fail early when proc dies, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StartupError(f"{what} exited with code {proc.returncode} while starting")
        try:
            if check():
                return
        except (OSError, httpx.HTTPError):
            pass  # not listening yet
        time.sleep(0.1)
    raise StartupError(f"{what} did not become ready within {timeout_s:.0f} s")


class ServiceGroup:
    """Starts processes in their own process groups; on exit stops them newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # closed with the process
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, timeout_s: float = 10.0) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

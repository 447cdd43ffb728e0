"""Child processes that start together and stop together (Ctrl-C stops all of them cleanly)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
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


PR_SET_PDEATHSIG = 1  # linux/prctl.h
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None  # looked up before any fork


def _die_with(parent: int) -> Callable[[], None] | None:
    """For Popen's preexec_fn: the child gets SIGTERM when `parent` ends, even by `kill -9` (Linux;
    elsewhere None). Without it a killed `chatbot up` leaves its Redis running on the data directory."""
    if _prctl is None:
        return None
    prctl = _prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above: nothing would signal
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class ServiceGroup:
    """Starts processes in their own process groups; on exit stops them newest first.
    `die_with_parent`: the children also stop when this process is killed (`chatbot up`); call
    start() from the main thread then (the kernel signals when the forking thread ends)."""

    def __init__(self, log_dir: Path, die_with_parent: bool = False) -> None:
        self.log_dir = log_dir
        self.die_with_parent = die_with_parent
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
            preexec_fn=_die_with(os.getpid()) if self.die_with_parent else None,
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

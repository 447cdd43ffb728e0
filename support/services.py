"""The real services a test or a benchmark runs against, started as subprocesses with the same
launcher code `chatbot up` uses: Redis, a stand-in model server, the Chainlit app, the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from launcher import chainlit_server
from launcher.process import ServiceGroup, child_env, free_port, wait_until
from support.session import USERS

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RedisServer:
    url: str
    client: redis.Redis


@dataclass
class AppServer:
    url: str
    log: Path
    group: ServiceGroup


def start_standin(group: ServiceGroup, load_s: float = 0.0, serial: bool = False) -> str:
    """The stand-in OpenAI-compatible model server (support/standin_model.py); its base URL.
    `load_s`: each model name's first request waits that long (a server loading the model).
    `serial`: it generates one answer at a time, as a local server on a CPU does."""
    port = free_port()
    argv = [sys.executable, "-m", "support.standin_model", "--port", str(port), "--load-s", str(load_s), *(["--serial"] if serial else [])]
    proc = group.start("standin", argv, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/health", timeout=1).status_code == 200, 30, proc, "stand-in model")
    return base


def streams(standin: str) -> list[dict[str, Any]]:
    """The stand-in's record of its recent streamed answers (support/standin_model.py)."""
    return list(httpx.get(f"{standin}/streams").json())


def ended(standin: str, model: str, timeout_s: float = 10) -> dict[str, Any]:
    """The stand-in's newest stream of `model`, once it has ended: "complete", or "disconnected"
    (polled: the server notices a client leaving a moment after it left)."""
    deadline = time.monotonic() + timeout_s
    while True:
        mine = [s for s in streams(standin) if s["model"] == model]
        if mine and mine[-1]["end"] is not None:
            return mine[-1]
        assert time.monotonic() < deadline, f"the {model} stream did not end within {timeout_s} s: {mine}"
        time.sleep(0.05)


def app_env(redis_url: str, llm_base_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = child_env(
        REDIS_URL=redis_url,
        LLM_BASE_URL=llm_base_url,
        LLM_MODEL="echo",
        # A silent model is an error within 10 s; a slow one may stream on (the stand-in's "slow"
        # takes 20 s).
        LLM_FIRST_TOKEN_TIMEOUT_S="10",
        LLM_IDLE_TIMEOUT_S="10",
        LLM_TIMEOUT_S="60",
        AUTH_USERS=",".join(f"{u}:{p}" for u, p in USERS.items()),
        CHAINLIT_AUTH_SECRET="test-secret-" + "x" * 40,
        DATA_DIR=str(data_dir),
        # The suite logs in and chats far faster than a person: tests/test_security.py checks the
        # limits on an app of its own.
        MESSAGES_PER_MINUTE="100000",
        RATINGS_PER_MINUTE="100000",
        LOGINS_PER_MINUTE="100000",
    )
    env.update(extra)
    return env


def start_app(group: ServiceGroup, env: dict[str, str], data_dir: Path) -> AppServer:
    port = free_port()
    chainlit_server.start(group, env, data_dir / "chainlit", "127.0.0.1", port)
    return AppServer(url=f"http://127.0.0.1:{port}", log=group.log_dir / "chainlit.log", group=group)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

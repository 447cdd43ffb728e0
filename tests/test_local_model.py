"""The local model path: a model directory served by `transformers serve`, chatted with through the
real app. The model is a tiny random one built here, since nothing can be downloaded."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage

from bot import model as chat
from demo.tiny import build_tiny_model
from feedback.settings import Settings
from launcher import model_server
from launcher.process import ServiceGroup, StartupError, child_env, free_port, wait_until
from sim.client import ChatClient, dumps
from support.services import ROOT, AppServer, RedisServer, app_env, start_app
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
def greedy_model_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a generation_config.json that says nothing of sampling, as the default
    model's (converted from GGUF) says nothing: `transformers serve` decodes it greedily unless a
    request asks it to sample. (The tiny model's own config samples.)"""
    out = tmp_path_factory.mktemp("greedy-by-default") / "model"
    shutil.copytree(model_dir, out)
    config = json.loads((out / "generation_config.json").read_text())
    del config["do_sample"]
    (out / "generation_config.json").write_text(json.dumps(config))
    return out.resolve()


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


async def answers(settings: Settings, model: Path, temperature: float, seeds: range) -> list[str]:
    """One answer per seed to the same prompt, from the app's client with the product's settings."""
    llm = chat.for_settings(settings.model_copy(update={"llm_temperature": temperature}), str(model))
    return [str((await llm.ainvoke([HumanMessage("Hello, who are you?")], seed=seed)).content) for seed in seeds]


async def test_the_temperature_reaches_every_model_and_zero_is_greedy(local_model: LocalModel, model_dir: Path, greedy_model_dir: Path) -> None:
    """The local server as `chatbot up` configures the app (LLM_BASE_URL unset: the local server).
    Seeded: each seed is one draw, the same seed the same draw. A random tiny model's next token is
    near uniform over its vocabulary, so 12 sampled tokens under four seeds are four answers."""
    settings = Settings(llm_base_url=None, local_model_port=local_model.port, llm_max_tokens=12, llm_timeout_s=120)
    assert settings.sample_at_server
    sampled = await answers(settings, greedy_model_dir, 0.7, range(4))
    assert len(set(sampled)) == 4, sampled  # greedy before: four times the same answer
    assert await answers(settings, greedy_model_dir, 0.7, range(1)) == sampled[:1]  # the seed reaches the server
    # Temperature 0 is greedy even for a model whose own config samples (the tiny one's does; its
    # greedy answer is newlines, its first token repeated).
    greedy = await answers(settings, model_dir, 0.0, range(4))
    assert len(set(greedy)) == 1 and greedy[0], greedy
    assert len(set(await answers(settings, model_dir, 0.7, range(4)))) == 4


def test_llm_transformers_serve_is_on_for_the_local_server_only() -> None:
    assert Settings(llm_base_url=None).sample_at_server
    assert not Settings(llm_base_url="https://api.openai.com/v1").sample_at_server  # OpenAI refuses the field
    assert Settings(llm_base_url="http://127.0.0.1:8001/v1", llm_transformers_serve=True).sample_at_server


@pytest.mark.timeout(300)
async def test_up_samples_the_served_model_so_regenerate_gives_another_answer(greedy_model_dir: Path, tmp_path: Path) -> None:
    """`chatbot up` on a model that decodes greedily by default (as the default model does):
    Regenerate must give another answer. Seeded (LLM_SEED: the answer and its regeneration are two
    fixed draws), so the test is deterministic."""
    port = free_port()
    env = child_env(
        DATA_DIR=str(tmp_path / "data"), PORT=str(port), LOCAL_MODEL_PORT=str(free_port()), LLM_MODEL=str(greedy_model_dir),
        LLM_MAX_TOKENS="12", LLM_SEED="3", RETRAIN_INTERVAL_S="0",
    )  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "up"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = ChatClient(f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/project/settings?language=en-US", timeout=1).status_code < 500, 180, proc, "chatbot up")
        await client.login("admin", (tmp_path / "data" / "secrets" / "admin-password").read_text().strip())
        await client.connect()
        first = await client.send("Hello, who are you?", timeout_s=120)
        assert first.final() is not None and first.text.strip(), dumps(first)  # greedy: newlines only, "an empty answer"
        [offered] = [a for a in first.actions if a["name"] == "regenerate"]
        again = await client.action("regenerate", offered["payload"], for_id=str(offered["forId"]), timeout_s=120)
    finally:
        await client.close()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert again.final() is not None and again.text.strip(), dumps(again)
    assert again.text != first.text

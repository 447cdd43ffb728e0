"""Prompt versions published at run time: validation and immutability on a real Redis, the CLI,
and the running apps switching new conversations to a served version without a restart while
resumed threads keep theirs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from feedback import keys
from feedback import prompt as prompts
from launcher.process import ServiceGroup
from support.services import AppServer, RedisServer, app_env, run_cli, start_app
from support.session import keyspace, logged_in, run_id, send_in

# A version no other test publishes: a running app caches a version it has served (they never change).
SPEC: dict[str, Any] = {
    "id": "assistant",
    "version": "6.0.0",
    "description": "Answers like a pirate.",
    "system": "You are Loop. Answer like a pirate.",
    "guidelines": ["Say arr."],
    "examples": [{"user": "Hi", "assistant": "Arr, hello."}],
}


def test_publish_is_immutable_and_serving_needs_a_published_version(redis_db: RedisServer) -> None:
    c = redis_db.client
    spec = prompts.parse(SPEC, "test")
    assert prompts.publish(c, spec) is True
    assert prompts.publish(c, spec) is False  # the same content again: nothing to do
    before = keyspace(redis_db.url)
    with pytest.raises(prompts.PromptSpecError, match="already published with other content"):
        prompts.publish(c, prompts.parse({**SPEC, "system": "Be terse."}, "test"))
    with pytest.raises(prompts.PromptSpecError, match="is not published"):
        prompts.serve(c, "assistant", "9.9.9")
    assert keyspace(redis_db.url) == before
    assert prompts.serve(c, "assistant", "6.0.0") == spec
    assert prompts.served(c, "assistant") == "6.0.0" and [s.version for s in prompts.versions(c, "assistant")] == ["6.0.0"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"system": None}, "system"),
        ({"tone": "loud"}, "tone: Extra inputs are not permitted"),
        ({"version": "two"}, "is not a version"),
        ({"version": "v2"}, "write the version as '2'"),
        ({"version": "02.0.0"}, "write the version as '2.0.0'"),
        ({"id": "../etc"}, "id: String should match pattern"),
        ({"system": "x" * (prompts.MAX_SYSTEM_CHARS + 1)}, "system: String should have at most"),
        ({"examples": [{"user": "only a question"}]}, "examples.0.assistant: Field required"),
        ({"guidelines": ["ok", " "]}, "each guideline is 1 to"),
    ],
)
def test_bad_specs_are_refused_with_what_is_wrong(redis_db: RedisServer, change: dict[str, Any], error: str) -> None:
    data = {k: v for k, v in {**SPEC, **change}.items() if v is not None}
    with pytest.raises(prompts.PromptSpecError, match=error.replace(".", r"\.").replace("(", r"\(")):
        prompts.parse(data, "spec.yaml")


def test_the_cli_publishes_lists_and_serves(redis_db: RedisServer, tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": redis_db.url, "DATA_DIR": str(tmp_path / "data")}
    good = tmp_path / "pirate.yaml"
    good.write_text(yaml.safe_dump(SPEC))
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: assistant\nversion: 3.0.0\nsystem: [unclosed\n")

    published = run_cli("prompt", "publish", str(good), "--serve", env=env)
    assert published.returncode == 0, published.stderr
    assert "assistant@6.0.0 published" in published.stderr and "served" in published.stderr
    refused = run_cli("prompt", "publish", str(bad), env=env)
    assert refused.returncode == 2 and "not valid YAML" in refused.stderr
    assert redis_db.client.hkeys(keys.prompt_versions("assistant")) == ["6.0.0"]
    listed = run_cli("prompt", "list", env=env)
    assert listed.returncode == 0 and "6.0.0" in listed.stdout and "Answers like a pirate." in listed.stdout
    unknown = run_cli("prompt", "serve", "7.0.0", env=env)
    assert unknown.returncode == 2 and "is not published" in unknown.stderr


async def first_system_prompt(standin: str) -> str:
    sent = httpx.get(f"{standin}/requests").json()[-1]["messages"]
    return str(sent[0]["content"])


async def test_apps_serve_a_newly_published_version_without_restart_and_threads_keep_theirs(
    app_server: AppServer, redis_db: RedisServer, standin: str, own_services: ServiceGroup, tmp_path: Path
) -> None:
    c = redis_db.client
    before = await logged_in(app_server.url)  # a conversation under the shipped version
    old = run_id(await before.send("hello before"))
    await before.close()
    assert before.thread_id is not None  # the thread started before keeps its version (below)
    shipped = c.hget(keys.exchange(before.thread_id, old), "prompt_version")
    assert shipped == prompts.available_versions(_shipped_dir(), "assistant")[-1]  # the newest shipped

    prompts.publish(c, prompts.parse(SPEC, "test"))
    prompts.serve(c, "assistant", "6.0.0")
    second = start_app(own_services, app_env(redis_db.url, f"{standin}/v1", tmp_path / "app2"), tmp_path / "app2")  # another process
    for url in (app_server.url, second.url):
        client = await logged_in(url, "bob")
        new = run_id(await client.send("hello after"))
        await client.close()
        assert client.thread_id is not None
        assert c.hget(keys.exchange(client.thread_id, new), "prompt_version") == "6.0.0"
        assert (await first_system_prompt(standin)).startswith("You are Loop. Answer like a pirate.")

    again = run_id(await send_in(app_server.url, "alice", before.thread_id, "and now?"))
    assert c.hget(keys.exchange(before.thread_id, again), "prompt_version") == shipped  # the thread started before keeps its version
    assert not (await first_system_prompt(standin)).startswith("You are Loop. Answer like a pirate.")


def _shipped_dir() -> Path:
    from feedback.settings import Settings

    return Settings().prompts_dir

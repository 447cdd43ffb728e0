"""Hot swaps with a model server that is slow to load: every path that changes the model in service
(the retraining job, `chatbot model promote` / `rollback`, the console's buttons) loads the new version into the server before the active pointer moves, so the first answer after
the switch is as fast as any other; and a version the server refuses never goes in service.

The stand-in server (support/standin_model.py --load-s) takes LOAD_S seconds the first time each
model name is asked for, longer than the app's LLM_TIMEOUT_S: an answer that paid for the load
would time out."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from feedback import keys, registry, serving
from feedback import run as runs
from feedback.settings import Settings
from launcher.process import ServiceGroup, free_port
from sim.client import ChatClient
from support.services import AppServer, RedisServer, app_env, run_cli, start_app, start_standin
from support.session import USERS, final_message

LOAD_S = 8.0  # the stand-in's load of each model name
TIMEOUT_S = 5.0  # the app's LLM_TIMEOUT_S: shorter than a load
# An answer that did not wait for a load: the stand-in answers in milliseconds, the app's turn
# took up to 1.8 s on 2 cores loaded by a training run beside it.
FAST_S = 3.0

T = TypeVar("T")


@dataclass
class Swap:
    app: AppServer
    model_url: str  # the slow stand-in, without /v1
    redis: RedisServer
    env: dict[str, str]  # what the CLI runs with: the app's settings


@pytest.fixture
def swap(redis_db: RedisServer, own_services: ServiceGroup, tmp_path: Path) -> Swap:
    model_url = start_standin(own_services, load_s=LOAD_S)
    serving.warm(f"{model_url}/v1", "x", "echo", timeout_s=30)  # the configured model, loaded before the app starts
    env = app_env(redis_db.url, f"{model_url}/v1", tmp_path / "data", LLM_TIMEOUT_S=str(TIMEOUT_S), ADMIN_USERS="alice")
    return Swap(start_app(own_services, env, tmp_path / "data"), model_url, redis_db, env)


@dataclass
class PointerWatch:
    """Polls the active model pointer and the server's loaded models until stopped: records every
    time the pointer named a model the server had not finished loading."""

    swap: Swap
    violations: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while True:
                last = self.stop.wait(0.02)  # then one more look: the state the action left
                name = str(self.swap.redis.client.get(keys.active_model()) or "echo")
                loaded = http.get(f"{self.swap.model_url}/loads").json()  # read after the pointer
                self.seen.add(name)
                if name not in loaded:
                    self.violations.append(name)
                if last:
                    return


def watched(swap: Swap, action: Callable[[], T]) -> tuple[T, PointerWatch, float]:
    """Run `action` while watching the pointer; (its result, the watch, its seconds)."""
    watch = PointerWatch(swap)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        result = action()
    finally:
        seconds = time.monotonic() - started
        watch.stop.set()
        thread.join()
    return result, watch, seconds


def first_answer(swap: Swap) -> tuple[dict[str, Any], float]:
    """The next user's answer (final message) and its seconds."""

    async def ask() -> tuple[dict[str, Any], float]:
        client = ChatClient(swap.app.url)
        await client.login("bob", USERS["bob"])
        await client.connect()
        try:
            reply = await client.send("hello after the swap", timeout_s=30)
        finally:
            await client.close()
        assert reply.total_s is not None
        return final_message(reply), reply.total_s

    return asyncio.run(ask())


def add(swap: Swap, version_id: str, served_name: str, parent: str | None = None) -> None:
    registry.add(swap.redis.client, registry.ModelVersion(id=version_id, parent=parent, base_model="echo", served_name=served_name))


def assert_fast_answer_from(swap: Swap, version: str) -> None:
    final, seconds = first_answer(swap)
    assert final["metadata"].get("model_version") == version, final  # an answer, not "took too long"
    assert seconds < FAST_S, f"the first answer after the swap took {seconds:.2f} s"


def test_cli_promote_loads_the_version_before_it_goes_in_service(swap: Swap) -> None:
    add(swap, "mv-hot-1", "hot-1")
    done, watch, seconds = watched(swap, lambda: run_cli("model", "promote", "mv-hot-1", env=swap.env))
    assert done.returncode == 0, done.stderr
    assert seconds >= LOAD_S  # it waited for the load
    assert watch.violations == [] and "hot-1" in watch.seen, watch  # the pointer moved once loaded, not before
    assert swap.redis.client.get(keys.active_version()) == "mv-hot-1"
    assert_fast_answer_from(swap, "mv-hot-1")


def test_cli_rollback_loads_the_parent_before_it_goes_back_in_service(swap: Swap) -> None:
    c = swap.redis.client
    add(swap, "mv-hot-1", "hot-1")
    add(swap, "mv-hot-2", "hot-2", parent="mv-hot-1")
    serving.warm(f"{swap.model_url}/v1", "x", "hot-2", timeout_s=30)
    pipe = c.pipeline(transaction=True)
    registry.activate(pipe, registry.get(c, "mv-hot-2"), None)
    pipe.execute()

    done, watch, seconds = watched(swap, lambda: run_cli("model", "rollback", env=swap.env))

    assert done.returncode == 0, done.stderr
    assert seconds >= LOAD_S and watch.violations == [] and "hot-1" in watch.seen, watch
    assert c.get(keys.active_version()) == "mv-hot-1"
    assert_fast_answer_from(swap, "mv-hot-1")


def test_console_promote_and_rollback_load_first(swap: Swap) -> None:
    add(swap, "mv-hot-1", "hot-1")
    add(swap, "mv-hot-2", "hot-2", parent="mv-hot-1")
    with operator(swap) as (alice, token):
        promoted, watch, seconds = watched(swap, lambda: alice.post("/admin/models/promote", data={"version": "mv-hot-2", "confirm": "yes", "csrf": token}))
        assert promoted.status_code == 303, promoted.text[:300]
        assert seconds >= LOAD_S and watch.violations == [] and "hot-2" in watch.seen, watch
        assert_fast_answer_from(swap, "mv-hot-2")

        rolled, watch, seconds = watched(swap, lambda: alice.post("/admin/models/rollback", data={"confirm": "yes", "csrf": token}))
        assert rolled.status_code == 303, rolled.text[:300]
        assert seconds >= LOAD_S and watch.violations == [] and "hot-1" in watch.seen, watch
        assert_fast_answer_from(swap, "mv-hot-1")


def test_a_version_the_server_refuses_stays_out_of_service_and_the_operator_is_told(swap: Swap) -> None:
    c = swap.redis.client
    add(swap, "mv-hot-1", "hot-1")
    add(swap, "mv-bad", "fail-404", parent="mv-hot-1")
    add(swap, "mv-bad-child", "hot-3", parent="mv-bad")
    before = (c.get(keys.active_model()), c.get(keys.active_version()))

    refused = run_cli("model", "promote", "mv-bad", env=swap.env)
    assert refused.returncode == 1 and "could not load 'fail-404'" in refused.stderr, refused.stderr
    with operator(swap) as (alice, token):
        page = alice.post("/admin/models/promote", data={"version": "mv-bad", "confirm": "yes", "csrf": token})
        assert page.status_code == 502 and "was not put in service" in page.text and "fail-404" in page.text
    assert (c.get(keys.active_model()), c.get(keys.active_version())) == before
    assert registry.get(c, "mv-bad").status == "candidate"

    # A rollback whose parent the server refuses leaves the version in service as it was.
    serving.warm(f"{swap.model_url}/v1", "x", "hot-3", timeout_s=30)
    pipe = c.pipeline(transaction=True)
    registry.activate(pipe, registry.get(c, "mv-bad-child"), None)
    pipe.execute()
    refused = run_cli("model", "rollback", env=swap.env)
    assert refused.returncode == 1 and "fail-404" in refused.stderr, refused.stderr
    assert c.get(keys.active_version()) == "mv-bad-child" and registry.get(c, "mv-bad-child").status == "active"
    assert_fast_answer_from(swap, "mv-bad-child")


@contextmanager
def operator(swap: Swap) -> Iterator[tuple[httpx.Client, str]]:
    """alice (ADMIN_USERS) logged in, and the console's CSRF token."""
    login = httpx.post(f"{swap.app.url}/login", data={"username": "alice", "password": USERS["alice"]})
    login.raise_for_status()
    cookie = {"Cookie": f"access_token={login.cookies['access_token']}"}
    with httpx.Client(base_url=swap.app.url, headers=cookie, follow_redirects=False, timeout=60) as client:
        page = client.get("/admin/models")
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert page.status_code == 200 and found, page.text[:300]
        yield client, found.group(1)


# --- the retraining job -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny")).resolve()


@pytest.mark.slow
@pytest.mark.timeout(600)  # a training run: under a minute alone, 5 minutes on 2 busy cores
def test_the_job_loads_the_version_it_promotes_before_the_pointer_moves(swap: Swap, base_model: Path, tmp_path: Path) -> None:
    from support.retrain import FAST, seed_ratings
    from training import job
    from training.config import RetrainConfig

    c = swap.redis.client
    seed_ratings(swap.redis.url)
    settings = Settings(redis_url=swap.redis.url, llm_model=str(base_model), llm_base_url=f"{swap.model_url}/v1", data_dir=tmp_path / "job", retrain_lock_ttl_s=30)

    outcome, watch, _ = watched(swap, lambda: job.run(c, settings, RetrainConfig(min_new_ratings=0, **FAST), progress=False))

    assert outcome.status == "promoted", outcome
    served = registry.get(c, str(outcome.version_id)).served_name
    assert watch.violations == [] and served in watch.seen, watch
    assert_fast_answer_from(swap, str(outcome.version_id))


@pytest.mark.slow
@pytest.mark.timeout(600)  # a training run: under a minute alone, 5 minutes on 2 busy cores
def test_a_job_whose_version_cannot_be_loaded_fails_and_changes_nothing(redis_db: RedisServer, base_model: Path, tmp_path: Path) -> None:
    from support.retrain import FAST, seed_ratings, state
    from training import job
    from training.config import RetrainConfig

    c = redis_db.client
    seed_ratings(redis_db.url)
    before = state(c)
    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # no model server there
    settings = Settings(redis_url=redis_db.url, llm_model=str(base_model), llm_base_url=nowhere, data_dir=tmp_path / "job", retrain_lock_ttl_s=30)

    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=0, **FAST), progress=False)

    assert outcome.status == "failed" and "WarmUpError" in outcome.reason and nowhere in outcome.reason, outcome
    assert state(c) == before  # no version, no pointer, no watermark: the ratings count again next time
    assert [run.status for run in runs.recent(c)] == ["failed"]

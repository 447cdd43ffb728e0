"""Prompt experiments on a real Redis and through the running app: one experiment per prompt,
sticky and balanced assignment, approval counted once per answer with a per-user cap and only from
the model in service at the start, a decision that serves the winner."""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from feedback import exchange as exchanges
from feedback import experiment as experiments
from feedback import keys
from feedback import prompt as prompts
from feedback.connection import connect
from launcher.process import ServiceGroup
from support import seed
from support.services import AppServer, RedisServer, app_env, start_app
from support.session import keyspace, logged_in, run_id, send_in

# Versions no other test publishes: a running app caches a version it has served (they never change).
ARMS = {"5.0.0": "You are Loop, arm one.", "5.1.0": "You are Loop, arm two."}


def publish_arms(c: Any) -> None:
    for version, system in ARMS.items():
        prompts.publish(c, prompts.parse({"id": "assistant", "version": version, "system": system}, "test"))


def test_start_checks_its_arms_and_only_one_experiment_runs(redis_db: RedisServer) -> None:
    c = redis_db.client
    publish_arms(c)
    before = keyspace(redis_db.url)
    for arms, error in ((["5.0.0", "9.9.9"], "not published"), (["5.0.0"], "at least 2"), (["5.0.0", "5.0.0"], "arms must differ")):
        with pytest.raises(experiments.ExperimentError, match=error):
            experiments.start(c, "assistant", arms, "base")
    assert keyspace(redis_db.url) == before

    started: list[str] = []
    refused: list[str] = []

    def start() -> None:
        try:
            started.append(experiments.start(connect_sync(redis_db.url), "assistant", list(ARMS), "base").id)
        except experiments.ExperimentError as exc:
            refused.append(str(exc))

    workers = [threading.Thread(target=start) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(started) == 1 and len(refused) == 7 and all("already running" in m for m in refused)
    assert c.get(keys.prompt_experiment("assistant")) == started[0]
    assert experiments.stop(c, "assistant").id == started[0]
    assert c.get(keys.prompt_experiment("assistant")) is None
    second = experiments.start(c, "assistant", list(ARMS), "base", policy="adaptive")
    assert second.policy == "adaptive"
    assert experiments.history(c, "assistant") == [second.id, started[0]]  # each started once, newest first, refused ones absent


def connect_sync(url: str) -> Any:
    from feedback.connection import connect_sync as sync

    return sync(url)


async def test_fixed_assignment_is_sticky_and_exactly_balanced(redis_db: RedisServer) -> None:
    c = redis_db.client
    publish_arms(c)
    exp = experiments.start(c, "assistant", list(ARMS), "base")
    r = connect(redis_db.url)
    try:
        first = {f"t{i}": await experiments.assign(r, "assistant", f"t{i}") for i in range(100)}
        assert sorted({a for a in first.values() if a}) == [(exp.id, "5.0.0"), (exp.id, "5.1.0")]
        assert sum(1 for a in first.values() if a and a[1] == "5.0.0") == 50
        again = {t: await experiments.assign(r, "assistant", t) for t in first}
        assert again == first  # a thread keeps its arm
        experiments.stop(c, "assistant")
        assert await experiments.assign(r, "assistant", "t-new") is None
    finally:
        await r.aclose()


async def test_adaptive_assignment_follows_the_weights_and_is_sticky(redis_db: RedisServer) -> None:
    c = redis_db.client
    publish_arms(c)
    exp = experiments.start(c, "assistant", list(ARMS), "base", policy="adaptive")
    c.hset(keys.experiment(exp.id), "weights", json.dumps({"5.0.0": 0.9, "5.1.0": 0.1}))  # as a look would set them
    r = connect(redis_db.url)
    try:
        first = [await experiments.assign(r, "assistant", f"t{i}") for i in range(400)]
        again = [await experiments.assign(r, "assistant", f"t{i}") for i in range(400)]
    finally:
        await r.aclose()
    assert again == first
    share = sum(1 for a in first if a == (exp.id, "5.0.0")) / len(first)
    assert 0.8 < share < 0.97, share  # 0.9 expected; 400 draws: sd 0.015


async def answered(r: Any, exp: experiments.Experiment, arm: str, user: str, value: int, model: str = "base") -> None:
    """One answer in a conversation of the experiment, rated through the rating script."""
    thread = f"th-{uuid.uuid4().hex[:12]}"
    await r.hset(keys.experiment_assignments(exp.id), thread, arm)
    ex = exchanges.Exchange(
        id=uuid.uuid4().hex, thread_id=thread, user=user, prompt_message_id=uuid.uuid4().hex,
        messages=[exchanges.PromptMessage(role="user", content="q")], completion="a", prompt_id="assistant",
        prompt_version=arm, model="m", model_version=model, experiment=exp.id,
    )  # fmt: skip
    await exchanges.save(r, ex, uuid.uuid4().hex)
    await seed.rate(r, ex.id, thread=thread, user=user, value=value)


async def test_status_decides_counting_each_answer_once_capped_per_user_and_from_one_model(redis_db: RedisServer) -> None:
    c = redis_db.client
    publish_arms(c)
    exp = experiments.start(c, "assistant", list(ARMS), "base", min_rated=20, user_cap=10, auto_serve=True)
    r = connect(redis_db.url)
    try:
        for i in range(100):  # 10 users x 10 answers per arm: arm two liked 80%, arm one 30%
            user = f"u{i % 10}"
            await answered(r, exp, "5.1.0", user, int(i % 10 < 8))
            await answered(r, exp, "5.0.0", user, int(i % 10 < 3))
        early = experiments.status(c, "assistant")
        assert early.counts == {"5.0.0": experiments.ArmCounts(100, 30), "5.1.0": experiments.ArmCounts(100, 80)}
        for _ in range(60):  # one keen user loves arm one: over the cap, not counted
            await answered(r, exp, "5.0.0", "keen", 1)
        for _ in range(25):  # a promotion: answers of another model version are not counted
            await answered(r, exp, "5.0.0", "u1", 1, model="mv-new")
    finally:
        await r.aclose()

    report = experiments.status(c, "assistant", exp.id)

    assert report.counts["5.0.0"] == experiments.ArmCounts(110, 40)  # the keen user's first 10 only
    assert (report.capped, report.other_model_answers) == (50, 25)
    assert report.by_model["5.0.0"]["mv-new"] == experiments.ArmCounts(25, 25)
    assert report.decision.status == "winner" and report.decision.winner == "5.1.0", report.decision
    assert report.decision.interval[0] > 0
    assert prompts.served(c, "assistant") == "5.1.0"  # auto_serve
    ended = experiments.load(c, exp.id)
    assert ended is not None and ended.status == "decided" and ended.decision["winner"] == "5.1.0"
    assert c.get(keys.prompt_experiment("assistant")) is None


async def test_conversations_in_the_app_get_an_arm_keep_it_and_record_it(app_server: AppServer, redis_db: RedisServer, standin: str) -> None:
    c = redis_db.client
    publish_arms(c)
    exp = experiments.start(c, "assistant", list(ARMS), "base")
    threads: dict[str, str] = {}
    for user in ("alice", "bob", "alice", "bob"):
        client = await logged_in(app_server.url, user)
        ex_id = run_id(await client.send("hello"))
        await client.close()
        assert client.thread_id is not None
        stored = cast("dict[str, str]", c.hgetall(keys.exchange(client.thread_id, ex_id)))
        assert stored["experiment"] == exp.id
        system = httpx.get(f"{standin}/requests").json()[-1]["messages"][0]["content"]
        assert system == ARMS[stored["prompt_version"]]  # the arm's prompt was sent
        threads[client.thread_id] = stored["prompt_version"]
    assert sorted(threads.values()) == ["5.0.0", "5.0.0", "5.1.0", "5.1.0"]
    assert c.hgetall(keys.experiment_assignments(exp.id)) == threads

    thread, arm = next(iter(threads.items()))  # alice's first conversation, resumed
    again = run_id(await send_in(app_server.url, "alice", thread, "and again"))
    assert c.hmget(keys.exchange(thread, again), "prompt_version", "experiment") == [arm, exp.id]


async def test_a_killed_app_loses_no_assignment(own_services: ServiceGroup, redis_db: RedisServer, standin: str, tmp_path: Path) -> None:
    """Assignments are in Redis before the answer is: a new app process after kill -9 sends each
    resumed conversation to the arm it had."""
    c = redis_db.client
    publish_arms(c)
    exp = experiments.start(c, "assistant", list(ARMS), "base")
    env = app_env(redis_db.url, f"{standin}/v1", tmp_path / "app")
    app = start_app(own_services, env, tmp_path / "app")
    threads: dict[str, str] = {}
    for user in ("alice", "bob"):
        client = await logged_in(app.url, user)
        ex_id = run_id(await client.send("before the crash"))
        await client.close()
        assert client.thread_id is not None
        threads[client.thread_id] = cast(str, c.hget(keys.exchange(client.thread_id, ex_id), "prompt_version"))
    assert sorted(threads.values()) == sorted(ARMS)
    proc = next(p for name, p in reversed(own_services.procs) if name == "chainlit")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert c.hgetall(keys.experiment_assignments(exp.id)) == threads

    again = start_app(own_services, env, tmp_path / "app")  # a new process, same Redis
    for (thread, arm), user in zip(threads.items(), ("alice", "bob"), strict=True):
        ex_id = run_id(await send_in(again.url, user, thread, "after the crash"))
        assert c.hmget(keys.exchange(thread, ex_id), "prompt_version", "experiment") == [arm, exp.id]


async def test_chatbot_up_looks_at_the_experiment_and_serves_the_winner(redis_db: RedisServer) -> None:
    """The look-out `chatbot up` runs every EXPERIMENT_LOOK_S: it decides a running experiment and
    auto-serves its winner with no operator, and a failed look never raises."""
    from launcher.experiment_watch import ExperimentWatch
    from launcher.process import wait_until

    c = redis_db.client
    publish_arms(c)
    watch = ExperimentWatch(redis_db.url, "assistant", interval_s=0.01)
    assert watch.look() is None  # no experiment running: nothing to look at
    exp = experiments.start(c, "assistant", list(ARMS), "base", min_rated=20, auto_serve=True)
    r = connect(redis_db.url)
    try:
        for i in range(60):
            await answered(r, exp, "5.1.0", f"u{i % 6}", int(i % 10 < 9))
            await answered(r, exp, "5.0.0", f"u{i % 6}", int(i % 10 < 2))
    finally:
        await r.aclose()
    wait_until(lambda: watch.tick() == "winner", 10, what="the look-out's decision")
    assert prompts.served(c, "assistant") == "5.1.0" and c.get(keys.prompt_experiment("assistant")) is None
    assert ExperimentWatch("unix:///nonexistent/redis.sock", "assistant").look() is None  # logged, not raised

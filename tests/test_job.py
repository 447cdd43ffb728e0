"""The retraining job end to end on a real Redis and a tiny model built locally: seeded ratings ->
dataset -> TRL -> gate -> registry -> the app's next answer comes from the new version; crashes
and concurrent triggers change nothing they shouldn't."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from demo.tiny import build_tiny_model
from feedback import event as events
from feedback import keys, registry
from feedback import rating as ratings
from feedback import run as runs
from feedback.connection import connect
from feedback.serving import ModelServer
from feedback.settings import Settings
from launcher import model_server
from launcher.process import ServiceGroup, StartupError, free_port, wait_until
from sim.client import ChatClient
from support import seed
from support.retrain import FAST, seed_ratings, state
from support.services import ROOT, RedisServer, app_env, start_app
from support.session import USERS, final_message
from training import job
from training.config import RetrainConfig

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny")).resolve()


@pytest.fixture
def settings(redis_db: RedisServer, base_model: Path, standin: str, tmp_path: Path) -> Settings:
    # 30 s: a live run renews its lock every 10 s, which a loaded CI machine can delay a few
    # seconds (with 3 s, two runs failed with LostLockError under load). The crash test below
    # gives its own run 3 s, so that the lock it leaves behind expires quickly. A promotion
    # loads the new version into the model server first: here the stand-in, which loads nothing.
    # retrain_user_share 1: the seeded ratings come from 4 users; the trigger's per-user bound is
    # tested in tests/test_rating_doors.py.
    return Settings(
        redis_url=redis_db.url, llm_model=str(base_model), llm_base_url=f"{standin}/v1", data_dir=tmp_path / "data", retrain_lock_ttl_s=30,
        retrain_user_share=1.0,
    )  # fmt: skip




def test_run_trains_evaluates_promotes_and_moves_the_watermark(settings: Settings, redis_db: RedisServer) -> None:
    seed_ratings(redis_db.url)
    c = redis_db.client
    last_events = events.latest(c)  # each bucket's last event

    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=10, **FAST), progress=False)

    assert outcome.status == "promoted", outcome
    assert outcome.version_id is not None
    version = registry.get(c, outcome.version_id)
    assert version.status == "active" and version.parent is None and version.method == "kto"
    assert version.dataset_version == outcome.dataset_version
    assert version.metrics["candidate"]["accuracy"] > version.metrics["service"]["accuracy"]
    assert version.decision["promote"] is True and version.decision["compared_with"] == "base"
    assert (c.get(keys.active_model()), c.get(keys.active_version())) == (version.served_name, version.id)
    assert version.adapter_path is not None
    assert Path(version.served_name, "config.json").exists() and Path(version.adapter_path, "adapter_config.json").exists()
    assert events.positions(cast("str | None", c.get(keys.retrain_watermark()))) == last_events
    assert {b: [e for e, _ in entries] for b, entries in events.read_after(c, None)} == {b: [e] for b, e in last_events.items()}  # what the run read is trimmed
    assert not c.exists(keys.retrain_lock())
    recorded = runs.recent(c)
    assert [(run.status, run.version_id, run.dataset_version) for run in recorded] == [("promoted", version.id, outcome.dataset_version)]
    assert recorded[0].details["candidate"]["accuracy"] == version.metrics["candidate"]["accuracy"] and recorded[0].seconds > 0

    # Nothing new since: the next scheduled run skips, and changes nothing.
    before = state(c)
    again = job.run(c, settings, RetrainConfig(min_new_ratings=1, **FAST), progress=False)
    assert again.status == "skipped" and "0 new ratings" in again.reason
    assert state(c) == before


def test_a_continued_run_trains_on_the_new_ratings_only(settings: Settings, redis_db: RedisServer) -> None:
    """train_new_only: the second run starts from the adapter in service and trains on the rows
    its dataset lacked, not again on the ones that adapter learned (REAL_RECIPE's cost per cycle)."""
    from training import dataset

    c = redis_db.client
    seed_ratings(redis_db.url)
    first = job.run(c, settings, RetrainConfig(min_new_ratings=0, train_new_only=True, **FAST), progress=False)
    assert first.status == "promoted", first
    assert first.version_id is not None and first.dataset_version is not None
    seed_ratings(redis_db.url, n=24, offset=36)

    second = job.run(c, settings, RetrainConfig(min_new_ratings=0, train_new_only=True, **FAST), progress=False)

    assert second.status in ("promoted", "rejected"), second
    assert second.version_id is not None and second.dataset_version is not None
    root = settings.data_dir.resolve() / "datasets"
    before, after = (len(dataset.load(root, v)["kto_train"]) for v in (first.dataset_version, second.dataset_version))
    trained = registry.get(c, second.version_id).metrics["train"]
    assert registry.get(c, second.version_id).parent == first.version_id
    assert 0 < trained["rows"] == after - before < after, (trained["rows"], before, after)
    assert registry.get(c, first.version_id).metrics["train"]["rows"] == before  # nothing to leave out the first time


def test_a_refused_push_to_hub_is_recorded_and_the_run_stands(settings: Settings, redis_db: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--push-to-hub: the dataset version is written before the upload; a Hub that refuses it (a
    token without write access) leaves the run's result as it is, the refusal recorded with it."""
    import huggingface_hub.constants

    from support.hub import standin_hub

    seed_ratings(redis_db.url)
    c = redis_db.client
    monkeypatch.setenv("HF_TOKEN", "hf_read_only")
    with standin_hub(tmp_path / "hub", refuse=403) as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)  # HF_ENDPOINT, read when huggingface_hub was imported
        outcome = job.run(c, settings, RetrainConfig(min_new_ratings=0, push_to_hub="me/loop-ratings", **FAST), progress=False)

    assert outcome.status == "promoted", outcome
    assert f"dataset {outcome.dataset_version} not pushed to me/loop-ratings" in outcome.reason and "403" in outcome.reason
    (recorded,) = runs.recent(c)
    assert (recorded.status, recorded.reason) == ("promoted", outcome.reason)
    assert recorded.details["push_to_hub"]["repo"] == "me/loop-ratings" and "403" in recorded.details["push_to_hub"]["error"]
    assert (settings.data_dir.resolve() / "datasets" / str(outcome.dataset_version) / "parquet" / "kto_train.parquet").is_file()


def test_the_trigger_counts_answers_not_clicks(settings: Settings, redis_db: RedisServer) -> None:
    """One user flipping a thumb 50 times is one answer whose rating changed, not 50 ratings."""
    ids = seed_ratings(redis_db.url, n=3)
    assert job.new_ratings(redis_db.client) == 3

    async def flip() -> None:
        r = connect(redis_db.url)
        ex = cast("dict[str, str]", redis_db.client.hgetall(keys.exchange("th-0", ids[0])))  # answer 0 is in thread th-0
        for i in range(50):
            await ratings.apply(r, op_id=f"flip{i}", user=ex["user"], thread_id=ex["thread_id"], exchange_id=ids[0], rating=ratings.RatingInput(value=i % 2))
        await r.aclose()

    asyncio.run(flip())
    assert events.count(redis_db.client) == 53
    assert job.new_ratings(redis_db.client) == 3
    outcome = job.run(redis_db.client, settings, RetrainConfig(min_new_ratings=4, **FAST), progress=False)
    assert outcome.status == "skipped" and outcome.reason.startswith("3 new ratings")


def test_a_gate_that_says_no_is_recorded_and_changes_only_the_watermark(settings: Settings, redis_db: RedisServer) -> None:
    seed_ratings(redis_db.url)
    c = redis_db.client
    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=0, margin=1.0, **FAST), progress=False)
    assert outcome.status == "rejected"
    assert outcome.version_id is not None
    version = registry.get(c, outcome.version_id)
    assert version.status == "rejected" and version.decision["promote"] is False
    assert c.get(keys.active_model()) is None and c.get(keys.active_version()) is None  # base still serves
    assert c.get(keys.retrain_watermark()) is not None  # these ratings were used: not trained on again
    with pytest.raises(registry.RegistryError, match="rejected"):
        registry.promote(c, version.id, ModelServer.of(settings))


@pytest.mark.parametrize(
    ("n", "only_liked", "reason"),
    [(4, False, "rated answers"), (20, True, "are thumbs up")],
)
def test_too_few_ratings_or_one_class_skip_with_a_clear_reason(settings: Settings, redis_db: RedisServer, n: int, only_liked: bool, reason: str) -> None:
    ids = seed_ratings(redis_db.url, n=n)
    c = redis_db.client
    if only_liked:  # re-rate every answer up
        async def up() -> None:
            r = connect(redis_db.url)
            for i, ex in enumerate(ids):
                await seed.rate(r, ex, thread=f"th-{i % 12}", user=f"user-{i % 4}", value=1)
            await r.aclose()

        asyncio.run(up())
    before = state(c)
    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=0, **FAST), progress=False)
    assert outcome.status == "skipped" and reason in outcome.reason, outcome
    assert state(c) == before


def test_the_model_is_prepared_only_by_a_run_that_trains_and_a_failure_there_changes_nothing(settings: Settings, redis_db: RedisServer) -> None:
    """`chatbot retrain` converts the default model through prepare_model: a skipped run (the
    schedule's usual tick) must not pay for it; a conversion that fails is a recorded failed run."""
    prepared: list[str] = []
    c = redis_db.client
    seed_ratings(redis_db.url, n=4)
    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=10, **FAST), progress=False, prepare_model=lambda: prepared.append("x"))
    assert outcome.status == "skipped" and prepared == []
    seed_ratings(redis_db.url, offset=4)
    before = state(c)

    def conversion_fails() -> None:
        prepared.append("x")
        raise StartupError("no disk space to convert the default model")

    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=10, **FAST), progress=False, prepare_model=conversion_fails)
    assert outcome.status == "failed" and "no disk space" in outcome.reason and prepared == ["x"]
    assert state(c) == before and runs.recent(c)[0].status == "failed"


def test_registry_pointing_at_missing_files_fails_clearly_and_keeps_serving(settings: Settings, redis_db: RedisServer, tmp_path: Path) -> None:
    seed_ratings(redis_db.url)
    c = redis_db.client
    gone = registry.ModelVersion(id="mv-gone", base_model=settings.llm_model, served_name=str(tmp_path / "deleted-model"), status="active")
    registry.add(c, gone)
    c.set(keys.active_model(), gone.served_name)
    c.set(keys.active_version(), gone.id)
    before = state(c)
    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=0, **FAST), progress=False)
    assert outcome.status == "failed" and "missing files" in outcome.reason and "deleted-model" in outcome.reason
    assert state(c) == before
    with pytest.raises(registry.RegistryError, match="missing"):
        registry.promote(c, gone.id, ModelServer.of(settings))


def test_two_triggers_at_once_make_one_run(settings: Settings, redis_db: RedisServer) -> None:
    seed_ratings(redis_db.url)
    outcomes: list[job.Outcome] = []
    start = threading.Barrier(2)

    def trigger() -> None:
        start.wait()
        outcomes.append(job.run(redis.Redis.from_url(redis_db.url, decode_responses=True), settings, RetrainConfig(min_new_ratings=0, **FAST), progress=False))

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    statuses = sorted(o.status for o in outcomes)
    assert len(statuses) == 2 and statuses[0] in ("promoted", "rejected") and statuses[1] == "skipped", outcomes
    assert any("in progress" in o.reason for o in outcomes)
    assert len(redis_db.client.zrange(keys.model_versions(), 0, -1)) == 1


def test_killed_during_training_changes_nothing_and_the_rerun_succeeds(settings: Settings, redis_db: RedisServer) -> None:
    seed_ratings(redis_db.url)
    c = redis_db.client
    before = state(c)
    assert settings.llm_model is not None
    env = {
        **os.environ,
        "REDIS_URL": redis_db.url,
        "LLM_MODEL": settings.llm_model,
        "DATA_DIR": str(settings.data_dir),
        "RETRAIN_LOCK_TTL_S": "3",
    }
    args = ["--now", "--min-ratings", "10", "--max-user-share", "1.0", "--learning-rate", "5e-3", "--epochs", "50", "--batch-size", "4", "--lora-r", "8", "--max-length", "256"]
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "retrain", *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    models = settings.data_dir / "models"
    try:
        # Training has started once the run has a model directory (the dataset is built before).
        wait_until(lambda: models.exists() and any(models.iterdir()), 120, proc, "retrain subprocess")
        assert c.exists(keys.retrain_lock())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert state(c) == before
    # The crashed run's lock expires; then a rerun succeeds.
    wait_until(lambda: not c.exists(keys.retrain_lock()), 10, what="the lock to expire")
    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=0, **FAST), progress=False)
    assert outcome.status in ("promoted", "rejected"), outcome
    assert c.get(keys.retrain_watermark()) is not None


def test_vllm_gets_the_adapter_at_run_time(settings: Settings, redis_db: RedisServer, standin: str) -> None:
    import httpx

    seed_ratings(redis_db.url)
    vllm = settings.model_copy(update={"llm_base_url": f"{standin}/v1", "vllm_lora": True})
    outcome = job.run(redis_db.client, vllm, RetrainConfig(min_new_ratings=0, **FAST), progress=False)
    assert outcome.status == "promoted", outcome
    assert outcome.version_id is not None
    version = registry.get(redis_db.client, outcome.version_id)
    loads = httpx.get(f"{standin}/lora_loads").json()
    assert loads[-1] == {"lora_name": version.id, "lora_path": version.adapter_path}
    assert redis_db.client.get(keys.active_model()) == version.id == version.served_name


# --- the promoted model serves the next answer, with no restart ------------------------------------


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    group = ServiceGroup(tmp_path_factory.mktemp("job-logs"))
    with group:
        port = free_port()
        model_server.start(group, port)
        yield port


async def test_after_promotion_the_next_answer_comes_from_the_new_version(
    settings: Settings, redis_db: RedisServer, local_server: int, own_services: ServiceGroup, tmp_path: Path
) -> None:
    assert settings.llm_model is not None
    model_server.warm_up(local_server, settings.llm_model, timeout_s=120)
    env = app_env(redis_db.url, f"http://127.0.0.1:{local_server}/v1", tmp_path, LLM_MODEL=settings.llm_model, LLM_MAX_TOKENS="8")
    app = start_app(own_services, env, tmp_path)
    client = ChatClient(app.url)
    await client.login("alice", USERS["alice"])
    await client.connect()
    try:
        before = await client.send("hello")
        assert final_message(before)["metadata"]["model_version"] == "base"

        await asyncio.to_thread(seed_ratings, redis_db.url)
        served = settings.model_copy(update={"llm_base_url": f"http://127.0.0.1:{local_server}/v1"})  # the promotion loads the version there
        outcome = await asyncio.to_thread(job.run, redis_db.client, served, RetrainConfig(min_new_ratings=0, **FAST), progress=False)
        assert outcome.status == "promoted", outcome
        assert outcome.version_id is not None

        after = await client.send("hello again")
        thread_id = client.thread_id
    finally:
        await client.close()
    final = final_message(after)
    assert final["metadata"]["model_version"] == outcome.version_id
    assert thread_id is not None
    stored = redis_db.client.hgetall(keys.exchange(thread_id, final["metadata"]["exchange_id"]))
    assert stored["model_version"] == outcome.version_id
    assert stored["model"] == registry.get(redis_db.client, outcome.version_id).served_name


def test_training_in_two_processes(settings: Settings, redis_db: RedisServer) -> None:
    """processes=2: the training step runs as two DDP processes (torchrun; gloo on a CPU), the job
    reads their result back and carries on as with one."""
    seed_ratings(redis_db.url)
    c = redis_db.client
    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=10, processes=2, **FAST), progress=False)
    assert outcome.status == "promoted", outcome
    assert outcome.version_id is not None
    version = registry.get(c, outcome.version_id)
    assert version.metrics["train"]["processes"] == 2
    assert version.metrics["train"]["dataset_version"] == outcome.dataset_version
    assert Path(version.served_name, "config.json").exists()


def test_a_crash_in_the_training_processes_is_a_failed_run_that_changes_nothing(settings: Settings, redis_db: RedisServer) -> None:
    seed_ratings(redis_db.url)
    c = redis_db.client
    before = state(c)
    broken = settings.model_copy(update={"llm_model": str(settings.data_dir / "no-such-model")})
    outcome = job.run(c, broken, RetrainConfig(min_new_ratings=10, processes=2, **FAST), progress=False)
    assert outcome.status == "failed" and "training in 2 processes failed" in outcome.reason and "train.log" in outcome.reason
    assert state(c) == before


def test_a_held_out_split_the_gate_cannot_use_skips_the_run_and_says_what_to_do(settings: Settings, redis_db: RedisServer) -> None:
    """Every thread's answers share one rating here, and a tiny test_fraction holds out one thread:
    the held-out split has one kind of rating and no pairs, so no model could be compared on it."""
    seed_ratings(redis_db.url)
    c = redis_db.client
    before = state(c)
    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=0, test_fraction=0.01, **FAST), progress=False)
    assert outcome.status == "skipped", outcome
    assert "the gate needs both kinds" in outcome.reason and "chatbot simulate" in outcome.reason and "--test-fraction" in outcome.reason
    assert state(c) == before  # the watermark stays: these ratings count again next time
    assert not (settings.data_dir / "models").exists()  # nothing was trained


def test_a_run_reports_its_progress_for_the_console(settings: Settings, redis_db: RedisServer, tmp_path: Path) -> None:
    """The progress hash the console polls: the run's steps, then "done" with its outcome; the
    training steps with the last loss. A progress write that fails never fails the run."""
    import math

    from feedback import progress

    seed_ratings(redis_db.url)
    c = redis_db.client
    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=10, **FAST), progress=False)
    assert outcome.status in ("promoted", "rejected"), outcome
    assert outcome.version_id is not None
    done = progress.read(c)
    assert done is not None
    assert (done["step"], done["status"]) == ("done", outcome.status) and done["run"].startswith("run-")
    trained_steps = registry.get(c, outcome.version_id).metrics["train"]["steps"]
    assert int(done["train_step"]) == int(done["train_steps"]) == trained_steps > 0
    assert math.isfinite(float(done["loss"]))
    assert float(done["started"]) <= float(done["updated"])

    unreachable = redis.Redis(unix_socket_path=str(tmp_path / "no-redis.sock"), socket_timeout=1)
    job._report(progress.step, unreachable, "collect")  # logged, not raised

"""The product on a real Redis Cluster (three masters, a replica each, started here on loopback
ports) with REDIS_CLUSTER: the keys spread over the masters by bucket (feedback/keys.py), each
master holding its share; the app chats, stores, rates with ownership and resumes through the
cluster clients; the store's scripts, the console's aggregates, collect and a retraining run read
and write every master."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from demo.tiny import build_tiny_model
from feedback import keys, registry, review, stats
from feedback import rating as ratings
from feedback.connection import connect, connect_sync
from feedback.settings import Settings
from launcher.process import ServiceGroup
from support import seed
from support.cluster import Cluster, start_cluster
from support.retrain import BAD, FAST, GOOD, QUESTIONS
from support.services import app_env, start_app
from support.session import final_message, logged_in, run_id
from training import collect, job
from training.config import RetrainConfig


@pytest.fixture(scope="module")
def cluster(services: ServiceGroup, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return start_cluster(services, tmp_path_factory.mktemp("cluster"))


@pytest.fixture
def clean(cluster: Cluster) -> Cluster:
    for node in cluster.masters():
        node.client().flushall()
    return cluster


async def seed_series(url: str, n: int) -> list[str]:
    """n rated answers over 6 threads of 3 users through the app's write paths (cluster client)."""
    r = connect(url, cluster=True)
    try:
        return [
            await seed.seed_exchange(
                r, thread=f"th-{i % 6}", user=f"user-{i % 3}", question=f"{QUESTIONS[i % len(QUESTIONS)]} #{i}", answer=GOOD[i % len(GOOD)] if i % 2 else BAD[i % len(BAD)], value=i % 2
            )
            for i in range(n)
        ]
    finally:
        await r.aclose()


def test_store_scripts_aggregates_collect_and_a_retraining_run(clean: Cluster, standin: str, tmp_path: Path) -> None:
    ids = asyncio.run(seed_series(clean.url, 36))
    c = connect_sync(clean.url, cluster=True)

    async def foreign_rating() -> None:
        r = connect(clean.url, cluster=True)
        try:
            with pytest.raises(ratings.RatingError, match="your own threads"):
                await ratings.apply(r, op_id=seed.new_id(), user="mallory", thread_id="th-0", exchange_id=ids[0], rating=ratings.RatingInput(value=1))
        finally:
            await r.aclose()

    asyncio.run(foreign_rating())
    series = stats.approval(c, "model_version")
    assert (series.totals["base"].liked, series.totals["base"].n) == (18, 36)
    assert review.size(c) == 18 and len(review.queue(c, limit=50)) == 18
    assert sum(len(b) for b in collect.collect(c, None, full=True).batches()) == 36

    model = build_tiny_model(tmp_path / "tiny").resolve()
    settings = Settings(
        redis_url=clean.url, redis_cluster=True, llm_model=str(model), llm_base_url=f"{standin}/v1", data_dir=tmp_path / "data", retrain_lock_ttl_s=30,
        retrain_user_share=1.0,  # 4 raters
    )  # fmt: skip
    outcome = job.run(c, settings, RetrainConfig(min_new_ratings=10, **FAST), progress=False)
    assert outcome.status in ("promoted", "rejected"), outcome
    assert registry.get(c, str(outcome.version_id)).dataset_version == outcome.dataset_version
    assert c.get(keys.retrain_dataset()) == outcome.dataset_version
    assert stats.rebuild(c) == 36 and stats.approval(c, "model_version").totals["base"].n == 36


def test_the_keys_spread_over_the_masters(clean: Cluster) -> None:
    """A few thousand rated answers (the app's scripts, pipelined): each master holds 20-50% of the
    keys, and the readers (the job's full and incremental collect, the console) see all of them."""
    c = connect_sync(clean.url, cluster=True)
    ids = seed.bulk_seed(c, 3000, users=100, turns_per_thread=3)
    held = clean.keys_per_master()
    shares = {node: n / sum(held.values()) for node, n in held.items()}
    print(f"keys per master: {held}")
    assert len(shares) == 3 and all(0.2 <= share <= 0.5 for share in shares.values()), held
    full = collect.collect(c, None, full=True)
    assert sorted(row.exchange_id for batch in full.batches() for row in batch) == sorted(ids)
    assert full.watermark is not None and collect.collect(c, full.watermark).ids == []  # nothing new since
    assert stats.approval(c, "model_version").totals["base"].n == 3000
    down = {e for batch in ratings.rated_sync(c) for _, e, value in batch if value == "0"}
    assert review.size(c) == len(down) and {i.exchange_id for i in review.queue(c, limit=len(down) + 10)} == down


async def test_the_app_chats_rates_and_resumes_on_the_cluster(services: ServiceGroup, clean: Cluster, standin: str, tmp_path: Path) -> None:
    app = start_app(services, app_env(clean.url, f"{standin}/v1", tmp_path, REDIS_CLUSTER="true"), tmp_path)
    alice = await logged_in(app.url)
    try:
        reply = await alice.send("hello over a cluster")
        assert final_message(reply)["output"] == "You said: hello over a cluster"
        answer = run_id(reply)
        rated = await alice.rate(answer, 0, "meh", ["wrong"])
        assert rated.status_code == 200 and rated.json()["stored"] == "redis", rated.text
        c = connect_sync(clean.url, cluster=True)
        thread_id = str(alice.thread_id)
        assert c.hgetall(keys.rating(thread_id, answer))["reasons"] == '["wrong"]'
        assert c.hget(keys.exchange(thread_id, answer), "completion") == "You said: hello over a cluster"
        thread = await alice.get_thread(str(alice.thread_id))
        assert thread.status_code == 200 and any(s.get("output") == "You said: hello over a cluster" for s in thread.json()["steps"])
    finally:
        await alice.close()
    bob = await logged_in(app.url, "bob")
    try:
        refused = await bob.rate(answer, 1, thread_id=str(alice.thread_id))
        assert refused.status_code in (403, 404), refused.text
    finally:
        await bob.close()

"""Pruning old dataset versions (training/retention.py, `chatbot dataset prune`): on a real Redis,
with dataset versions built by the real collect + build, as the retraining job does."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from redis.asyncio import Redis

from feedback import keys
from support.seed import delete_thread, seed_exchange
from support.services import RedisServer, run_cli
from training import retention
from training.collect import collect
from training.config import RetrainConfig
from training.dataset import build, load

OPEN = RetrainConfig(min_ratings=2, max_user_share=1.0)
SECRET = "my home alarm code is SECRET-7781"



def run_build(redis_db: RedisServer, root: Path, since: str | None, previous: str | None) -> tuple[str, str | None]:
    """One dataset build, and the pointer the job's commit moves on success."""
    collected = collect(redis_db.client, since, full=since is None)
    version = build(collected, OPEN, root, previous, progress=False).version
    redis_db.client.set(keys.retrain_dataset(), version)
    return version, collected.watermark


def text_on_disk(root: Path) -> str:
    """Everything stored under root, parquet decompressed."""
    parts = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts.append(str(pq.read_table(path).to_pylist()) if path.suffix == ".parquet" else path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


async def test_full_rebuild_then_prune_erases_a_deleted_thread_from_disk(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    kept = [await seed_exchange(r, thread="t1", user="alice", question=f"q{i}", answer=f"a{i}", value=i % 2) for i in range(4)]
    await seed_exchange(r, thread="t2", user="bob", question=SECRET, answer="noted", value=1)
    v1, mark = run_build(redis_db, root, None, None)
    load(root, v1)  # materialized, as the job does
    assert SECRET in text_on_disk(root)

    await delete_thread(r, "t2")
    v2, _ = run_build(redis_db, root, mark, v1)
    assert SECRET not in str(load(root, v2)["kto_train"].to_list() + load(root, v2)["kto_test"].to_list())
    # Pruning an incremental chain: v1's files go, but v2 is built on v1's shard, which stays.
    pruned = retention.prune(redis_db.client, root, keep=1)
    assert pruned.kept == [v2] and pruned.removed == [v1] and pruned.shards_removed == [] and pruned.bytes_freed > 0
    assert sorted(p.name for p in (root / v1).iterdir()) == ["README.md", "card.json"]
    assert SECRET in text_on_disk(root)

    v3, _ = run_build(redis_db, root, None, None)  # a full rebuild: no shard of the past
    pruned = retention.prune(redis_db.client, root, keep=1)
    assert pruned.kept == [v3] and pruned.removed == [v2] and sorted(pruned.shards_removed) == sorted([v1, v2])
    assert sorted(p.name for p in (root / "shards").iterdir()) == [f"{v3}.parquet", f"{v3}.plan.arrow"]  # sidecars go with their shard
    assert SECRET not in text_on_disk(root)
    data = load(root, v3)
    assert sorted(x["exchange_id"] for x in [*data["kto_train"], *data["kto_test"]]) == sorted(kept)
    assert retention.versions(root) == [v3]


async def test_prune_keeps_the_version_in_service_and_refuses_during_a_run(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    for i in range(4):
        await seed_exchange(r, thread=f"t{i}", user="alice", question=f"q{i}", answer="a", value=i % 2)
    built = [run_build(redis_db, root, None, None)[0] for _ in range(3)]  # three full builds
    redis_db.client.set(keys.retrain_dataset(), built[0])  # rolled back to the oldest, say
    before = text_on_disk(root)

    lock = redis_db.client.lock(keys.retrain_lock(), timeout=30)
    assert lock.acquire(blocking=False)
    with pytest.raises(retention.RetentionError, match="in progress"):
        retention.prune(redis_db.client, root, keep=1)
    assert text_on_disk(root) == before  # nothing removed
    lock.release()

    pruned = retention.prune(redis_db.client, root, keep=2)
    assert pruned.kept == [built[0], built[2]] and pruned.removed == [built[1]] and pruned.shards_removed == [built[1]]
    assert len(load(root, built[0])["kto_train"]) + len(load(root, built[0])["kto_test"]) == 4


def test_cli_prune(redis_db: RedisServer, tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    (root / "ds-20260101-000000-aaaaaa").mkdir(parents=True)
    (root / "ds-20260101-000000-aaaaaa" / "manifest.json").write_text('{"shards": []}')
    env = {**os.environ, "REDIS_URL": redis_db.url, "DATA_DIR": str(tmp_path)}
    done = run_cli("dataset", "prune", "--keep", "1", env=env)
    assert done.returncode == 0 and "kept ds-20260101-000000-aaaaaa; removed 0 version(s)" in done.stdout, done.stdout + done.stderr
    refused = run_cli("dataset", "prune", "--keep", "0", env=env)
    assert refused.returncode == 2 and "keep" in refused.stderr.lower()

"""`chatbot retrain --now` when it cannot train: it says why in the units and flags the user
types, writes no dataset version, and a hint it gives works when followed."""

from __future__ import annotations

import os
import re
from pathlib import Path

from support import seed
from support.services import RedisServer, run_cli
from training.collect import collect
from training.config import RetrainConfig
from training.dataset import DatasetError, build, load


def versions(data: Path) -> list[str]:
    """Dataset versions written under DATA_DIR (the shards folder aside), and the shards."""
    root = data / "datasets"
    shards = root / "shards"
    return sorted(p.name for p in root.iterdir() if p.name != "shards") + sorted(p.name for p in shards.iterdir()) if root.exists() else []


def test_too_few_ratings_skip_in_rows_and_name_the_flag(redis_db: RedisServer, tmp_path: Path) -> None:
    seed.seed_rated_series(redis_db.url, 3, ["good"], ["bad"], lambda i: f"question {i}", threads=3, users=2)
    data = tmp_path / "data"
    result = run_cli("retrain", "--now", env={**os.environ, "REDIS_URL": redis_db.url, "DATA_DIR": str(data)}, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "skipped" in out and "3 rows" in out and "5000" not in out
    assert "(--min-ratings)" in out and "--min-ratings N" in out and "(min_ratings)" not in out
    assert versions(data) == []  # a skipped run writes no dataset version


def test_the_test_fraction_hint_works_when_followed(redis_db: RedisServer, tmp_path: Path) -> None:
    """Six threads of one kind of rating each: the default split holds out only disliked answers,
    and so does --test-fraction 0.5 (the issue's "same skip"). The skip names a fraction that holds
    out both kinds, writes nothing, and a build with that fraction passes the gate's check."""
    seed.seed_rated_series(redis_db.url, 24, ["good answer"], ["bad answer"], lambda i: f"question {i}", threads=6, users=3, paired=False, thread_prefix="c")
    data = tmp_path / "data"
    env = {**os.environ, "REDIS_URL": redis_db.url, "DATA_DIR": str(data)}
    for extra in ([], ["--test-fraction", "0.5"]):
        result = run_cli("retrain", "--now", "--min-ratings", "2", "--max-user-share", "1", *extra, env=env, timeout=120)
        out = result.stdout + result.stderr
        assert result.returncode == 0 and "skipped" in out and "the gate needs both kinds" in out, out
        assert versions(data) == [], out
    hint = re.search(r"add `--test-fraction ([0-9.]+)` to `chatbot retrain`", out)
    assert hint is not None, out
    config = RetrainConfig(min_ratings=2, max_user_share=1.0, test_fraction=float(hint[1]))
    built = build(collect(redis_db.client, None, full=True), config, tmp_path / "followed", None, progress=False, gate=True)
    held_out = load(tmp_path / "followed", built.version)["kto_test"]
    assert set(held_out["label"]) == {True, False}


def test_no_hint_when_no_fraction_would_do(redis_db: RedisServer, tmp_path: Path) -> None:
    """One thread of disliked answers: holding it out leaves training without them, so no
    --test-fraction is offered."""
    seed.seed_rated_series(redis_db.url, 8, ["good answer"], ["bad answer"], lambda i: f"question {i}", threads=2, users=2, paired=False, thread_prefix="c")
    try:
        build(collect(redis_db.client, None, full=True), RetrainConfig(min_ratings=2, max_user_share=1.0), tmp_path, None, progress=False, gate=True)
    except DatasetError as exc:
        assert "no --test-fraction would hold out both kinds" in str(exc)
    else:
        raise AssertionError("the build passed the gate's check")

"""The retraining schedule of `chatbot up`: a `chatbot retrain` subprocess every interval."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from feedback import run as runs
from launcher.process import wait_until
from launcher.schedule import RetrainSchedule
from support.services import RedisServer


def test_schedule_starts_one_run_per_interval_and_the_run_is_recorded(redis_db: RedisServer, tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": redis_db.url, "DATA_DIR": str(tmp_path / "data")}
    schedule = RetrainSchedule(interval_s=1, min_new_ratings=5, env=env, log_path=tmp_path / "retrain.log")
    try:
        assert schedule.tick() is False  # not due yet
        wait_until(schedule.tick, 5, what="the first scheduled run")
        first = schedule.proc
        assert first is not None
        first.wait(timeout=120)
    finally:
        schedule.stop()
    recorded = runs.recent(redis_db.client)
    assert [run.status for run in recorded] == ["skipped"]
    assert "0 new ratings since the last run; waiting for 5" in recorded[0].reason
    assert first.returncode == 0


def test_retrain_demo_starts_from_the_demo_recipe_and_given_options_win() -> None:
    import typer

    from launcher.cli.retrain import parse
    from training.config import DEMO_RECIPE, RetrainConfig

    now, demo, plain = parse(["--now"])
    assert now and not demo and plain == RetrainConfig()
    _, demo, recipe = parse(["--demo"])
    assert demo and all(getattr(recipe, k) == v for k, v in DEMO_RECIPE.items())
    _, _, mixed = parse(["--demo", "--learning-rate", "1e-3", "--min-new-ratings", "7", "--no-scrub-pii", "--method", "dpo"])
    assert (mixed.learning_rate, mixed.min_new_ratings, mixed.scrub_pii, mixed.method) == (1e-3, 7, False, "dpo")
    assert mixed.epochs == DEMO_RECIPE["epochs"]
    with pytest.raises(typer.BadParameter):
        parse(["--method", "ppo"])
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        parse(["--batch-size", "1"])


def test_up_demo_schedules_the_demo_recipe(tmp_path: Path) -> None:
    demo = RetrainSchedule(60, 5, {}, tmp_path / "retrain.log", ["--demo"])
    assert demo.argv[-4:] == ["retrain", "--demo", "--min-new-ratings", "5"]


def test_a_run_request_starts_a_run_at_the_next_tick_and_is_removed(redis_db: RedisServer, tmp_path: Path) -> None:
    """The console's "run now": whatever the interval, the next tick starts `chatbot retrain --now`
    (no minimum of new ratings) and deletes the request; the run reports its progress."""
    from feedback import keys, progress

    c = redis_db.client
    env = {**os.environ, "REDIS_URL": redis_db.url, "DATA_DIR": str(tmp_path / "data")}
    schedule = RetrainSchedule(interval_s=3600, min_new_ratings=5, env=env, log_path=tmp_path / "retrain.log")
    try:
        assert schedule.tick() is False  # nothing asked for, nothing due
        assert progress.request_run(c, "ops") is True
        assert progress.request_run(c, "someone else") is False  # one pending request at a time
        assert schedule.tick() is True
        assert not c.exists(keys.retrain_request())
        run = schedule.proc
        assert run is not None and isinstance(run.args, list) and run.args[-2:] == ["retrain", "--now"]
        assert schedule.tick() is False  # the request was taken once
        run.wait(timeout=120)
    finally:
        schedule.stop()
    assert run.returncode == 0, (tmp_path / "retrain.log").read_text()[-2000:]
    recorded = runs.recent(c)
    assert [r.status for r in recorded] == ["skipped"] and "waiting for" not in recorded[0].reason  # --now: no minimum
    done = progress.read(c)
    assert done is not None and (done["step"], done["status"]) == ("done", "skipped")


def test_a_run_asked_for_does_not_move_the_next_scheduled_run(redis_db: RedisServer, tmp_path: Path) -> None:
    """The console's "run now" (`retrain --now`) starts a run at once; the scheduled one still
    comes when it was due, not an interval after the run asked for."""
    from feedback import progress

    env = {**os.environ, "REDIS_URL": redis_db.url, "DATA_DIR": str(tmp_path / "data")}
    schedule = RetrainSchedule(interval_s=3600, min_new_ratings=5, env=env, log_path=tmp_path / "retrain.log")
    try:
        due = schedule.next_at
        assert schedule.tick() is False
        told = progress.next_run(redis_db.client)  # what the console shows
        assert told is not None and abs(told - (time.time() + due - time.monotonic())) < 5
        assert progress.request_run(redis_db.client, "ops") is True
        assert schedule.tick() is True and schedule.proc is not None
        assert schedule.next_at == due and progress.next_run(redis_db.client) == told
        schedule.proc.wait(timeout=120)
    finally:
        schedule.stop()

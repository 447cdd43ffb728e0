"""The proof: approval per model version and prompt version, from the ratings in Redis."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from feedback import report
from feedback.connection import connect
from support import seed
from support.services import RedisServer, run_cli

MV = "mv-20261121-083823-c16b51"  # a real id's length: the report must print it whole


def test_wilson_interval() -> None:
    low, high = report.wilson(8, 10)
    assert 0.49 < low < 0.5 and 0.94 < high < 0.95  # the textbook values for 8/10
    assert report.wilson(0, 0) == (0.0, 1.0)
    assert report.wilson(10, 10)[1] == pytest.approx(1.0)


def seed_versions(url: str) -> None:
    """base: 3 of 10 liked; MV: 8 of 10 liked, one answer un-rated afterwards."""

    async def go() -> None:
        r = connect(url)
        for i in range(10):
            await seed.seed_exchange(r, thread=f"t{i}", user="u", question=f"q{i}", answer="a", value=int(i < 3), created_at=1_000_000 + i)
        for i in range(11):
            ex = await seed.seed_exchange(
                r, thread=f"t{i}", user="u", question=f"q{i}", answer="b", value=int(i < 8), model_version=MV,
                prompt_version="1.1.0", created_at=1_090_000 + i,
            )
            if i == 10:
                await seed.unrate(r, ex, thread=f"t{i}", user="u")
        await r.aclose()

    asyncio.run(go())


def test_approval_per_model_and_prompt_version(redis_db: RedisServer) -> None:
    seed_versions(redis_db.url)
    rows = report.rated_answers(redis_db.client)
    by_model = {a.group: a for a in report.approval_by(rows, "model_version")}
    assert (by_model["base"].rated, by_model["base"].liked) == (10, 3)
    assert (by_model[MV].rated, by_model[MV].liked) == (10, 8)  # the un-rated answer doesn't count
    assert by_model[MV].low > by_model["base"].rate
    assert [a.group for a in report.approval_by(rows, "prompt_version")] == ["assistant@1.0.0", "assistant@1.1.0"]
    buckets = report.over_time(rows, "model_version", 86400)
    assert sum(a.rated for a in buckets["base"]) == 10


def test_report_command_prints_tables_and_writes_a_png(redis_db: RedisServer, tmp_path: Path) -> None:
    seed_versions(redis_db.url)
    png = tmp_path / "approval.png"
    env = {**os.environ, "REDIS_URL": redis_db.url}
    result = run_cli("report", "--png", str(png), "--bucket-hours", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert "Approval per model version" in result.stdout and "80.0%" in result.stdout and "30.0%" in result.stdout
    assert MV in result.stdout  # not cut to fit the terminal
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

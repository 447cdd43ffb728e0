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


def rated_at(times: list[float], model_version: str = "base") -> list[report.Rated]:
    return [report.Rated(model_version, "assistant@1.1.1", t, i % 2) for i, t in enumerate(times)]


@pytest.mark.parametrize(
    ("span_s", "bucket_s", "most_s"),
    [
        (0, 3600, 2 * 3600),  # one answer: an hour around it, not years
        (6 * 3600, 3600, 8 * 3600),  # a day's ratings: hour buckets
        (30 * 86400, 86400, 33 * 86400),  # a month: days
        (200 * 86400, 7 * 86400, 230 * 86400),  # months: weeks
    ],
)
def test_the_plot_axis_fits_the_data_span(span_s: float, bucket_s: float, most_s: float) -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    start = 1_780_000_000.0
    rows = rated_at([start, start + span_s / 2, start + span_s])
    assert report.auto_bucket_s(rows) == bucket_s
    fig = report.figure(rows)
    try:
        for ax in fig.axes:
            low, high = (mdates.num2date(x).timestamp() for x in ax.get_xlim())
            assert low <= start and high >= start + span_s  # every point in view...
            assert high - low <= most_s  # ...and the axis no wider than the data needs
            assert ax.get_xlabel() == f"time ({report.bucket_label(bucket_s)} buckets)"
            assert all(t.get_text() for t in ax.get_xticklabels()) and len(ax.get_xticklabels()) <= 9
    finally:
        plt.close(fig)


def test_model_list_says_why_each_version_was_decided_whole(redis_db: RedisServer, tmp_path: Path) -> None:
    from feedback import registry

    why = "candidate accuracy 0.612 does not beat the version in service (0.640) by the margin 0.02 on 250 held-out pairs"
    for vid, status, decision in (
        (MV, "rejected", {"promote": False, "reason": why, "margin": 0.02, "compared_with": "base"}),
        ("mv-20261122-101500-aa11bb", "candidate", {"promote": True, "reason": "beats the version in service", "margin": 0.02, "compared_with": "base"}),
    ):
        registry.add(redis_db.client, registry.ModelVersion(id=vid, base_model="m", served_name=str(tmp_path), status=status, decision=decision))
    env = {**os.environ, "REDIS_URL": redis_db.url, "COLUMNS": "80"}
    listed = run_cli("model", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    flat = " ".join(listed.stdout.replace("│", " ").split())
    assert MV in listed.stdout and "mv-20261122-101500-aa11bb" in listed.stdout  # ids whole, on one line
    assert "…" not in listed.stdout  # nothing cut
    assert "decision" in listed.stdout and "does not beat the version in service" in flat and "(vs base, margin 0.02)" in flat

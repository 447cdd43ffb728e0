"""How many ratings a retraining run would train on now, and whether it would skip for lack of data.

`chatbot simulate --until-ratings N` asks this between conversations. It runs the job's own
steps (training/job.py) on every stored rating, into a temporary folder that is then deleted:
collect, the dataset plan (one row per rated answer: the newest rating of each, duplicates and
what passes the per-user cap left out) and the plan's checks, the held-out one included (what
`build(..., gate=True)` asks before the job writes a version). So "usable" is the number the skip message of `retrain` gives, never a
second count kept in step with it. Nothing in DATA_DIR or Redis is changed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis

from training.config import RetrainConfig


@dataclass(frozen=True, slots=True)
class Usable:
    usable: int  # rated answers a run would train on (the dataset's KTO rows)
    rated: int  # rated answers stored (the newest rating of each)
    duplicates: int  # same prompt, answer and thumb as a newer rating: left out
    capped: int  # over the per-user cap (max_user_share): left out
    skip: str | None  # why `retrain --now` would skip with these ratings; None: it would train


def count(r: redis.Redis, config: RetrainConfig) -> Usable:
    """The retraining job's view of every stored rating (a full rebuild's, as a first run sees)."""
    from training import collect
    from training.dataset import DatasetError
    from training.dataset.plan import _check, _check_held_out, _plan
    from training.dataset.shard import _write_shard

    with tempfile.TemporaryDirectory(prefix="loop-usable-") as tmp:
        root = Path(tmp)
        shard = root / "count.parquet"
        _write_shard(shard, collect.collect(r, since=None, full=True), config.scrub_pii, False)
        plan = _plan([shard], config)
        stats = plan.stats
        skip: str | None = None
        try:
            _check(plan, config)
            _check_held_out(plan, config)
        except DatasetError as exc:
            skip = str(exc)
        return Usable(int(plan.summary["kto"]), int(stats["rated"]), int(stats["duplicates"]), int(stats["capped"]), skip)

"""The plan's state on disk (what the next incremental build updates and `load` reads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.config import RetrainConfig

if TYPE_CHECKING:
    from training.dataset.plan import _Plan


DPO_KEYS = ("prompt_hash", "group_key", "message_key", "rated_at")


STATE_ARRAYS = "plan_state"  # a folder of .npy files (memory-mapped when read: no zip, no checksum)


STATE_META = "plan_state.json"


def _settings(config: RetrainConfig) -> list[Any]:
    return [config.max_user_share, config.split_seed, config.test_fraction]


def _write_state(folder: Path, plan: _Plan, config: RetrainConfig) -> None:
    """The plan as the next build updates it (and as `load` reads it): per row its fate and split
    (1 byte each), the DPO pairs as global rows with their sort keys, per-user and per-thread
    counts, and the stats and card counts."""
    arrays = {
        "fate": plan.fate,
        "row_test": plan.row_test,
        "offsets": plan.columns.offsets,
        "dpo_rows": plan.dpo_rows,
        **{f"dpo_{k}": v for k, v in plan.dpo_keys.items()},
        **plan.agg,
    }
    (folder / STATE_ARRAYS).mkdir()
    for name, array in arrays.items():
        np.save(folder / STATE_ARRAYS / f"{name}.npy", array)
    meta = {"rows": plan.columns.n, "settings": _settings(config), "flipped": plan.flipped, "stats": plan.stats, "summary": plan.summary}
    (folder / STATE_META).write_text(json.dumps(meta))


def _read_state(folder: Path) -> dict[str, Any] | None:
    if not (folder / STATE_META).exists() or not (folder / STATE_ARRAYS).exists():
        return None
    arrays = {p.stem: np.load(p, mmap_mode="r") for p in (folder / STATE_ARRAYS).glob("*.npy")}
    return {"arrays": arrays, "meta": json.loads((folder / STATE_META).read_text())}

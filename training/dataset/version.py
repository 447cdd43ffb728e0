"""A dataset version: its record, its error, and where its files are (manifest, shards)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedback.errors import NotEnoughData


class DatasetError(NotEnoughData):
    """The ratings can't make a usable dataset; the message says what to do."""


@dataclass(frozen=True)
class DatasetVersion:
    version: str
    path: Path
    previous: str | None
    counts: dict[str, int]  # kto_train, kto_test, dpo_train, dpo_test, desirable, undesirable
    desirable_weight: float  # for KTOConfig
    undesirable_weight: float
    card: dict[str, Any] = field(repr=False)


def _new_version() -> str:
    return f"ds-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _shard_path(root: Path, version: str) -> Path:
    return root / "shards" / f"{version}.parquet"


def _manifest(root: Path, version: str) -> dict[str, Any]:
    path = root / version / "manifest.json"
    if not path.exists():
        raise DatasetError(f"Dataset version {version} is not under {root} (its files were removed?). Rebuild from all ratings with a full rebuild.")
    return json.loads(path.read_text())

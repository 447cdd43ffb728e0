"""Dataset versions on disk, read for the console without the training code (the chat process
never imports it, nor the `datasets` library): the cards as JSON, the splits with pyarrow.

Layout (training/dataset/__init__.py): <root>/<version>/card.json, README.md and, once the
version was loaded for training, parquet/<split>.parquet for each split with rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("kto_train", "kto_test", "dpo_train", "dpo_test")
# The columns TRL reads: KTO's unpaired preference format and DPO's preference format.
TRL_COLUMNS = {"kto": ("prompt", "completion", "label"), "dpo": ("prompt", "chosen", "rejected")}
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
BATCH_ROWS = 1000


class NoPyarrow(RuntimeError):
    """pyarrow is not installed in the chat process (`make up` installs it)."""


@dataclass
class DatasetInfo:
    version: str
    card: dict[str, Any]
    readme: str
    splits: dict[str, int]  # split -> bytes of its parquet file (materialized splits only)
    problems: list[str] = field(default_factory=list)

    @property
    def created_at(self) -> str:
        return str(self.card.get("created_at") or "")


def versions(root: Path) -> list[str]:
    """Names of the version folders (those with a card), newest name first: no path is ever
    built from a name that is not in this list."""
    if not root.is_dir():
        return []
    return sorted((p.name for p in root.iterdir() if VERSION_NAME.fullmatch(p.name) and (p / "card.json").is_file()), reverse=True)


def read(root: Path, version: str) -> DatasetInfo:
    vdir = root / version
    problems = []
    try:
        card = json.loads((vdir / "card.json").read_text(encoding="utf-8"))
        if not isinstance(card, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        card, problems = {}, [f"card.json unreadable: {exc}"]
    try:
        readme = (vdir / "README.md").read_text(encoding="utf-8")
    except OSError:
        readme = ""
    counts = card.get("counts", {})
    # A split with no rows is not offered (its JSONL would be an empty file, which load_dataset
    # refuses): versions materialized before that rule have an empty parquet file for it.
    splits = {
        s: (vdir / "parquet" / f"{s}.parquet").stat().st_size
        for s in SPLITS
        if (vdir / "parquet" / f"{s}.parquet").is_file() and counts.get(s) != 0
    }
    return DatasetInfo(version, card, readme, splits, problems)


def listing(root: Path) -> list[DatasetInfo]:
    infos = [read(root, v) for v in versions(root)]
    return sorted(infos, key=lambda i: (i.created_at, i.version), reverse=True)


def split_file(root: Path, version: str, split: str) -> Path | None:
    """The parquet file of a split, or None: the version must be one of `versions(root)` and the
    split one of SPLITS (so neither can name another path), and the split offered (`read`: its
    file exists and it has rows)."""
    if split not in SPLITS or version not in versions(root) or split not in read(root, version).splits:
        return None
    return root / version / "parquet" / f"{split}.parquet"


def is_empty(root: Path, version: str, split: str) -> bool:
    """The card of a listed version says the split has no rows."""
    return split in SPLITS and version in versions(root) and read(root, version).card.get("counts", {}).get(split) == 0


def jsonl_rows(path: Path, split: str) -> Iterator[bytes]:
    """The split as JSON lines in TRL's format, streamed one row group batch at a time."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise NoPyarrow("pyarrow is not installed in the chat process: install it (`make up` does) to download JSONL, or download the parquet file") from None
    columns = list(TRL_COLUMNS[split.split("_")[0]])
    parquet = pq.ParquetFile(path)

    def rows() -> Iterator[bytes]:
        try:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                yield "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in batch.to_pylist()).encode()
        finally:
            parquet.close()

    return rows()

"""Removing old dataset versions from disk: `chatbot dataset prune`.

Each retraining run writes a dataset version under `<DATA_DIR>/datasets` (see training.dataset):
a folder with its manifest, plan and materialized splits, and one shard of the rows it collected.
Nothing is ever rewritten, so rows a user later unrated or deleted stay in the older shards and
versions. Pruning keeps the version in service (the retraining pointer in Redis) and the newest
others up to `keep`, deletes every other version's data (its card stays: counts, no text, so the
model registry's lineage still reads; its README is rewritten to say it was pruned, with no
configs naming the deleted parquet files), then every shard no kept manifest lists (with its plan sidecar).

A kept version's manifest lists the shards of all the versions it was built on, so pruning alone
frees nothing of an incremental chain. To erase what users deleted, rebuild from the current
ratings first (`chatbot retrain --now --full-rebuild`: a full rebuild starts from no shards),
then prune with `--keep 1`.

Pruning holds the retraining lock, so it never deletes the shard of a run in progress.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import redis

from feedback import keys
from feedback.errors import ServiceError
from training.dataset.card import _write_readme
from training.dataset.index import SIDECAR_SUFFIX

KEPT_FILES = ("card.json", "README.md")  # what stays of a pruned version: its card


class RetentionError(ServiceError):
    """Pruning cannot run now (a retraining run holds the lock); nothing was removed."""


@dataclass
class Pruned:
    kept: list[str]
    removed: list[str] = field(default_factory=list)
    shards_removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0


def versions(root: Path) -> list[str]:
    """Dataset versions with data on disk, oldest first: by their manifest's write time (a name
    holds the build time to the second only; a manifest is written once)."""
    if not root.is_dir():
        return []
    manifests = [d / "manifest.json" for d in root.iterdir() if (d / "manifest.json").is_file()]
    return [m.parent.name for m in sorted(manifests, key=lambda m: (m.stat().st_mtime_ns, m.parent.name))]


def prune(r: redis.Redis, root: Path, keep: int = 1, lock_ttl_s: int = 600) -> Pruned:
    """Keep the version in service and the newest others up to `keep` versions in all; remove the rest."""
    if keep < 1:
        raise ValueError("keep must be >= 1")
    from training.job import retrain_lock

    lock = retrain_lock(r, lock_ttl_s)
    if not lock.acquire(blocking=False):
        raise RetentionError("a retraining run is in progress: prune after it ends (nothing was removed)")
    try:
        return _prune(root, r.get(keys.retrain_dataset()), keep)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # expired during a very long prune: nothing to release
            pass


def _prune(root: Path, current: str | bytes | None, keep: int) -> Pruned:
    if isinstance(current, bytes):
        current = current.decode()
    on_disk = versions(root)
    kept = [current] if current in on_disk else []
    kept += [v for v in reversed(on_disk) if v not in kept][: keep - len(kept)]
    result = Pruned(kept=[v for v in on_disk if v in kept])
    needed = {shard for v in kept for shard in json.loads((root / v / "manifest.json").read_text())["shards"]}
    for version in on_disk:
        if version in kept:
            continue
        for path in (root / version).iterdir():
            if path.name in KEPT_FILES:
                continue
            result.bytes_freed += _size(path)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        _pruned_readme(root / version)
        result.removed.append(version)
    shards = root / "shards"
    for path in sorted(shards.glob("*.parquet")) if shards.is_dir() else []:
        if path.stem not in needed:
            result.bytes_freed += path.stat().st_size
            path.unlink()
            result.shards_removed.append(path.stem)
    # A shard's plan sidecar (training.dataset: hashes, labels, times; no text) goes with it.
    for path in sorted(shards.glob(f"*{SIDECAR_SUFFIX}")) if shards.is_dir() else []:
        if path.name.removesuffix(SIDECAR_SUFFIX) not in needed:
            result.bytes_freed += path.stat().st_size
            path.unlink()
    return result


def _pruned_readme(vdir: Path) -> None:
    """The card says the version was pruned and its header names no config: the parquet files
    its configs named are gone, and `load_dataset(folder, "kto")` should say so, not miss a file."""
    try:
        _write_readme(vdir, "pruned")
    except (OSError, ValueError, KeyError, TypeError):  # no readable card.json (an older release): a README saying just that
        (vdir / "README.md").write_text(f"# Preference dataset {vdir.name} (pruned)\n\nPruned by `chatbot dataset prune`: its rows are deleted.\n")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

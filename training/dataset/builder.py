"""Build a dataset version: write the new shard, plan over every shard, write the version."""

from __future__ import annotations

import logging
from pathlib import Path

from training.collect import Collected
from training.config import RetrainConfig
from training.dataset.card import _card, _summary, _write_version
from training.dataset.index import _sidecar_path
from training.dataset.plan import _check, _check_held_out, _plan
from training.dataset.shard import _write_shard
from training.dataset.version import DatasetError, DatasetVersion, _manifest, _new_version, _shard_path

log = logging.getLogger(__name__)


def build(collected: Collected, config: RetrainConfig, root: Path, previous_version: str | None, *, progress: bool = True, gate: bool = False) -> DatasetVersion:
    """Write a new dataset version: the previous version's rows updated with `collected`.

    Raises DatasetError, leaving nothing behind, when there is nothing new (incremental), or too
    few ratings, or only one class, or (gate: for the retraining job, whose gate compares models
    on the held-out split) a held-out split with neither pairs nor both kinds of rating.
    """
    if not collected.full and previous_version is None:
        raise DatasetError(
            f"These ratings were collected since event {collected.since}, but no earlier dataset version was given to add them to. "
            "Rebuild from all ratings with a full rebuild."
        )
    root.mkdir(parents=True, exist_ok=True)
    previous = None if collected.full or previous_version is None else _manifest(root, previous_version)
    if previous is not None and not collected.ids and not collected.forgotten:
        raise DatasetError(
            f"No new or changed ratings since dataset version {previous_version} (event {collected.since}): nothing to build. "
            "Wait for more ratings, or rebuild from all ratings with a full rebuild."
        )
    version = _new_version()
    shards = [*(previous["shards"] if previous else []), version]
    shard_path = _shard_path(root, version)
    tmp_shard = shard_path.with_suffix(".tmp")
    placed = False
    try:
        written = _write_shard(tmp_shard, collected, config.scrub_pii, progress)
        plan = _plan([_shard_path(root, s) for s in shards[:-1]] + [tmp_shard], config, root / previous_version if previous and previous_version else None)
        _check(plan, config)
        if gate:
            _check_held_out(plan, config)
        tmp_shard.replace(shard_path)
        placed = True
    finally:
        tmp_shard.unlink(missing_ok=True)
        if not placed:
            _sidecar_path(shard_path).unlink(missing_ok=True)
    card = _card(version, previous_version if previous else None, shards, collected, written, plan, config)
    _write_version(root, version, shards, previous_version if previous else None, plan, card, config)
    built = DatasetVersion(
        version, root / version, card["previous"], card["counts"], card["weights"]["desirable_weight"], card["weights"]["undesirable_weight"], card
    )
    if progress:  # the terminal's view, like the progress bars; the card holds the same
        print(_summary(card))
    else:
        log.info("%s", _summary(card))
    return built

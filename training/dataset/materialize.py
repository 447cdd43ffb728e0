"""`load`: materialize a version's DatasetDict (and parquet files) from its shards, once."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, load_from_disk

from training.dataset.card import _write_readme
from training.dataset.hashes import _key
from training.dataset.plan import KTO, _positions
from training.dataset.schema import DPO_SCHEMA, KTO_SCHEMA, ROW_GROUP, SPLITS, parquet_name
from training.dataset.state import _read_state
from training.dataset.version import DatasetError, _manifest, _shard_path


def load(root: Path, version: str) -> DatasetDict:
    """The version's DatasetDict (kto_train, kto_test, dpo_train, dpo_test), written to
    `<root>/<version>/data` (and `parquet/`) the first time, memory-mapped from there after."""
    vdir = root / version
    data_dir = vdir / "data"
    if (data_dir / "dataset_dict.json").exists():
        return load_from_disk(str(data_dir))
    manifest = _manifest(root, version)
    shard_paths = [_shard_path(root, s) for s in manifest["shards"]]
    kto_plan, dpo_plan = _plan_tables(vdir)
    tmp = vdir / ".materialize.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    splits: dict[str, Dataset] = {}
    for name, is_test in (("train", False), ("test", True)):
        sel = kto_plan.filter(pc.equal(kto_plan["test"], is_test))
        kto_file = tmp / f"kto_{name}.arrow"
        _write_kto(kto_file, shard_paths, sel["shard"].to_numpy(), sel["row"].to_numpy())
        splits[f"kto_{name}"] = Dataset.from_file(str(kto_file))
        pairs = dpo_plan.filter(pc.equal(dpo_plan["test"], is_test))
        dpo_file = tmp / f"dpo_{name}.arrow"
        _write_dpo(dpo_file, splits[f"kto_{name}"], pairs["chosen"].to_numpy(), pairs["rejected"].to_numpy())
        splits[f"dpo_{name}"] = Dataset.from_file(str(dpo_file))
    # TRL's KTO trainer reads its rows in order (sequential sampling) and builds each batch's KL
    # term from the neighbouring rows' answers: rows in shard and thread order would pair answers
    # of one thread. Shuffled once the DPO pairs (positions in the unshuffled split) are written;
    # seeded by the version id in the manifest, so a version always loads in the same order.
    shuffled = tmp / "kto_train.shuffled.arrow"
    _write_shuffled(shuffled, splits["kto_train"], _shuffle(len(splits["kto_train"]), manifest["version"]))
    splits["kto_train"] = Dataset.from_file(str(shuffled))
    dd = DatasetDict({s: splits[s] for s in SPLITS})
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one line per split and format is noise here
    try:
        # An empty split needs one (empty) shard file: with none, load_from_disk fails.
        dd.save_to_disk(str(tmp / "data"), num_shards={s: 1 if len(dd[s]) == 0 else None for s in SPLITS})
        (tmp / "parquet").mkdir()
        for s in SPLITS:  # the files the README's configs name: none for an empty split (load_dataset refuses one)
            if len(dd[s]):
                dd[s].to_parquet(str(tmp / parquet_name(s)))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    shutil.rmtree(vdir / "parquet", ignore_errors=True)
    (tmp / "parquet").replace(vdir / "parquet")
    (tmp / "data").replace(data_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    _write_readme(vdir, "loaded")  # its configs now name files that exist
    return load_from_disk(str(data_dir))


def _plan_tables(vdir: Path) -> tuple[pa.Table, pa.Table]:
    """(shard, row, test) per KTO row and (chosen, rejected, test) per DPO pair (positions in the
    KTO split), from the plan state."""
    state = _read_state(vdir)
    if state is None:  # built by a release before plan states (and never loaded since)
        raise DatasetError(
            f"Dataset version {vdir.name} has no plan state (built by an older release): rebuild it with "
            "`chatbot retrain --now --full-rebuild`, then `chatbot dataset prune` removes the old one."
        )
    a = state["arrays"]
    in_kto, row_test, offsets = a["fate"] == KTO, a["row_test"], a["offsets"]
    kto = np.flatnonzero(in_kto)
    shard = (np.searchsorted(offsets, kto, "right") - 1).astype(np.int32)
    dpo = _positions(in_kto, row_test, a["dpo_rows"])
    return (
        pa.table({"shard": shard, "row": kto - offsets[shard], "test": row_test[kto]}),
        pa.table({"chosen": dpo[:, 0], "rejected": dpo[:, 1], "test": row_test[a["dpo_rows"][:, 0]]}),
    )


def _shuffle(n: int, version: str) -> np.ndarray:
    return np.random.default_rng(_key("shuffle\0" + version)).permutation(n)


def _write_shuffled(path: Path, rows: Dataset, order: np.ndarray) -> None:
    table = rows.data.table  # memory-mapped: one batch of rows in memory at a time
    with pa.ipc.new_stream(str(path), table.schema) as writer:
        for lo in range(0, len(order), ROW_GROUP):
            writer.write_table(table.take(pa.array(order[lo : lo + ROW_GROUP])))


def _assistant(completions: pa.Array) -> pa.Array:
    n = len(completions)
    roles = pa.array(["assistant"] * n, pa.string())
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), pa.StructArray.from_arrays([roles, completions], names=["role", "content"]))


def _write_kto(path: Path, shard_paths: Sequence[Path], shard: np.ndarray, row: np.ndarray) -> None:
    """Stream the chosen rows of each shard, row group by row group, into an Arrow file."""
    columns = ["prompt", "completion", "label", "exchange_id", "thread_id", "user", "prompt_version", "model_version", "rated_at"]
    with pa.ipc.new_stream(str(path), KTO_SCHEMA) as writer:
        for i, shard_path in enumerate(shard_paths):
            wanted = np.sort(row[shard == i])
            if not len(wanted):
                continue
            f = pq.ParquetFile(shard_path)
            start = 0
            for g in range(f.num_row_groups):
                end = start + f.metadata.row_group(g).num_rows
                lo, hi = np.searchsorted(wanted, [start, end])
                if hi > lo:
                    t = f.read_row_group(g, columns=columns).select(columns).take(pa.array(wanted[lo:hi] - start))
                    t = t.set_column(columns.index("completion"), "completion", _assistant(t["completion"].combine_chunks()))
                    writer.write_table(t.cast(KTO_SCHEMA))
                start = end


def _write_dpo(path: Path, kto: Dataset, chosen: np.ndarray, rejected: np.ndarray) -> None:
    table = kto.data.table  # memory-mapped
    with pa.ipc.new_stream(str(path), DPO_SCHEMA) as writer:
        for lo in range(0, len(chosen), ROW_GROUP):
            good = table.take(pa.array(chosen[lo : lo + ROW_GROUP]))
            bad = table.take(pa.array(rejected[lo : lo + ROW_GROUP]))
            batch = pa.table(
                {
                    "prompt": good["prompt"],
                    "chosen": good["completion"],
                    "rejected": bad["completion"],
                    "chosen_exchange_id": good["exchange_id"],
                    "rejected_exchange_id": bad["exchange_id"],
                    "prompt_version": good["prompt_version"],
                },
                schema=DPO_SCHEMA,
            )
            writer.write_table(batch)

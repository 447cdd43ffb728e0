"""Step 2 of the retraining job: turn collected ratings into a versioned preference dataset.

Layout under `root` (the job passes `<DATA_DIR>/datasets`)::

    shards/<version>.parquet   the rows one build collected (PII already scrubbed), plus
                               tombstones for the exchanges it was told to forget; never changed
    shards/<version>.plan.arrow  its sidecar: the plan columns, uncompressed, with each grouping
                               key sorted (no text; derived from the shard, rewritten if missing)
    <version>/manifest.json    the shards this version is made of: the previous version's + its own
    <version>/plan_state/      the plan, one .npy file per array: per shard row (in shard order) its
                               fate (left out by which rule, or a KTO row) and split, the DPO pairs
                               as row numbers with their sort keys, per-user and per-thread counts
    <version>/plan_state.json  the plan's settings, stats and the card's counts (what the next
                               incremental build updates; versions from before it have
                               kto_plan.parquet and dpo_plan.parquet instead, which `load` reads)
    <version>/card.json        machine-readable card: counts, weights, coverage, what was dropped
    <version>/README.md        the same for people
    <version>/data/            DatasetDict (save_to_disk): kto_train, kto_test, dpo_train, dpo_test
    <version>/parquet/         the same four splits as parquet files        (data/ and parquet/
                               are written by `load`, the first time the version is loaded)

What each step costs (N: rows in all of a version's shards, n: rows this build collected):

- build, O(n): read the collected rows from Redis, scrub PII, hash, write them as one shard.
  All of the per-row Python work (text scanning, parsing, serialization) is here.
- build, incremental: the plan is the previous version's plan updated where the new rows' keys
  land (`_plan_update`): the exchanges they re-rate or forget, the duplicate groups rows join or
  leave, the users whose rows changed (all of a user's rows only when the user is over the old
  or the new per-user cap), the threads and the DPO prompt groups whose KTO rows changed; each
  found by a binary search of every shard's sorted sidecar runs. The card's counts are the
  previous version's plus the difference. What still grows with N is memory copies: the
  previous plan state (2 bytes a row) copied, extended and written as .npy files, about 0.015
  CPU-second per million rows (0.13 when every build planned over all rows).
- build, full (no previous version, or one without a plan state, other plan settings, or tiny
  data needing the split's thread move): O(N) but narrow, vectorized and sort-free. It
  memory-maps the shards' sidecars (fixed-width columns: 64-bit keys and hashes, label, times)
  and works out in numpy, without Python per row, which rows survive (newest row per exchange,
  tombstones, duplicates, per-user cap), the split and the DPO pairs. The rows it groups by a key
  come sorted from the sidecars: the earlier shards' big sorted run is merged with the few rows
  since (binary search, one copy), so no build sorts all rows again; each step then finds the
  repeated keys in one pass and works on those rows only. The new shard's sidecar costs
  O(n log n) once.
- load, O(N): materializes the DatasetDict and parquet files from the shards, streaming one row
  group at a time, the first time a version is loaded. Training reads every row anyway.

Full rebuilds (collected.full) start from no shards. Old versions and their shards stay on disk
until `chatbot dataset prune` (training/retention.py) removes them; a user's deleted thread is
absent from every version built after the deletion, and from the disk after a full rebuild and a
prune.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, load_from_disk
from tqdm.auto import tqdm

from feedback.errors import NotEnoughData
from training import pii
from training.collect import Collected, RatedExchange
from training.config import RetrainConfig

ROW_GROUP = 20_000  # most rows per parquet row group or Arrow batch: bounds memory at any size

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SHARD_SCHEMA = pa.schema(
    [
        ("exchange_id", pa.string()),
        ("tombstone", pa.bool_()),  # forget every earlier row of this exchange
        ("thread_id", pa.string()),
        ("user", pa.string()),
        ("prompt_message_id", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt_version", pa.string()),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("prompt", MESSAGES),
        ("completion", pa.string()),
        ("label", pa.bool_()),
        ("created_at", pa.float64()),
        ("rated_at", pa.float64()),
        # 64-bit hashes, so the plan reads fixed-width numbers instead of strings (collisions:
        # ~1e-8 odds at a million rows): of the scrubbed prompt messages (dedup, DPO grouping), the
        # scrubbed completion, and the ids of exchange, thread (split), user (cap), user message.
        ("prompt_hash", pa.uint64()),
        ("completion_hash", pa.uint64()),
        ("exchange_key", pa.uint64()),
        ("thread_key", pa.uint64()),
        ("user_key", pa.uint64()),
        ("message_key", pa.uint64()),
        ("pii", pa.list_(pa.string())),  # placeholders put into this row, e.g. ["[EMAIL]"]
    ]
)
# The columns the plan reads from every shard.
PLAN_COLUMNS = [
    "tombstone", "label", "created_at", "rated_at", "prompt_hash", "completion_hash", "exchange_key", "thread_key", "user_key", "message_key",
    "prompt_version", "model_version", "pii",
]
KTO_SCHEMA = pa.schema(
    [
        ("prompt", MESSAGES),
        ("completion", MESSAGES),
        ("label", pa.bool_()),
        ("exchange_id", pa.string()),
        ("thread_id", pa.string()),
        ("user", pa.string()),
        ("prompt_version", pa.string()),
        ("model_version", pa.string()),
        ("rated_at", pa.float64()),
    ]
)
DPO_SCHEMA = pa.schema(
    [
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("chosen_exchange_id", pa.string()),
        ("rejected_exchange_id", pa.string()),
        ("prompt_version", pa.string()),
    ]
)
SPLITS = ("kto_train", "kto_test", "dpo_train", "dpo_test")
# TRL's KTO guidance: desirable_weight * n_desirable / (undesirable_weight * n_undesirable) within
# [1, 4/3]. Weights aim at the middle of that range, so rounding never takes them out of it.
KTO_RATIO_RANGE = (1.0, 4 / 3)
KTO_TARGET_RATIO = 7 / 6
# Rows any user may contribute whatever max_user_share says: without it, a young deployment with
# one keen tester and a few casual ones would be cut down to a handful of rows.
USER_CAP_FLOOR = 10


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


# --- build ----------------------------------------------------------------------------------------


def build(collected: Collected, config: RetrainConfig, root: Path, previous_version: str | None, *, progress: bool = True) -> DatasetVersion:
    """Write a new dataset version: the previous version's rows updated with `collected`.

    Raises DatasetError, leaving nothing behind, when there is nothing new (incremental), or too
    few ratings, or only one class.
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
        tmp_shard.replace(shard_path)
        placed = True
    finally:
        tmp_shard.unlink(missing_ok=True)
        if not placed:
            _sidecar_path(shard_path).unlink(missing_ok=True)
    card = _card(version, previous_version if previous else None, shards, collected, written, plan, config)
    _write_version(root, version, shards, previous_version if previous else None, plan, card, config)
    built = DatasetVersion(version, root / version, card["previous"], card["counts"], card["weights"]["desirable_weight"], card["weights"]["undesirable_weight"], card)
    print(_summary(card))
    if config.push_to_hub:
        # Needs network and HF_TOKEN: untested offline. The rows are already PII-scrubbed (when
        # scrub_pii is on), but they carry user names: push to a private repo.
        load(root, version).push_to_hub(config.push_to_hub, private=True)
    return built


def _new_version() -> str:
    return f"ds-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _shard_path(root: Path, version: str) -> Path:
    return root / "shards" / f"{version}.parquet"


def _manifest(root: Path, version: str) -> dict[str, Any]:
    path = root / version / "manifest.json"
    if not path.exists():
        raise DatasetError(f"Dataset version {version} is not under {root} (its files were removed?). Rebuild from all ratings with a full rebuild.")
    return json.loads(path.read_text())


# --- the new shard: O(new rows) -------------------------------------------------------------------


def _digest(data: str) -> bytes:
    return hashlib.blake2b(data.encode(), digest_size=16).digest()


@lru_cache(maxsize=32768)  # rows come grouped by thread: a thread's earlier turns hit the cache
def _message(role: str, content: str, scrub: bool) -> tuple[str, tuple[str, ...], bytes]:
    """(scrubbed content, placeholders put in, digest of role and scrubbed content).

    System messages are the operator's prompt spec, not user text: scrubbing a support address
    out of them would train on a prompt that differs from the one in service.
    """
    found: tuple[str, ...] = ()
    if scrub and role != "system":
        content, found = pii.scrub(content)
    return content, found, _digest(role + "\0" + content)


def _u64(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "little")


def _key(text: str) -> int:
    return _u64(_digest(text))


def _cached_key(cache: dict[str, int], text: str) -> int:
    key = cache.get(text)
    if key is None:
        key = cache[text] = _key(text)
    return key


def _batch(rows: Sequence[RatedExchange], scrub: bool, key_cache: dict[str, int]) -> tuple[pa.RecordBatch, Counter[str]]:
    """One shard batch, with the PII placeholders put into it."""
    offsets, roles, contents = [0], [], []
    completions, pii_found, prompt_hashes, completion_hashes = [], [], [], []
    found_here: Counter[str] = Counter()
    # Messages are shared dicts within a batch (collect._Reader): one look-up by identity per
    # message, the cross-batch lru_cache once per distinct message.
    memo: dict[int, tuple[str, tuple[str, ...], bytes]] = {}
    for row in rows:
        found: list[str] = []
        digests = []
        for m in row.messages:
            info = memo.get(id(m))
            if info is None:
                info = memo[id(m)] = _message(m["role"], m["content"], scrub)
            text, f, d = info
            roles.append(m["role"])
            contents.append(text)
            digests.append(d)
            if f:
                found += f
        offsets.append(len(roles))
        text, f, d = _message("assistant", row.completion, scrub)
        completions.append(text)
        found += f
        pii_found.append(found)
        if found:
            found_here.update(found)
        prompt_hashes.append(_u64(hashlib.blake2b(b"".join(digests), digest_size=8).digest()))
        completion_hashes.append(_u64(d))
    prompt = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays([pa.array(roles, pa.string()), pa.array(contents, pa.string())], names=["role", "content"]),
    )
    columns = {name: [getattr(r, name) for r in rows] for name in ("exchange_id", "thread_id", "user", "prompt_message_id", "prompt_id", "prompt_version", "model", "model_version", "created_at", "rated_at")}
    columns.update(
        tombstone=[False] * len(rows),
        prompt=prompt,
        completion=completions,
        label=[r.value == 1 for r in rows],
        prompt_hash=prompt_hashes,
        completion_hash=completion_hashes,
        exchange_key=[_u64(hashlib.blake2b(r.exchange_id.encode(), digest_size=16).digest()) for r in rows],  # _key, inlined
        thread_key=[_cached_key(key_cache, r.thread_id) for r in rows],
        user_key=[_cached_key(key_cache, r.user) for r in rows],
        message_key=[_u64(hashlib.blake2b(r.prompt_message_id.encode(), digest_size=16).digest()) for r in rows],
        pii=pii_found,
    )
    return pa.RecordBatch.from_pydict(columns, schema=SHARD_SCHEMA), found_here


def _tombstones(ids: Sequence[str]) -> pa.RecordBatch:
    """Rows that only say "forget this exchange": texts null, fixed-width columns zero (no nulls
    there, so the plan reads them straight into numpy)."""
    n = len(ids)
    columns: dict[str, Any] = {}
    for f in SHARD_SCHEMA:
        if pa.types.is_floating(f.type) or pa.types.is_integer(f.type):
            columns[f.name] = pa.array(np.zeros(n), f.type)
        elif pa.types.is_boolean(f.type):
            columns[f.name] = pa.array(np.ones(n, bool) if f.name == "tombstone" else np.zeros(n, bool))
        else:
            columns[f.name] = pa.nulls(n, f.type)
    columns["exchange_id"] = pa.array(ids, pa.string())
    columns["exchange_key"] = pa.array([_key(i) for i in ids], pa.uint64())
    return pa.RecordBatch.from_pydict(columns, schema=SHARD_SCHEMA)


def _write_shard(path: Path, collected: Collected, scrub: bool, progress: bool) -> dict[str, Any]:
    """Stream the collected rows (read from Redis batch by batch) into the shard, then tombstones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    found: Counter[str] = Counter()
    key_cache: dict[str, int] = {}  # thread and user keys: a thread's rows come together
    written = 0
    # A full collection lists the ids while the rows are read: no total for the bar then.
    bar = tqdm(total=len(collected.ids) or None, desc="dataset rows", unit="row", disable=not progress, mininterval=1.0)
    with pq.ParquetWriter(path, SHARD_SCHEMA, compression="zstd") as writer, bar:
        for rows in collected.batches():
            if rows:
                batch, found_here = _batch(rows, scrub, key_cache)
                writer.write_batch(batch, row_group_size=ROW_GROUP)
                found.update(found_here)
                written += batch.num_rows
            bar.update(collected.batch)
        gone = collected.forgotten | collected.vanished
        if gone:
            writer.write_batch(_tombstones(sorted(gone)), row_group_size=ROW_GROUP)
    return {"rated": written, "forgotten": len(gone), "pii_replaced": dict(found)}


# --- the plan: O(all rows), narrow, vectorized, without sorting the old rows again ---------------

# Keys the plan groups rows by. Each shard's sidecar holds them sorted (with the row positions), so
# a build merges the big sorted runs of the earlier shards with its own small sorted run (a binary
# search and one copy) instead of sorting every row again: "triple" is (prompt, completion, label)
# for duplicates, the others are columns.
GROUP_KEYS = ("exchange_key", "triple", "user_key", "thread_key", "prompt_hash")
SIDECAR_SUFFIX = ".plan.arrow"


def _sidecar_path(shard: Path) -> Path:
    return shard.with_suffix(SIDECAR_SUFFIX)  # <version>.parquet and <version>.tmp: same sidecar


def _triple(ph: np.ndarray, ch: np.ndarray, label: np.ndarray) -> np.ndarray:
    return ph ^ _mix(ch ^ label.astype(np.uint64))


def _write_sidecar(shard: Path) -> None:
    """The shard's plan columns, uncompressed Arrow (memory-mapped by later builds: ~140 bytes a
    row), with each of GROUP_KEYS sorted ("<key>_sorted") and the rows in that order ("by_<key>").
    Derived from the shard alone, which never changes: a missing sidecar (a shard from before
    sidecars) is simply written again."""
    t = pq.read_table(shard, columns=PLAN_COLUMNS, read_dictionary=["prompt_version", "model_version"]).combine_chunks()
    col = lambda name: t[name].to_numpy(zero_copy_only=False)  # noqa: E731
    t = t.append_column("triple", pa.array(_triple(col("prompt_hash"), col("completion_hash"), col("label")), pa.uint64()))
    for name in GROUP_KEYS:
        key = t[name].to_numpy()
        order = np.argsort(key, kind="stable")
        t = t.append_column(f"by_{name}", pa.array(order.astype(np.int32))).append_column(f"{name}_sorted", pa.array(key[order], pa.uint64()))
    path = _sidecar_path(shard)
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, t.schema) as writer:
        writer.write_table(t, max_chunksize=len(t) or None)
    tmp.replace(path)


def _read_sidecar(shard: Path) -> pa.Table:
    path = _sidecar_path(shard)
    if not path.exists():
        _write_sidecar(shard)
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()  # zero-copy: pages load on use


class _Columns:
    """The plan columns of every row of a version's shards, rows numbered in shard order (the
    global index), read from the shards' memory-mapped sidecars."""

    def __init__(self, shards: Sequence[Path]) -> None:
        self.tables = [_read_sidecar(s) for s in shards]
        sizes = [t.num_rows for t in self.tables]
        self.offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        self.n = int(self.offsets[-1])
        self._cache: dict[str, np.ndarray] = {}
        self._shard_cache: dict[tuple[str, int], np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        """One fixed-width column over all rows (zero-copy from a single shard's sidecar)."""
        if name not in self._cache:
            parts = [t[name].to_numpy(zero_copy_only=False) for t in self.tables]
            self._cache[name] = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0)
        return self._cache[name]

    def arrow(self, name: str) -> list[pa.Array]:
        """A column as one Arrow array per shard (dictionary and list columns)."""
        return [t[name].combine_chunks() for t in self.tables]

    def sorted_by(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys sorted, global indices in that order) over all rows. The largest shard's run is
        taken as stored; the other shards' runs (the builds since it: few rows) are sorted
        together and merged into it: O(rows since that shard * log) plus one copy of the arrays."""
        if not self.tables:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        runs = [(t[f"{name}_sorted"].to_numpy(), t[f"by_{name}"].to_numpy().astype(np.int64) + off) for t, off in zip(self.tables, self.offsets, strict=False)]
        base = max(range(len(runs)), key=lambda i: len(runs[i][0]))
        keys, order = runs[base]
        rest = [r for i, r in enumerate(runs) if i != base]
        if not rest:
            return keys, order
        k = np.concatenate([r[0] for r in rest])
        o = np.concatenate([r[1] for r in rest])
        s = np.lexsort((o, k))  # equal keys: shard order, as a stable sort of all rows would have them
        k, o = k[s], o[s]
        # Equal keys from shards before the base go first, those after it last (stable order).
        before = o < self.offsets[base]
        at = np.where(before, np.searchsorted(keys, k, "left"), np.searchsorted(keys, k, "right"))
        return np.insert(keys, at, k), np.insert(order, at, o)

    def repeated(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys, global indices) of the rows whose key another row has too, sorted by key: the
        largest shard's repeats (one pass over its sorted run, no copy), the other shards' (few
        rows: sorted here), and the keys those share with the largest (binary search)."""
        if not self.tables:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        base = max(range(len(self.tables)), key=lambda i: self.tables[i].num_rows)
        bt, boff = self.tables[base], self.offsets[base]
        bk, bo = bt[f"{name}_sorted"].to_numpy(), bt[f"by_{name}"].to_numpy()
        r = _repeated(bk)
        parts = [(bk[r], bo[r] + boff)]
        rest = [i for i in range(len(self.tables)) if i != base]
        if rest:
            k = np.concatenate([self.tables[i][f"{name}_sorted"].to_numpy() for i in rest])
            o = np.concatenate([self.tables[i][f"by_{name}"].to_numpy() + self.offsets[i] for i in rest])
            s = np.argsort(k, kind="stable")
            k, o = k[s], o[s]
            r = _repeated(k)
            parts.append((k[r], o[r]))
            lo, hi = np.searchsorted(bk, k, "left"), np.searchsorted(bk, k, "right")
            hit = hi > lo
            parts.append((k[hit], o[hit]))
            sizes = (hi - lo)[hit]
            at = np.repeat(lo[hit] - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))  # base positions in [lo, hi)
            parts.append((bk[at], bo[at] + boff))
        keys = np.concatenate([p[0] for p in parts])
        index = np.concatenate([p[1] for p in parts]).astype(np.int64)
        s = np.lexsort((index, keys))
        keys, index = keys[s], index[s]
        once = np.r_[True, (keys[1:] != keys[:-1]) | (index[1:] != index[:-1])] if len(keys) else np.zeros(0, bool)  # a row found twice
        return keys[once], index[once]

    def take(self, name: str, index: np.ndarray) -> np.ndarray:
        """A fixed-width column at a few global indices, without concatenating the shards."""
        index = np.asarray(index, np.int64)
        if len(self.tables) == 1 or name in self._cache:
            return self[name][index]
        shard = np.searchsorted(self.offsets, index, "right") - 1
        parts = []
        for i in range(len(self.tables)):
            sel = shard == i
            if sel.any():
                key = (name, i)
                if key not in self._shard_cache:
                    self._shard_cache[key] = self.tables[i][name].to_numpy(zero_copy_only=False)
                parts.append((sel, self._shard_cache[key][index[sel] - self.offsets[i]]))
        if not parts:
            return self.tables[0][name].to_numpy(zero_copy_only=False)[:0] if self.tables else np.zeros(0)
        out = np.empty(len(index), parts[0][1].dtype)
        for sel, values in parts:
            out[sel] = values
        return out

    def members(self, name: str, keys: np.ndarray) -> np.ndarray:
        """Global indices, sorted, of every row whose `name` key is one of `keys`: a binary search
        of each shard's sorted run, O(len(keys) * log + matches)."""
        keys = np.unique(keys)
        parts = []
        for t, off in zip(self.tables, self.offsets, strict=False):
            sk = t[f"{name}_sorted"].to_numpy()
            lo, hi = np.searchsorted(sk, keys, "left"), np.searchsorted(sk, keys, "right")
            sizes = hi - lo
            hit = sizes > 0
            if not hit.any():
                continue
            lo, sizes = lo[hit], sizes[hit]
            at = np.repeat(lo - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
            parts.append(t[f"by_{name}"].to_numpy()[at].astype(np.int64) + off)
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def shard_row(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard number, row within the shard) of global indices."""
        shard = (np.searchsorted(self.offsets, index, "right") - 1).astype(np.int32)
        return shard, index - self.offsets[shard]


# What happened to each row (the plan's `fate` column): the step that left it out, or KTO.
GONE, DUPLICATE, CAPPED, KTO = 0, 1, 2, 3


@dataclass
class _Plan:
    columns: _Columns  # the plan columns of every shard row
    fate: np.ndarray  # int8 per global row: GONE (superseded, forgotten, tombstone), DUPLICATE, CAPPED or KTO
    row_test: np.ndarray  # bool per global row: its thread is held out (kept rows: their split)
    dpo_rows: np.ndarray  # (n, 2) global rows (chosen, rejected) of the DPO pairs, in order
    dpo_keys: dict[str, np.ndarray]  # per pair: prompt hash, group key, and the rejected row's sort keys
    stats: dict[str, Any]
    summary: dict[str, Any]  # what the card counts over the KTO rows (no pass over the rows needed)
    agg: dict[str, np.ndarray]  # users/user_counts (rows past dedup), threads/thread_counts (KTO rows)/thread_test
    flipped: bool  # tiny data: a thread was moved so that both splits exist
    incremental: bool = False  # updated from the previous version's plan state

    @cached_property
    def in_kto(self) -> np.ndarray:
        """Per global row: a KTO row of the version."""
        return self.fate == KTO

    @cached_property
    def kto(self) -> np.ndarray:
        """Global indices of the KTO rows, in order."""
        return np.flatnonzero(self.in_kto)

    @cached_property
    def kto_test(self) -> np.ndarray:
        return self.row_test[self.kto]

    @cached_property
    def dpo(self) -> np.ndarray:
        """(n, 2) positions of (chosen, rejected) among the KTO rows of the same split."""
        return _positions(self.in_kto, self.row_test, self.dpo_rows)

    @cached_property
    def dpo_test(self) -> np.ndarray:
        return self.row_test[self.dpo_rows[:, 0]]


def _positions(in_kto: np.ndarray, row_test: np.ndarray, dpo_rows: np.ndarray) -> np.ndarray:
    if not len(dpo_rows):
        return np.zeros((0, 2), np.int64)
    test, train = np.cumsum(in_kto & row_test), np.cumsum(in_kto & ~row_test)
    r = dpo_rows
    pos = np.where(row_test[r], test[r] - 1, train[r] - 1)
    return pos.reshape(-1, 2)


def user_cap(counts: np.ndarray, share: float, floor: int = USER_CAP_FLOOR) -> int:
    """Most rows one user may keep: max(floor, c*), c* the largest c with c <= s * sum_u min(n_u, c),
    so that no user has more than a share s of the rows that remain after capping.

    s is max(share, 1/users): with fewer users than 1/share nobody could meet the share (two users
    can't each have at most 20%), so each may then have an equal part. The floor lets small
    datasets exist at all: whatever the share, anyone may contribute `floor` rows.
    """
    if len(counts) == 0:
        return floor
    s = max(share, 1 / len(counts))
    lo, hi = 0, int(counts.max())
    while lo < hi:  # the feasible c form an interval [0, c*]: the sum is concave in c
        mid = (lo + hi + 1) // 2
        if mid <= s * np.minimum(counts, mid).sum() + 1e-9:
            lo = mid
        else:
            hi = mid - 1
    return max(lo, floor)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a seeded, well-spread hash of uint64 keys, vectorized."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def thread_scores(thread_keys: np.ndarray, seed: str) -> np.ndarray:
    """A number in [0, 1) per thread, fixed by (seed, thread): threads below test_fraction are test."""
    seed_key = np.uint64(_u64(_digest("split\0" + seed)))
    return (_mix(thread_keys ^ seed_key) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, size) of each run of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return starts, np.diff(np.r_[starts, len(sorted_keys)])


def _in_repeated_runs(keys: np.ndarray) -> np.ndarray:
    """Indices (into keys) of the values that occur more than once, in key order."""
    order = np.argsort(keys, kind="stable")
    _, sizes = _runs(keys[order])
    member = np.repeat(sizes > 1, sizes)
    return order[member]


def _repeated(sorted_keys: np.ndarray) -> np.ndarray:
    """Positions, in a sorted array, of the values that occur more than once (one pass)."""
    if len(sorted_keys) < 2:
        return np.zeros(0, np.int64)
    eq = sorted_keys[1:] == sorted_keys[:-1]
    return np.flatnonzero(np.r_[eq, False] | np.r_[False, eq])


def _plan(paths: Sequence[Path], config: RetrainConfig, previous: Path | None = None) -> _Plan:
    """Which rows make the version, in which split, and its DPO pairs. With `previous` (the
    previous version's folder, whose shards are `paths[:-1]`), the previous plan is updated where
    the new shard's keys land (see _plan_update); without it, or when that version has no plan
    state, the plan is worked out over all rows. Each step of the full plan takes the rows
    sorted by a 64-bit key from the shards' sidecars (the old rows' sorted runs as stored, merged
    with the new shard's: no sort of all rows), finds the keys that repeat in one pass, and does
    the rest (numpy, no Python per row) only on those few rows."""
    c = _Columns(paths)
    if previous is not None:
        updated = _plan_update(c, config, previous)
        if updated is not None:
            return updated
    n = c.n
    tombstone, label, rated_at = c["tombstone"], c["label"], c["rated_at"]
    fate = np.zeros(n, np.int8)

    # 1. The newest entry of each exchange (the last in shard order) wins; a tombstone removes it.
    # A row alone with its exchange key stays unless it is a tombstone.
    keys, g = c.repeated("exchange_key")
    keep = ~tombstone  # per global row: still in the version
    superseded = forgotten = 0
    if len(g):
        starts, sizes = _runs(keys)
        superseded, forgotten, alive = _exchanges(g, tombstone[g], starts, sizes)
        keep[g] = False
        keep[alive] = True
    stats: dict[str, Any] = {"superseded": superseded, "forgotten": forgotten, "rated": int(keep.sum())}
    fate[keep] = DUPLICATE

    # 2. Duplicates (same prompt, completion and label): the newest rating stays.
    k, g = c.repeated("triple")
    g, k = g[keep[g]], k[keep[g]]
    newest_first = np.lexsort((-g, -rated_at[g], k))
    g, k = g[newest_first], k[newest_first]
    drop = g[np.r_[False, k[1:] == k[:-1]]] if len(g) else g
    keep[drop] = False
    stats["duplicates"] = len(drop)
    fate[keep] = CAPPED

    # 3. Per-user cap: a user over it keeps their newest ratings.
    keys, order = c.sorted_by("user_key")
    starts, sizes = _runs(keys)
    per_user = np.add.reduceat(keep[order], starts, dtype=np.int64) if n else np.zeros(0, np.int64)  # users in key order
    counts = per_user[per_user > 0]
    cap = user_cap(counts, config.max_user_share)
    capped_runs = per_user > cap
    if capped_runs.any():
        member = np.repeat(capped_runs, sizes)
        over, user = order[member], np.repeat(np.arange(len(sizes)), sizes)[member]
        over, user = over[keep[over]], user[keep[over]]
        newest_first = np.lexsort((-over, -rated_at[over], user))
        over, user = over[newest_first], user[newest_first]
        g_starts, g_sizes = _runs(user)
        rank = np.arange(len(over)) - np.repeat(g_starts, g_sizes)
        keep[over[rank >= cap]] = False
    stats.update(user_cap=cap, users=len(counts), capped_users=int((counts > cap).sum()), capped=int(np.maximum(counts - cap, 0).sum()))
    fate[keep] = KTO
    agg = {"users": keys[starts][per_user > 0], "user_counts": counts}
    rows = np.flatnonzero(keep)

    # 4. Split by thread: a thread's rows are all train or all test, fixed by (split_seed, thread).
    thread_key = c["thread_key"]
    row_test = thread_scores(thread_key, config.split_seed) < config.test_fraction
    test = row_test[rows]
    keys, order = c.sorted_by("thread_key")
    starts, _ = _runs(keys)
    per_thread = np.add.reduceat(keep[order], starts, dtype=np.int64) if n else np.zeros(0, np.int64)
    present = per_thread > 0
    threads = keys[starts][present]  # the kept rows' threads, sorted, each once
    thread_test = thread_scores(threads, config.split_seed) < config.test_fraction
    flipped = False
    if len(threads) >= 2 and (test.all() or not test.any()):
        # Tiny data: move the one thread nearest the boundary, so that both splits exist.
        scores = thread_scores(threads, config.split_seed)
        flip = threads[np.argmax(scores)] if test.all() else threads[np.argmin(scores)]
        row_test = np.where(thread_key == flip, ~row_test, row_test)
        test = row_test[rows]
        thread_test = np.where(threads == flip, ~thread_test, thread_test)
        flipped = True
    stats.update(threads=len(threads), test_threads=int(thread_test.sum()))
    agg.update(threads=threads, thread_counts=per_thread[present], thread_test=thread_test)

    # 5. DPO pairs: rows of one split with identical prompts, rated down and up. In each such
    # group, downs and ups are each ordered by (user message, rating time) and matched by rank,
    # so each answer is in at most one pair.
    g = c.repeated("prompt_hash")[1]  # rows whose prompt another row has: the few candidates
    cand = np.sort(g[keep[g]])
    dpo_rows, dpo_keys, stats["contradictory_pairs"] = _pairs(c, cand, row_test[cand])

    kto_test = int(test.sum())
    lab = label[rows]
    d_train, d_all = int((lab & ~test).sum()), int(lab.sum())
    summary = {
        "kto": len(rows), "kto_test": kto_test, "desirable": d_all, "undesirable": len(rows) - d_all,
        "d_train": d_train, "u_train": len(rows) - kto_test - d_train,
        **_time_range(c, rows),
        **{name: _kto_value_counts(c, keep, name) for name in VALUE_COUNTED},
    }
    return _Plan(c, fate, row_test, dpo_rows, dpo_keys, stats, summary, agg, flipped)


VALUE_COUNTED = ("pii", "prompt_version", "model_version")
TIME_RANGE = ("rated_at", "created_at")


def _time_range(c: _Columns, rows: np.ndarray) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in TIME_RANGE:
        values = c.take(name, rows)
        out[f"{name}_min"] = float(values.min()) if len(values) else None
        out[f"{name}_max"] = float(values.max()) if len(values) else None
    return out


def _exchanges(g: np.ndarray, tomb: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[int, int, np.ndarray]:
    """Rows g grouped by exchange key (runs at starts, each in shard order): (older ratings of
    re-rated answers, exchanges unrated or deleted since, the surviving rows)."""
    if not len(g):
        return 0, 0, g
    newest = np.maximum.reduceat(g, starts)
    gone = tomb[starts + sizes - 1]  # per exchange: the newest entry is a tombstone
    data = ~tomb
    superseded = int((data & ~np.repeat(gone, sizes)).sum()) - int((~gone).sum())
    forgotten = int(((np.add.reduceat(data, starts, dtype=np.int64) > 0) & gone).sum())
    return superseded, forgotten, newest[~gone]


def _pairs(c: _Columns, cand: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """The DPO pairs among KTO rows `cand` (global, sorted; `test` their split): (pairs (chosen,
    rejected) as global rows, in order of group key and rank; their keys; contradictory pairs)."""
    ph = c.take("prompt_hash", cand)
    group_key = ph ^ test.astype(np.uint64)  # the split is part of the group
    grouped = _in_repeated_runs(group_key)
    r, group_key = cand[grouped], group_key[grouped]
    label, msg, rated = c.take("label", r), c.take("message_key", r), c.take("rated_at", r)
    # The row itself breaks the last ties: the pairs never depend on how a sort orders equal keys.
    s = np.lexsort((r, rated, msg, label, group_key))
    r, group_key, label, msg, rated = r[s], group_key[s], label[s], msg[s], rated[s]
    g_starts, g_sizes = _runs(group_key)
    downs = np.add.reduceat((~label).astype(np.int64), g_starts) if len(r) else np.zeros(0, np.int64)
    m = np.minimum(downs, g_sizes - downs)  # pairs per group
    group = np.repeat(np.arange(len(g_starts)), m)
    rank = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
    bad = g_starts[group] + rank
    good = g_starts[group] + downs[group] + rank
    ch = c.take("completion_hash", r[np.r_[good, bad]]) if len(good) else np.zeros(0, np.uint64)
    same = ch[: len(good)] == ch[len(good) :]  # the same answer rated both ways: no preference to learn
    good, bad = good[~same], bad[~same]
    keys = {"prompt_hash": c.take("prompt_hash", r[bad]), "group_key": group_key[bad], "message_key": msg[bad], "rated_at": rated[bad]}
    return np.stack([r[good], r[bad]], axis=1).reshape(-1, 2), keys, int(same.sum())


def _add_counts(keys: np.ndarray, counts: np.ndarray, at: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counts per sorted key, `delta` added at keys `at` (new keys inserted, zeros kept): (keys,
    counts, the keys inserted, where they went among the old keys)."""
    uk, inv = np.unique(at, return_inverse=True)
    du = np.bincount(inv, weights=delta, minlength=len(uk)).astype(np.int64)
    pos = np.searchsorted(keys, uk)
    exists = pos < len(keys)
    exists[exists] = keys[pos[exists]] == uk[exists]
    counts = counts.copy()
    counts[pos[exists]] += du[exists]
    return np.insert(keys, pos[~exists], uk[~exists]), np.insert(counts, pos[~exists], du[~exists]), uk[~exists], pos[~exists]


def _value_counts_rows(c: _Columns, name: str, rows: np.ndarray) -> Counter[str]:
    counts: Counter[str] = Counter()
    shard = np.searchsorted(c.offsets, rows, "right") - 1
    for i in np.unique(shard):
        array = c.tables[i][name].combine_chunks().take(pa.array(rows[shard == i] - c.offsets[i]))
        values = pc.list_flatten(array) if pa.types.is_list(array.type) else array
        for v in pc.value_counts(values).to_pylist():
            counts[str(v["values"])] += int(v["counts"])
    return counts


def _plan_update(c: _Columns, config: RetrainConfig, previous: Path) -> _Plan | None:
    """The previous version's plan updated with the last shard's rows, doing work only where the
    new rows' keys land: the exchanges they re-rate or forget, the duplicate groups those rows
    leave or join, the users whose rows changed (all of a user's rows when the user is over the
    old or the new cap), the threads and the DPO prompt groups whose KTO rows changed. Counts for
    the card come from the previous version's aggregates plus the difference. None (work the
    plan out over all rows) when the previous version has no plan state, was planned with other
    settings, or when the split needs the tiny-data thread move."""
    state = _read_state(previous)
    n_old = int(c.offsets[-2]) if len(c.tables) >= 2 else -1
    if state is None or state["meta"]["rows"] != n_old or state["meta"]["settings"] != _settings(config) or state["meta"]["flipped"]:
        return None
    arrays, meta = state["arrays"], state["meta"]
    fate_old = arrays["fate"]
    n = c.n
    new = np.arange(n_old, n)
    fate = np.zeros(n, np.int8)
    fate[:n_old] = fate_old
    stats = dict(meta["stats"])
    def before(rows: np.ndarray) -> np.ndarray:
        out = np.full(len(rows), -1, np.int8)
        o = rows < n_old
        out[o] = fate_old[rows[o]]
        return out

    # 1. Exchanges the new rows re-rate or forget: every earlier row of them goes.
    g1 = c.members("exchange_key", c.take("exchange_key", new))
    k1, tomb1 = c.take("exchange_key", g1), c.take("tombstone", g1)
    s = np.lexsort((g1, k1))
    g1, k1, tomb1 = g1[s], k1[s], tomb1[s]
    starts, sizes = _runs(k1)
    superseded, forgotten, alive = _exchanges(g1, tomb1, starts, sizes)
    old = g1 < n_old
    o_starts, o_sizes = _runs(k1[old])
    o_superseded, o_forgotten, _ = _exchanges(g1[old], tomb1[old], o_starts, o_sizes)
    stats["superseded"] += superseded - o_superseded
    stats["forgotten"] += forgotten - o_forgotten
    left = g1[old][fate_old[g1[old]] >= DUPLICATE]  # alive before, gone now
    fate[g1] = GONE
    fate[alive] = DUPLICATE

    # 2. Duplicate groups the new rows join or the gone rows leave: the newest rating stays.
    g2 = c.members("triple", c.take("triple", np.r_[alive, left]))
    g2 = g2[fate[g2] >= DUPLICATE]
    k2, rated2 = c.take("triple", g2), c.take("rated_at", g2)
    s = np.lexsort((-g2, -rated2, k2))
    g2, k2 = g2[s], k2[s]
    winner = g2[np.r_[True, k2[1:] != k2[:-1]]] if len(g2) else g2
    fate[g2] = DUPLICATE
    was = before(winner)
    fate[winner] = np.where(was >= CAPPED, was, KTO)  # kept before: as it was (for now); newly kept: KTO (for now)
    touched = np.union1d(g1, g2)

    # 3. Per-user cap. Users whose rows past dedup changed get new counts; the cap follows from the
    # counts; a user over the old or the new cap has all of their rows ranked again when their
    # rows or the cap changed. Everyone else keeps every row.
    f_old, f_new = before(touched), fate[touched]
    delta = (f_new >= CAPPED).astype(np.int64) - (f_old >= CAPPED)
    changed = delta != 0
    users, user_counts, _, _ = _add_counts(arrays["users"], arrays["user_counts"], c.take("user_key", touched[changed]), delta[changed])
    old_counts = np.zeros(len(users), np.int64)
    if len(arrays["users"]):
        old_counts[np.searchsorted(users, arrays["users"])] = arrays["user_counts"]
    cap_old = meta["stats"]["user_cap"]
    cap = user_cap(user_counts[user_counts > 0], config.max_user_share)
    moved = np.isin(users, c.take("user_key", touched[changed]))
    again = users[((old_counts > cap_old) | (user_counts > cap)) & (moved | (cap != cap_old))]
    if len(again):
        g3 = c.members("user_key", again)
        g3 = g3[fate[g3] >= CAPPED]
        uk, rated3 = c.take("user_key", g3), c.take("rated_at", g3)
        s = np.lexsort((-g3, -rated3, uk))
        g3, uk = g3[s], uk[s]
        g_starts, g_sizes = _runs(uk)
        rank = np.arange(len(g3)) - np.repeat(g_starts, g_sizes)
        fate[g3] = np.where(rank < cap, KTO, CAPPED)
        touched = np.union1d(touched, g3)
    present = user_counts > 0
    users, user_counts = users[present], user_counts[present]
    f_old, f_new = before(touched), fate[touched]
    stats["rated"] += int((f_new >= DUPLICATE).sum() - (f_old >= DUPLICATE).sum())
    stats["duplicates"] += int((f_new == DUPLICATE).sum() - (f_old == DUPLICATE).sum())
    stats.update(user_cap=cap, users=len(user_counts), capped_users=int((user_counts > cap).sum()), capped=int(np.maximum(user_counts - cap, 0).sum()))

    # 4. Split: fixed per thread; the new rows' threads scored once.
    row_test = np.empty(n, bool)
    row_test[:n_old] = arrays["row_test"]
    row_test[n_old:] = thread_scores(c.take("thread_key", new), config.split_seed) < config.test_fraction
    added, removed = touched[(f_new == KTO) & (f_old != KTO)], touched[(f_old == KTO) & (f_new != KTO)]
    rows = np.r_[added, removed]
    sign = np.r_[np.ones(len(added), np.int64), -np.ones(len(removed), np.int64)]
    threads, thread_counts, inserted, at = _add_counts(arrays["threads"], arrays["thread_counts"], c.take("thread_key", rows), sign)
    thread_test = np.insert(arrays["thread_test"], at, thread_scores(inserted, config.split_seed) < config.test_fraction)
    live = thread_counts > 0
    stats.update(threads=int(live.sum()), test_threads=int((live & thread_test).sum()))

    summary = dict(meta["summary"])
    label, test = c.take("label", rows), row_test[rows]
    summary["kto"] += int(sign.sum())
    summary["kto_test"] += int(sign[test].sum())
    summary["desirable"] += int(sign[label].sum())
    summary["undesirable"] += int(sign[~label].sum())
    summary["d_train"] += int(sign[label & ~test].sum())
    summary["u_train"] += int(sign[~label & ~test].sum())
    if stats["threads"] >= 2 and summary["kto_test"] in (0, summary["kto"]):
        return None  # tiny data: the thread move is worked out over all rows
    for name in TIME_RANGE:
        lo, hi = summary[f"{name}_min"], summary[f"{name}_max"]
        gone_values = c.take(name, removed)
        if len(removed) and (lo is None or (gone_values == lo).any() or (gone_values == hi).any()):
            summary.update({k: v for k, v in _time_range(c, np.flatnonzero(fate == KTO)).items() if k.startswith(name)})
        elif len(added):
            values = c.take(name, added)
            summary[f"{name}_min"] = float(values.min()) if lo is None else min(lo, float(values.min()))
            summary[f"{name}_max"] = float(values.max()) if hi is None else max(hi, float(values.max()))
    for name in VALUE_COUNTED:
        counts: Counter[Any] = Counter(summary[name])
        counts.update(_value_counts_rows(c, name, added))
        counts.subtract(_value_counts_rows(c, name, removed))
        summary[name] = {k: v for k, v in counts.items() if v}

    # 5. DPO pairs: the prompt groups whose KTO rows changed are paired again.
    dpo_rows, dpo_keys = arrays["dpo_rows"], {k: arrays[f"dpo_{k}"] for k in DPO_KEYS}
    prompts = np.unique(c.take("prompt_hash", rows))
    if len(prompts):
        g5 = c.members("prompt_hash", prompts)
        now = g5[fate[g5] == KTO]
        then = g5[before(g5) == KTO]
        new_rows, new_keys, contradictory = _pairs(c, now, row_test[now])
        stats["contradictory_pairs"] += contradictory - _pairs(c, then, row_test[then])[2]
        stay = ~np.isin(dpo_keys["prompt_hash"], prompts)
        dpo_rows = np.concatenate([dpo_rows[stay], new_rows])
        dpo_keys = {k: np.concatenate([dpo_keys[k][stay], new_keys[k]]) for k in DPO_KEYS}
        s = np.lexsort((dpo_rows[:, 1], dpo_keys["rated_at"], dpo_keys["message_key"], dpo_keys["group_key"]))
        dpo_rows, dpo_keys = dpo_rows[s], {k: v[s] for k, v in dpo_keys.items()}
    agg = {"users": users, "user_counts": user_counts, "threads": threads, "thread_counts": thread_counts, "thread_test": thread_test}
    return _Plan(c, fate, row_test, dpo_rows, dpo_keys, stats, summary, agg, False, incremental=True)


DPO_KEYS = ("prompt_hash", "group_key", "message_key", "rated_at")
STATE_ARRAYS = "plan_state"  # a folder of .npy files (memory-mapped when read: no zip, no checksum)
STATE_META = "plan_state.json"


def _settings(config: RetrainConfig) -> list[Any]:
    return [config.max_user_share, config.split_seed, config.test_fraction]


def _write_state(folder: Path, plan: _Plan, config: RetrainConfig) -> None:
    """The plan as the next build updates it (and as `load` reads it): per row its fate and split
    (1 byte each), the DPO pairs as global rows with their sort keys, per-user and per-thread
    counts, and the stats and card counts."""
    arrays = {"fate": plan.fate, "row_test": plan.row_test, "offsets": plan.columns.offsets, "dpo_rows": plan.dpo_rows, **{f"dpo_{k}": v for k, v in plan.dpo_keys.items()}, **plan.agg}
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


def _check(plan: _Plan, config: RetrainConfig) -> None:
    n, up = plan.summary["kto"], plan.summary["desirable"]
    s = plan.stats
    if n < config.min_ratings:
        dropped = f" ({s['rated']} rated; {s['duplicates']} duplicates and {s['capped']} over the per-user cap left out)" if s["rated"] != n else ""
        raise DatasetError(
            f"Only {n} usable rated answers{dropped}; training needs at least {config.min_ratings} (min_ratings). "
            "Collect more ratings, or lower min_ratings."
        )
    if up == 0 or up == n:
        kind = "thumbs up" if up == n else "thumbs down"
        raise DatasetError(
            f"All {n} usable ratings are {kind}: preference training needs both liked and disliked answers. "
            f"Collect some {'thumbs down' if up == n else 'thumbs up'} ratings first."
        )


def class_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) putting the weighted ratio in TRL's [1, 4/3]: the
    minority class is up-weighted, the majority keeps weight 1."""
    if n_desirable == 0 or n_undesirable == 0:
        return 1.0, 1.0
    ratio = n_desirable / n_undesirable
    if KTO_RATIO_RANGE[0] <= ratio <= KTO_RATIO_RANGE[1]:
        return 1.0, 1.0
    if ratio < KTO_RATIO_RANGE[0]:
        return round(KTO_TARGET_RATIO / ratio, 6), 1.0
    return 1.0, round(ratio / KTO_TARGET_RATIO, 6)


# --- card -------------------------------------------------------------------------------------------


def _iso(ts: float | None) -> str | None:
    if ts is None or math.isnan(ts):
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _kto_value_counts(columns: _Columns, in_kto: np.ndarray, name: str) -> dict[str, int]:
    """How often each value of a column (each item, for a list column) occurs in the KTO rows,
    in order of first occurrence: one filter per shard, no per-row Python."""
    counts: dict[str, int] = {}
    for array, lo, hi in zip(columns.arrow(name), columns.offsets[:-1], columns.offsets[1:], strict=False):
        mask = in_kto[lo:hi]
        if not mask.any():
            continue
        if pa.types.is_list(array.type):
            mask = mask & (pc.list_value_length(array).to_numpy(zero_copy_only=False) > 0)  # most rows have no PII
            values = pc.list_flatten(array.filter(pa.array(mask)))
        else:
            values = array.filter(pa.array(mask))
        for v in pc.value_counts(values).to_pylist():
            key = str(v["values"])
            counts[key] = counts.get(key, 0) + int(v["counts"])
    return counts


def _card(version: str, previous: str | None, shards: list[str], collected: Collected, written: dict[str, Any], plan: _Plan, config: RetrainConfig) -> dict[str, Any]:
    m = plan.summary  # counted by the plan: no pass over the rows here
    d_train, u_train, d_all, u_all = m["d_train"], m["u_train"], m["desirable"], m["undesirable"]
    dw, uw = class_weights(d_train, u_train) if d_train and u_train else class_weights(d_all, u_all)
    s = plan.stats
    return {
        "version": version,
        "previous": previous,
        "created_at": _iso(time.time()),
        "shards": shards,
        "source": {"since_event": collected.since, "watermark": collected.watermark, "full": collected.full, "new_events": collected.new_events},
        "this_build": {**written, "skipped_malformed": len(collected.skipped)},
        "counts": {
            "kto_train": m["kto"] - m["kto_test"],
            "kto_test": m["kto_test"],
            "dpo_train": int((~plan.dpo_test).sum()),
            "dpo_test": int(plan.dpo_test.sum()),
            "desirable": d_all,
            "undesirable": u_all,
            "threads": s["threads"],
            "test_threads": s["test_threads"],
            "users": s["users"],
        },
        "weights": {"desirable_weight": dw, "undesirable_weight": uw, "computed_on": "kto_train" if d_train and u_train else "all rows", "ratio_range": [1, 4 / 3]},
        "dropped": {
            "superseded": s["superseded"],
            "forgotten": s["forgotten"],
            "duplicates": s["duplicates"],
            "over_user_cap": s["capped"],
            "contradictory_pairs": s["contradictory_pairs"],
        },
        "user_cap": {"max_user_share": config.max_user_share, "cap_rows_per_user": s["user_cap"], "capped_users": s["capped_users"]},
        "split": {"by": "thread", "split_seed": config.split_seed, "test_fraction": config.test_fraction},
        "pii": {"scrubbed": config.scrub_pii, "replaced": dict(m["pii"])},
        "time_range": {
            "rated_from": _iso(m["rated_at_min"]),
            "rated_to": _iso(m["rated_at_max"]),
            "answered_from": _iso(m["created_at_min"]),
            "answered_to": _iso(m["created_at_max"]),
        },
        "prompt_versions": dict(m["prompt_version"]),
        "model_versions": dict(m["model_version"]),
    }


def _summary(card: dict[str, Any]) -> str:
    c, d, w = card["counts"], card["dropped"], card["weights"]
    pii_text = ", ".join(f"{n} {k}" for k, n in sorted(card["pii"]["replaced"].items())) or "none"
    return (
        f"Dataset {card['version']}: KTO {c['kto_train']} train / {c['kto_test']} test "
        f"({c['desirable']} up, {c['undesirable']} down), DPO pairs {c['dpo_train']} train / {c['dpo_test']} test, "
        f"{c['users']} users, {c['threads']} threads\n"
        f"  this build: {card['this_build']['rated']} rated exchanges read, {card['this_build']['forgotten']} forgotten\n"
        f"  left out: {d['duplicates']} duplicates, {d['over_user_cap']} over the per-user cap "
        f"({card['user_cap']['cap_rows_per_user']} rows/user), {d['superseded']} superseded by newer ratings, "
        f"{d['forgotten']} unrated or deleted, {d['contradictory_pairs']} pairs with the same answer both ways\n"
        f"  PII replaced: {pii_text}; KTO weights: desirable {w['desirable_weight']}, undesirable {w['undesirable_weight']}"
    )


def _readme(card: dict[str, Any]) -> str:
    c, d, tr = card["counts"], card["dropped"], card["time_range"]
    lines = [
        f"# Preference dataset {card['version']}",
        "",
        "Rated answers of the chat assistant, for TRL: KTO rows (`prompt`, `completion`, `label`) for every",
        "rated answer, DPO rows (`prompt`, `chosen`, `rejected`) for real pairs: two answers to identical",
        "prompt messages (a regenerated answer, or the same prompt in another thread of the same split) rated",
        "up and down, each answer in at most one pair. An edited question is a different prompt, so its answers",
        "stay KTO rows only. Built on "
        f"{card['created_at']} from {'all ratings' if card['previous'] is None else 'version ' + card['previous'] + ' and the ratings since'}.",
        "",
        "| split | rows |",
        "|---|---:|",
        *[f"| {s} | {c[s]} |" for s in SPLITS],
        "",
        f"- Ratings: {c['desirable']} up, {c['undesirable']} down, from {c['users']} users in {c['threads']} threads; "
        f"rated {tr['rated_from']} to {tr['rated_to']}, answered {tr['answered_from']} to {tr['answered_to']}.",
        f"- Prompt versions: {', '.join(f'{k} ({v})' for k, v in sorted(card['prompt_versions'].items())) or 'none'}.",
        f"- Model versions: {', '.join(f'{k} ({v})' for k, v in sorted(card['model_versions'].items())) or 'none'}.",
        f"- KTO weights: `desirable_weight={card['weights']['desirable_weight']}`, `undesirable_weight={card['weights']['undesirable_weight']}` "
        "(weighted desirable:undesirable within TRL's recommended 1 to 4/3).",
        f"- Split by thread (`split_seed={card['split']['split_seed']}`, test share {card['split']['test_fraction']}): "
        f"{c['test_threads']} of {c['threads']} threads held out; a thread never straddles the splits.",
        "",
        "## Left out",
        "",
        f"- {d['superseded']} older ratings of re-rated answers (the last rating wins);",
        f"- {d['forgotten']} answers unrated or deleted with their thread;",
        f"- {d['duplicates']} duplicates (same prompt, answer and rating);",
        f"- {d['over_user_cap']} ratings over the per-user cap of {card['user_cap']['cap_rows_per_user']} rows "
        f"({card['user_cap']['capped_users']} users capped, max share {card['user_cap']['max_user_share']}; their newest kept);",
        f"- {d['contradictory_pairs']} candidate pairs whose two answers were the same text rated both ways.",
        "- Rows longer than the trainer's `max_length` tokens are dropped (and counted) by the trainer.",
        "",
        "## Personal data",
        "",
        (
            "Emails, phone numbers, payment card numbers, street addresses and public IP addresses in prompts and answers "
            f"were replaced by placeholders before anything was written: {', '.join(f'{n} {k}' for k, n in sorted(card['pii']['replaced'].items())) or 'none found'} "
            "(counted per row: a message repeated in a thread's later prompts counts again). System messages (the operator's "
            "prompt spec) are kept as served. Names and free-form addresses are not detected; rating comments are not stored. "
            "The `user` column holds login names."
            if card["pii"]["scrubbed"]
            else "PII scrubbing was OFF for this version: texts are as users typed them."
        ),
        "",
    ]
    return "\n".join(lines)


def _write_version(root: Path, version: str, shards: list[str], previous: str | None, plan: _Plan, card: dict[str, Any], config: RetrainConfig) -> None:
    tmp = root / f".{version}.tmp"
    tmp.mkdir(parents=True)
    (tmp / "manifest.json").write_text(json.dumps({"version": version, "previous": previous, "shards": shards}, indent=2))
    _write_state(tmp, plan, config)  # the plan: 2 bytes a row, no encoding (load reads it)
    (tmp / "card.json").write_text(json.dumps(card, indent=2))
    (tmp / "README.md").write_text(_readme(card))
    tmp.replace(root / version)


# --- load: materialize a version --------------------------------------------------------------------


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
    dd = DatasetDict({s: splits[s] for s in SPLITS})
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one line per split and format is noise here
    try:
        # An empty split needs one (empty) shard file: with none, load_from_disk fails.
        dd.save_to_disk(str(tmp / "data"), num_shards={s: 1 if len(dd[s]) == 0 else None for s in SPLITS})
        (tmp / "parquet").mkdir()
        for s in SPLITS:
            dd[s].to_parquet(str(tmp / "parquet" / f"{s}.parquet"))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    shutil.rmtree(vdir / "parquet", ignore_errors=True)
    (tmp / "parquet").replace(vdir / "parquet")
    (tmp / "data").replace(data_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(data_dir))


def _plan_tables(vdir: Path) -> tuple[pa.Table, pa.Table]:
    """(shard, row, test) per KTO row and (chosen, rejected, test) per DPO pair (positions in the
    KTO split): from the plan state, or the plan files of versions built before it."""
    state = _read_state(vdir)
    if state is None:
        return pq.read_table(vdir / "kto_plan.parquet"), pq.read_table(vdir / "dpo_plan.parquet")
    a = state["arrays"]
    in_kto, row_test, offsets = a["fate"] == KTO, a["row_test"], a["offsets"]
    kto = np.flatnonzero(in_kto)
    shard = (np.searchsorted(offsets, kto, "right") - 1).astype(np.int32)
    dpo = _positions(in_kto, row_test, a["dpo_rows"])
    return (
        pa.table({"shard": shard, "row": kto - offsets[shard], "test": row_test[kto]}),
        pa.table({"chosen": dpo[:, 0], "rejected": dpo[:, 1], "test": row_test[a["dpo_rows"][:, 0]]}),
    )


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

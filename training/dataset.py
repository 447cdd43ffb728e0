"""Step 2 of the retraining job: turn collected ratings into a versioned preference dataset.

Layout under `root` (the job passes `<DATA_DIR>/datasets`)::

    shards/<version>.parquet   the rows one build collected (PII already scrubbed), plus
                               tombstones for the exchanges it was told to forget; never changed
    <version>/manifest.json    the shards this version is made of (the previous version's + its own)
    <version>/plan.parquet     which shard rows are in it, in which split (KTO), and its DPO pairs
    <version>/card.json        machine-readable card: counts, weights, coverage, what was dropped
    <version>/README.md        the same for people
    <version>/data/            DatasetDict (save_to_disk): kto_train, kto_test, dpo_train, dpo_test
    <version>/parquet/         the same splits as parquet files

What each step costs (N: rows in all of a version's shards, n: rows this build collected):

- build, O(n): scrub PII, hash and write the new rows as one shard. This is the per-row Python
  work (text scanning, serialization) and the bulk of the bytes.
- build, O(N) but narrow and vectorized: the plan. It reads a few fixed-width columns of every
  shard (ids, user, hashes, label, time) with pyarrow and works out in numpy which rows survive
  (newest row per exchange, tombstones, duplicates, the per-user cap), the split and the DPO
  pairs. Tens of bytes per row, no per-row Python: ~0.1-0.5 s per million rows.
- load, O(N): materializes a version's DatasetDict and parquet files from its shards the first
  time it is asked for (then reads them back from disk). Training reads every row anyway.

Full rebuilds (collected.full) start from no shards. Shards of older versions stay on disk while
a version refers to them: deleting old version folders and unreferenced shards is up to the
operator (a deleted user's rows are absent from every version built after the deletion).
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
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import datasets
from datasets import Dataset, DatasetDict, load_from_disk
from tqdm.auto import tqdm

from training import pii
from training.collect import Collected, RatedExchange
from training.config import RetrainConfig

ROW_GROUP = 20_000  # rows per parquet row group: what load holds in memory per step

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
        ("prompt_hash", pa.uint64()),  # of the scrubbed prompt messages: dedup and DPO grouping
        ("completion_hash", pa.uint64()),
        ("thread_key", pa.uint64()),  # of the thread id: the split, without reading strings
        ("pii", pa.list_(pa.string())),  # placeholders put into this row, e.g. ["[EMAIL]"]
    ]
)
# The columns the plan reads from every shard.
PLAN_COLUMNS = ["exchange_id", "tombstone", "user", "prompt_message_id", "prompt_version", "model_version", "label", "created_at", "rated_at", "prompt_hash", "completion_hash", "thread_key", "pii"]
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


class DatasetError(ValueError):
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
    try:
        written = _write_shard(tmp_shard, collected, config.scrub_pii, progress)
        plan = _plan([_shard_path(root, s) for s in shards[:-1]] + [tmp_shard], config)
        _check(plan, config)
        tmp_shard.replace(shard_path)
    finally:
        tmp_shard.unlink(missing_ok=True)
    card = _card(version, previous_version if previous else None, shards, collected, written, plan, config)
    _write_version(root, version, shards, previous_version if previous else None, plan, card)
    built = DatasetVersion(version, root / version, card["previous"], card["counts"], card["weights"]["desirable_weight"], card["weights"]["undesirable_weight"], card)
    print(_summary(card))
    if config.push_to_hub:
        # Needs network and HF_TOKEN: untested offline. The rows are already PII-scrubbed (when
        # scrub_pii is on), but they carry user names: push to a private repo.
        load(root, version).push_to_hub(config.push_to_hub, private=True)
    return built


def _new_version() -> str:
    return f"ds-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


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


def _batch(rows: Sequence[RatedExchange], scrub: bool, thread_keys: dict[str, int]) -> tuple[pa.RecordBatch, Counter[str]]:
    """One shard batch, with the PII placeholders put into it."""
    offsets, roles, contents = [0], [], []
    completions, pii_found, prompt_hashes, completion_hashes, tkeys = [], [], [], [], []
    found_here: Counter[str] = Counter()
    for row in rows:
        found: list[str] = []
        digests = []
        for m in row.messages:
            role = m["role"]
            text, f, d = _message(role, m["content"], scrub)
            roles.append(role)
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
        key = thread_keys.get(row.thread_id)
        if key is None:
            key = thread_keys[row.thread_id] = _u64(_digest(row.thread_id))
        tkeys.append(key)
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
        thread_key=tkeys,
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
    return pa.RecordBatch.from_pydict(columns, schema=SHARD_SCHEMA)


def _write_shard(path: Path, collected: Collected, scrub: bool, progress: bool) -> dict[str, Any]:
    """Stream the collected rows (read from Redis batch by batch) into the shard, then tombstones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    found: Counter[str] = Counter()
    thread_keys: dict[str, int] = {}
    written = 0
    with pq.ParquetWriter(path, SHARD_SCHEMA, compression="zstd") as writer, tqdm(
        total=len(collected.ids), desc="dataset rows", unit="row", disable=not progress, mininterval=1.0
    ) as bar:
        for rows in collected.batches():
            if rows:
                batch, found_here = _batch(rows, scrub, thread_keys)
                writer.write_batch(batch, row_group_size=ROW_GROUP)
                found.update(found_here)
                written += batch.num_rows
            bar.update(collected.batch)
        gone = collected.forgotten | collected.vanished
        if gone:
            writer.write_batch(_tombstones(sorted(gone)), row_group_size=ROW_GROUP)
    return {"rated": written, "forgotten": len(gone), "pii_replaced": dict(found)}


# --- the plan: O(all rows), narrow, vectorized ----------------------------------------------------


@dataclass
class _Plan:
    table: pa.Table  # PLAN_COLUMNS of every shard row, in shard order, plus shard and row
    kto: np.ndarray  # global indices of the KTO rows, in order
    kto_test: np.ndarray  # bool per KTO row
    dpo: np.ndarray  # (n, 2) positions of (chosen, rejected) among the KTO rows of the same split
    dpo_test: np.ndarray
    stats: dict[str, Any]


def _read_plan_columns(paths: Sequence[Path]) -> pa.Table:
    tables = []
    for i, path in enumerate(paths):
        t = pq.read_table(path, columns=PLAN_COLUMNS)
        n = t.num_rows
        t = t.append_column("shard", pa.array(np.full(n, i, np.int32))).append_column("row", pa.array(np.arange(n, dtype=np.int64)))
        tables.append(t)
    return pa.concat_tables(tables).combine_chunks()


def _codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer codes of a string column (equal strings, equal codes; first seen gets 0)."""
    return pc.dictionary_encode(column).combine_chunks().indices.to_numpy(zero_copy_only=False)


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


def _plan(paths: Sequence[Path], config: RetrainConfig) -> _Plan:
    t = _read_plan_columns(paths)
    n_total = t.num_rows
    tombstone = t["tombstone"].to_numpy(zero_copy_only=False)
    # 1. The newest row of each exchange wins; a tombstone removes it.
    ex = _codes(t["exchange_id"])
    _, last_rev = np.unique(ex[::-1], return_index=True)
    last = np.sort(n_total - 1 - last_rev)
    rows = last[~tombstone[last]]
    gone = np.zeros(len(last_rev), bool)  # per exchange: its newest entry is a tombstone
    gone[ex[last[tombstone[last]]]] = True
    data = ~tombstone
    stats: dict[str, Any] = {
        "shard_rows": int(data.sum()),
        "superseded": int((data & ~gone[ex]).sum()) - len(rows),  # older ratings of re-rated answers
        "forgotten": len(np.unique(ex[data & gone[ex]])),  # answers unrated or deleted since
    }

    rated_at = t["rated_at"].to_numpy(zero_copy_only=False)
    label = t["label"].to_numpy(zero_copy_only=False)
    ph = t["prompt_hash"].to_numpy(zero_copy_only=False)
    ch = t["completion_hash"].to_numpy(zero_copy_only=False)
    stats["rated"] = len(rows)

    # 2. Duplicates (same prompt, completion and label): keep the newest rating.
    order = rows[np.lexsort((-rows, -rated_at[rows], label[rows], ch[rows], ph[rows]))]
    first = np.ones(len(order), bool)
    first[1:] = (ph[order][1:] != ph[order][:-1]) | (ch[order][1:] != ch[order][:-1]) | (label[order][1:] != label[order][:-1])
    rows = np.sort(order[first])
    stats["duplicates"] = int(len(order) - len(rows))

    # 3. Per-user cap: each user's newest ratings are kept.
    users = _codes(t["user"].take(pa.array(rows)))
    counts = np.bincount(users)
    cap = user_cap(counts, config.max_user_share)
    by_user = np.lexsort((-rows, -rated_at[rows], users))  # each user's rows, newest first
    group_start = np.searchsorted(users[by_user], users[by_user], side="left")
    keep = np.empty(len(rows), bool)
    keep[by_user] = (np.arange(len(rows)) - group_start) < cap
    capped_users = int((counts > cap).sum())
    stats.update(user_cap=cap, users=len(counts), capped_users=capped_users, capped=int((~keep).sum()))
    rows = rows[keep]

    # 4. Split by thread: a thread's rows are all train or all test, fixed by (split_seed, thread).
    tk = t["thread_key"].to_numpy(zero_copy_only=False)[rows]
    test = thread_scores(tk, config.split_seed) < config.test_fraction
    threads = np.unique(tk)
    if len(threads) >= 2 and (test.all() or not test.any()):
        # Tiny data: hold out (or keep) the one thread nearest the boundary, so both splits exist.
        scores = thread_scores(threads, config.split_seed)
        flip = threads[np.argmax(scores)] if test.all() else threads[np.argmin(scores)]
        test = np.where(tk == flip, ~test, test)
    stats["threads"] = len(threads)
    stats["test_threads"] = int(len(np.unique(tk[test])))

    # 5. DPO pairs: rows of the same split with identical prompts, one up and one down. Within a
    # prompt, down and up answers are matched in order of (user message, time): regenerated
    # alternatives of one message pair first, and each answer is in at most one pair.
    pmid = _codes(t["prompt_message_id"].take(pa.array(rows)))
    lab, prow, crow = label[rows], ph[rows], ch[rows]
    positions = np.empty(len(rows), np.int64)  # position among the KTO rows of its split
    for flag in (False, True):
        positions[test == flag] = np.arange(int((test == flag).sum()))
    o = np.lexsort((rated_at[rows], pmid, lab, prow, test))  # groups (split, prompt), downs first
    new_group = np.ones(len(o), bool)
    new_group[1:] = (prow[o][1:] != prow[o][:-1]) | (test[o][1:] != test[o][:-1])
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, len(o)))
    downs = np.add.reduceat((~lab[o]).astype(np.int64), starts) if len(o) else np.zeros(0, np.int64)
    m = np.minimum(downs, sizes - downs)  # pairs per group
    group = np.repeat(np.arange(len(starts)), m)
    rank = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
    bad = o[starts[group] + rank]
    good = o[starts[group] + downs[group] + rank]
    same = crow[good] == crow[bad]  # the same answer rated both ways: no preference to learn
    stats["contradictory_pairs"] = int(same.sum())
    good, bad = good[~same], bad[~same]
    dpo = np.stack([positions[good], positions[bad]], axis=1).reshape(-1, 2)
    dpo_test = test[good]
    return _Plan(t, rows, test, dpo, dpo_test, stats)


def _check(plan: _Plan, config: RetrainConfig) -> None:
    labels = plan.table["label"].to_numpy(zero_copy_only=False)[plan.kto]
    n, up = len(labels), int(labels.sum())
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
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _value_counts(column: pa.Array) -> dict[str, int]:
    vc = pc.value_counts(column)
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def _card(version: str, previous: str | None, shards: list[str], collected: Collected, written: dict[str, Any], plan: _Plan, config: RetrainConfig) -> dict[str, Any]:
    t = plan.table.take(pa.array(plan.kto))
    label = t["label"].to_numpy(zero_copy_only=False)
    train = ~plan.kto_test
    d_train, u_train = int(label[train].sum()), int((~label[train]).sum())
    d_all, u_all = int(label.sum()), int((~label).sum())
    dw, uw = class_weights(d_train, u_train) if d_train and u_train else class_weights(d_all, u_all)
    rated_at = t["rated_at"].to_numpy(zero_copy_only=False)
    created_at = t["created_at"].to_numpy(zero_copy_only=False)
    s = plan.stats
    return {
        "version": version,
        "previous": previous,
        "created_at": _iso(time.time()),
        "shards": shards,
        "source": {"since_event": collected.since, "watermark": collected.watermark, "full": collected.full, "new_events": collected.new_events},
        "this_build": {**written, "skipped_malformed": len(collected.skipped)},
        "counts": {
            "kto_train": int(train.sum()),
            "kto_test": int(plan.kto_test.sum()),
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
        "pii": {"scrubbed": config.scrub_pii, "replaced": _value_counts(pc.list_flatten(t["pii"])) if t.num_rows else {}},
        "time_range": {
            "rated_from": _iso(float(rated_at.min())) if len(rated_at) else None,
            "rated_to": _iso(float(rated_at.max())) if len(rated_at) else None,
            "answered_from": _iso(float(created_at.min())) if len(created_at) else None,
            "answered_to": _iso(float(created_at.max())) if len(created_at) else None,
        },
        "prompt_versions": _value_counts(t["prompt_version"]) if t.num_rows else {},
        "model_versions": _value_counts(t["model_version"]) if t.num_rows else {},
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
        "rated answer, DPO rows (`prompt`, `chosen`, `rejected`) for real pairs: two answers to the identical",
        "prompt messages (a regenerated answer, or the same prompt in another thread) rated up and down. An",
        "edited question is a different prompt, so its answers stay KTO rows only. Built on "
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
            f"were replaced by placeholders before anything was written: {', '.join(f'{n} {k}' for k, n in sorted(card['pii']['replaced'].items())) or 'none found'}. "
            "Names and free-form addresses are not detected. The `user` column holds login names."
            if card["pii"]["scrubbed"]
            else "PII scrubbing was OFF for this version: texts are as users typed them."
        ),
        "",
    ]
    return "\n".join(lines)


def _write_version(root: Path, version: str, shards: list[str], previous: str | None, plan: _Plan, card: dict[str, Any]) -> None:
    tmp = root / f".{version}.tmp"
    tmp.mkdir(parents=True)
    (tmp / "manifest.json").write_text(json.dumps({"version": version, "previous": previous, "shards": shards}, indent=2))
    shard = plan.table["shard"].to_numpy()[plan.kto]
    row = plan.table["row"].to_numpy()[plan.kto]
    pq.write_table(pa.table({"shard": shard, "row": row, "test": plan.kto_test}), tmp / "kto_plan.parquet")
    pq.write_table(pa.table({"chosen": plan.dpo[:, 0], "rejected": plan.dpo[:, 1], "test": plan.dpo_test}), tmp / "dpo_plan.parquet")
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
    kto_plan = pq.read_table(vdir / "kto_plan.parquet")
    dpo_plan = pq.read_table(vdir / "dpo_plan.parquet")
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

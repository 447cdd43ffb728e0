"""The new shard, O(new rows): the collected rows, PII scrubbed and hashed, plus tombstones."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from training import pii
from training.collect import Collected, RatedExchange
from training.dataset.hashes import _cached_key, _digest, _key, _u64
from training.dataset.schema import ROW_GROUP, SHARD_SCHEMA


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
    columns = {
        name: [getattr(r, name) for r in rows]
        for name in ("exchange_id", "thread_id", "user", "prompt_message_id", "prompt_id", "prompt_version", "model", "model_version", "created_at", "rated_at")
    }
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
    bar = tqdm(total=len(collected.ids) or None, desc="dataset rows", unit=" rows", disable=not progress, mininterval=1.0)
    with pq.ParquetWriter(path, SHARD_SCHEMA, compression="zstd") as writer, bar:
        for rows in collected.batches():
            if rows:
                batch, found_here = _batch(rows, scrub, key_cache)
                writer.write_batch(batch, row_group_size=ROW_GROUP)
                found.update(found_here)
                written += batch.num_rows
            # The answers read, not the batch size asked for (a last batch is shorter; rows that
            # vanished meanwhile were read too); with no total, the rows found.
            bar.update(min(collected.batch, bar.total - bar.n) if bar.total else len(rows))
        gone = collected.forgotten | collected.vanished
        if gone:
            writer.write_batch(_tombstones(sorted(gone)), row_group_size=ROW_GROUP)
    return {"rated": written, "forgotten": len(gone), "pii_replaced": dict(found)}

"""Each shard's sidecar index (its plan columns with every grouping key sorted) and the
columns of all of a version's shards read through them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from training.dataset.hashes import _mix
from training.dataset.schema import PLAN_COLUMNS

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

"""The plan: which rows survive (newest per exchange, tombstones, duplicates, per-user cap),
the thread split and the DPO pairs; a full plan over every row, or the previous plan updated
where the new rows land.

Each rule is written once and applied to a group of rows sorted by their key:

    1. _exchanges     the newest entry of each exchange wins; a tombstone removes it
    2. _newest        duplicates (same prompt, completion, label): the newest rating stays
    3. _newest_rank   + user_cap: a user over the cap keeps their newest ratings
    4. _held_out      the split: a thread's rows are all train or all test
    5. _pairs         DPO pairs within a prompt group of one split

`_plan` hands each rule every row whose key repeats (a row alone with its key passes every
rule but the tombstone and the cap); `_plan_update` hands it only the groups the new shard's rows
land in, and adds the difference to the previous plan's counts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.config import RetrainConfig
from training.dataset.hashes import _digest, _mix, _u64
from training.dataset.index import _Columns, _in_repeated_runs, _runs
from training.dataset.schema import USER_CAP_FLOOR
from training.dataset.state import DPO_KEYS, _read_state, _settings
from training.dataset.version import DatasetError

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


def thread_scores(thread_keys: np.ndarray, seed: str) -> np.ndarray:
    """A number in [0, 1) per thread, fixed by (seed, thread): threads below test_fraction are test."""
    seed_key = np.uint64(_u64(_digest("split\0" + seed)))
    return (_mix(thread_keys ^ seed_key) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _held_out(thread_keys: np.ndarray, config: RetrainConfig) -> np.ndarray:
    """Rule 4, per thread key: its rows are test (fixed by the split seed and the thread)."""
    return thread_scores(thread_keys, config.split_seed) < config.test_fraction


def _newest(rows: np.ndarray, keys: np.ndarray, rated_at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rule 2 over `rows` (global, with their keys and rating times): (the rows newest first within
    each key, mask of the first of each key). Equal times: the later row is newer."""
    rows, first = _newest_rank(rows, keys, rated_at)
    return rows, first == 0


def _newest_rank(rows: np.ndarray, keys: np.ndarray, rated_at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rule 3's order over `rows`: (the rows grouped by key, newest first in each; each row's rank
    in its group, 0 the newest). A user over the cap keeps the rows ranked below it."""
    s = np.lexsort((-rows, -rated_at, keys))
    rows, keys = rows[s], keys[s]
    starts, sizes = _runs(keys)
    return rows, np.arange(len(rows)) - np.repeat(starts, sizes)


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
    g, first = _newest(g, k, rated_at[g])
    drop = g[~first]
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
        over, user = order[member], keys[member]
        over, user = over[keep[over]], user[keep[over]]
        over, rank = _newest_rank(over, user, rated_at[over])
        keep[over[rank >= cap]] = False
    stats.update(user_cap=cap, users=len(counts), capped_users=int((counts > cap).sum()), capped=int(np.maximum(counts - cap, 0).sum()))
    fate[keep] = KTO
    agg = {"users": keys[starts][per_user > 0], "user_counts": counts}
    rows = np.flatnonzero(keep)

    # 4. Split by thread: a thread's rows are all train or all test, fixed by (split_seed, thread).
    thread_key = c["thread_key"]
    row_test = _held_out(thread_key, config)
    test = row_test[rows]
    keys, order = c.sorted_by("thread_key")
    starts, _ = _runs(keys)
    per_thread = np.add.reduceat(keep[order], starts, dtype=np.int64) if n else np.zeros(0, np.int64)
    present = per_thread > 0
    threads = keys[starts][present]  # the kept rows' threads, sorted, each once
    thread_test = _held_out(threads, config)
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
        "kto": len(rows),
        "kto_test": kto_test,
        "desirable": d_all,
        "undesirable": len(rows) - d_all,
        "d_train": d_train,
        "u_train": len(rows) - kto_test - d_train,
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
    g2, first = _newest(g2, c.take("triple", g2), c.take("rated_at", g2))
    winner = g2[first]
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
        g3, rank = _newest_rank(g3, c.take("user_key", g3), c.take("rated_at", g3))
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
    row_test[n_old:] = _held_out(c.take("thread_key", new), config)
    added, removed = touched[(f_new == KTO) & (f_old != KTO)], touched[(f_old == KTO) & (f_new != KTO)]
    rows = np.r_[added, removed]
    sign = np.r_[np.ones(len(added), np.int64), -np.ones(len(removed), np.int64)]
    threads, thread_counts, inserted, at = _add_counts(arrays["threads"], arrays["thread_counts"], c.take("thread_key", rows), sign)
    thread_test = np.insert(arrays["thread_test"], at, _held_out(inserted, config))
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


def _check(plan: _Plan, config: RetrainConfig) -> None:
    n, up = plan.summary["kto"], plan.summary["desirable"]
    s = plan.stats
    if n < config.min_ratings:
        dropped = f" ({s['rated']} rated; {s['duplicates']} duplicates and {s['capped']} over the per-user cap left out)" if s["rated"] != n else ""
        raise DatasetError(
            f"Only {n} usable rated answers{dropped}; training needs at least {config.min_ratings} (--min-ratings). "
            "Collect more ratings (e.g. `chatbot simulate`), or lower it: `chatbot retrain --now --min-ratings N`."
        )
    if up == 0 or up == n:
        kind = "thumbs up" if up == n else "thumbs down"
        raise DatasetError(
            f"All {n} usable ratings are {kind}: preference training needs both liked and disliked answers. "
            f"Collect some {'thumbs down' if up == n else 'thumbs up'} ratings first."
        )


def _check_held_out(plan: _Plan, config: RetrainConfig) -> None:
    """The gate compares models on held-out pairs or on held-out liked and disliked answers; with
    neither, a run could only be rejected: DatasetError before anything is written, with a
    --test-fraction that works (the smallest that holds out a thread with a liked answer and one
    with a disliked one, keeping both kinds in training) when there is one."""
    kto = plan.kto
    labels, test = plan.columns.take("label", kto).astype(bool), plan.kto_test
    liked, held = int((labels & test).sum()), int(test.sum())
    if (len(plan.dpo_rows) and plan.dpo_test.any()) or 0 < liked < held:
        return
    hint = _test_fraction_hint(plan.columns.take("thread_key", kto), labels, config)
    fix = f"or hold out more threads: add `--test-fraction {hint:g}` to `chatbot retrain`" if hint else "then retrain (no --test-fraction would hold out both kinds here)"
    raise DatasetError(
        f"the held-out split (a {config.test_fraction:g} share of the threads) has {liked} liked and {held - liked} "
        f"disliked answers and no preference pairs: the gate needs both kinds to compare models. Rate more answers "
        f"(e.g. run `chatbot simulate` again) and retrain, {fix}."
    )


def _test_fraction_hint(thread_keys: np.ndarray, labels: np.ndarray, config: RetrainConfig) -> float | None:
    """The smallest test_fraction (2 decimals) under which the threads held out (score below it)
    hold a liked and a disliked answer while those left to train on hold both too; None if none."""
    score = thread_scores(thread_keys, config.split_seed)
    if labels.all() or not labels.any():
        return None
    need = max(score[labels].min(), score[~labels].min())  # held out: every thread scoring below the fraction
    fraction = math.floor(need * 100 + 1) / 100  # above `need`, on a round number
    train = score >= fraction
    if fraction >= 1 or not (labels[train].any() and (~labels[train]).any()):
        return None
    return fraction


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

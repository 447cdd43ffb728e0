"""The dataset plan (which rows, which split, which DPO pairs) against a plain-Python reference of
its rules, on random multi-shard histories: re-ratings across shards, tombstones, duplicates, a
user over the cap, regenerated answers rated apart, ties. The plan reads each shard's sidecar
(sorted keys, merged across shards): it must give what the rules say whatever the shard sizes,
with or without sidecars written beforehand. An incremental plan (the previous version's plan state
updated with the new shard) must give exactly what a full plan of the same shards gives."""

from __future__ import annotations

import random
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from training import dataset
from training.collect import Collected, RatedExchange
from training.config import RetrainConfig
from training.dataset import PLAN_COLUMNS, thread_scores, user_cap
from training.dataset.card import _card
from training.dataset.index import _sidecar_path
from training.dataset.materialize import _plan_tables
from training.dataset.plan import _Plan, _plan
from training.dataset.shard import _write_shard
from training.dataset.state import _write_state
from training.dataset.version import _shard_path


def reference(paths: list[Path], config: RetrainConfig) -> dict[str, Any]:
    """The plan's rules, row by row (see training/dataset/plan.py: _plan's five steps)."""
    rows: list[dict[str, Any]] = []
    for p in paths:
        rows += pq.read_table(p, columns=PLAN_COLUMNS).to_pylist()
    # 1. The newest entry of each exchange wins; a tombstone removes the exchange.
    newest: dict[int, int] = {}
    with_data: set[int] = set()
    for i, r in enumerate(rows):
        newest[r["exchange_key"]] = i
        if not r["tombstone"]:
            with_data.add(r["exchange_key"])
    alive = sorted(i for i in newest.values() if not rows[i]["tombstone"])
    stats: dict[str, Any] = {
        "superseded": sum(1 for r in rows if not r["tombstone"] and not rows[newest[r["exchange_key"]]]["tombstone"]) - len(alive),
        "forgotten": sum(1 for k, i in newest.items() if rows[i]["tombstone"] and k in with_data),
        "rated": len(alive),
    }
    # 2. Duplicates (prompt, completion, label): the newest rating (then the later row) stays.
    best: dict[tuple[int, int, bool], int] = {}
    for i in alive:
        r = rows[i]
        dup = (r["prompt_hash"], r["completion_hash"], r["label"])
        if dup not in best or (r["rated_at"], i) > (rows[best[dup]]["rated_at"], best[dup]):
            best[dup] = i
    kept = sorted(best.values())
    stats["duplicates"] = len(alive) - len(kept)
    # 3. Per-user cap: each user keeps their newest `cap` rows.
    by_user: dict[int, list[int]] = defaultdict(list)
    for i in kept:
        by_user[rows[i]["user_key"]].append(i)
    counts = np.array([len(by_user[u]) for u in sorted(by_user)], np.int64)
    cap = user_cap(counts, config.max_user_share)
    final = sorted(i for idx in by_user.values() for i in sorted(idx, key=lambda i: (rows[i]["rated_at"], i), reverse=True)[:cap])
    stats.update(user_cap=cap, users=len(by_user), capped_users=int((counts > cap).sum()), capped=int(np.maximum(counts - cap, 0).sum()))
    # 4. Split by thread; with every thread on one side, the one nearest the boundary moves.
    threads = sorted({rows[i]["thread_key"] for i in final})
    score = {t: float(thread_scores(np.array([t], np.uint64), config.split_seed)[0]) for t in threads}
    test_thread = {t: score[t] < config.test_fraction for t in threads}
    if len(threads) >= 2 and len(set(test_thread.values())) == 1:
        flip = max(threads, key=score.__getitem__) if test_thread[threads[0]] else min(threads, key=score.__getitem__)
        test_thread[flip] = not test_thread[flip]
    test = [test_thread[rows[i]["thread_key"]] for i in final]
    stats.update(threads=len(threads), test_threads=sum(test_thread.values()))
    # 5. DPO: same prompt, same split; downs and ups ordered by (user message, rating time, row),
    # paired by rank; a pair of identical answers is dropped (contradictory).
    position, seen = {}, {False: 0, True: 0}
    for i, t in zip(final, test, strict=False):
        position[i] = seen[t]
        seen[t] += 1
    groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
    for i, t in zip(final, test, strict=False):
        groups[(rows[i]["prompt_hash"], t)].append(i)
    pairs, pair_test, contradictory = [], [], 0
    for (_ph, t), members in sorted(groups.items(), key=lambda kv: kv[0][0] ^ int(kv[0][1])):
        order = lambda i: (rows[i]["message_key"], rows[i]["rated_at"], i)  # noqa: E731
        downs = sorted((i for i in members if not rows[i]["label"]), key=order)
        ups = sorted((i for i in members if rows[i]["label"]), key=order)
        for bad, good in zip(downs, ups, strict=False):
            if rows[bad]["completion_hash"] == rows[good]["completion_hash"]:
                contradictory += 1
            else:
                pairs.append((position[good], position[bad]))
                pair_test.append(t)
    stats["contradictory_pairs"] = contradictory
    return {"kto": final, "kto_test": test, "dpo": pairs, "dpo_test": pair_test, "stats": stats}


def random_history(root: Path, rng: random.Random, shard_sizes: list[int]) -> list[Path]:
    """Shards written by the real shard writer, of rows drawn from small pools so that keys repeat."""
    prompts = [f"prompt {i}" for i in range(12)]
    answers = [f"answer {i}" for i in range(6)]
    users = ["heavy"] * 6 + [f"u{i}" for i in range(8)]
    paths: list[Path] = []
    earlier: list[str] = []
    for s, size in enumerate(shard_sizes):
        rows = []
        for _ in range(size):
            ex = f"ex{rng.randrange(size * 2 + 40)}"  # re-rated across (and within) shards
            rows.append(
                RatedExchange(
                    exchange_id=ex, thread_id=f"t{rng.randrange(25)}", user=rng.choice(users),
                    messages=[{"role": "user", "content": rng.choice(prompts)}], completion=rng.choice(answers),
                    prompt_message_id=f"m{rng.randrange(15)}", prompt_id="assistant", prompt_version=rng.choice(["1.0.0", "1.1.0"]),
                    model="echo", model_version=rng.choice(["base", "mv-1"]), created_at=float(rng.randrange(50)),
                    value=rng.randrange(2), comment="", reasons=(), rated_at=float(rng.randrange(30)),  # ties on purpose
                )
            )
        rows = list({r.exchange_id: r for r in rows}.values())  # one row per exchange per build, as collect gives
        # Unrated or deleted since: earlier exchanges (some re-rated later again), and unknown ones.
        forgotten = {*rng.sample(earlier, min(len(earlier), rng.randrange(6))), f"ex{rng.randrange(1000)}"} - {r.exchange_id for r in rows}
        earlier += [r.exchange_id for r in rows]
        path = root / f"shard{s}.parquet"
        _write_shard(path, Collected.from_rows(rows, forgotten), scrub=False, progress=False)
        paths.append(path)
    return paths


def as_lists(plan: _Plan) -> dict[str, Any]:
    return {
        "kto": plan.kto.tolist(),
        "kto_test": plan.kto_test.tolist(),
        "dpo": [tuple(p) for p in plan.dpo.tolist()],
        "dpo_test": plan.dpo_test.tolist(),
        "stats": plan.stats,
    }


@pytest.mark.parametrize("seed", range(12))
def test_plan_follows_the_rules_across_shards(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    # The largest shard first (a full build, then incrementals), in the middle, or alone.
    sizes = [[120, 15, 9, 20], [10, 150, 12], [200], [30, 30, 30]][seed % 4]
    paths = random_history(tmp_path, rng, sizes)
    for config in (RetrainConfig(min_ratings=2, max_user_share=1.0), RetrainConfig(max_user_share=0.1), RetrainConfig(test_fraction=0.5, split_seed=f"s{seed}")):
        for k in range(1, len(paths) + 1):  # every version of the chain
            assert as_lists(_plan(paths[:k], config)) == reference(paths[:k], config), (sizes, k, config)
    assert all(_sidecar_path(p).exists() for p in paths)


def test_a_plan_without_sidecars_writes_them_and_gives_the_same_result(tmp_path: Path) -> None:
    paths = random_history(tmp_path, random.Random(7), [80, 10])
    config = RetrainConfig(min_ratings=2)
    first = as_lists(_plan(paths, config))
    for p in paths:  # shards from before sidecars: the plan writes them again
        _sidecar_path(p).unlink()
    assert as_lists(_plan(paths, config)) == first == reference(paths, config)


def test_tiny_data_moves_one_thread_so_both_splits_exist(tmp_path: Path) -> None:
    rows = [
        RatedExchange(f"e{i}", f"t{i % 2}", "alice", [{"role": "user", "content": f"q{i}"}], f"a{i}", f"m{i}", "assistant", "1.0.0", "echo", "base", 1.0, i % 2, "", (), 2.0)
        for i in range(4)
    ]
    path = tmp_path / "s.parquet"
    _write_shard(path, Collected.from_rows(rows), scrub=False, progress=False)
    for seed in ("a", "b", "c", "d"):
        config = RetrainConfig(min_ratings=2, split_seed=seed)
        plan = _plan([path], config)
        assert as_lists(plan) == reference([path], config)
        assert plan.kto_test.any() and not plan.kto_test.all()


def present(agg: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    users, threads = agg["user_counts"] > 0, agg["thread_counts"] > 0
    return {
        "users": agg["users"][users].tolist(), "user_counts": agg["user_counts"][users].tolist(),
        "threads": agg["threads"][threads].tolist(), "thread_counts": agg["thread_counts"][threads].tolist(), "thread_test": agg["thread_test"][threads].tolist(),
    }


@pytest.mark.parametrize("seed", range(16))
def test_incremental_chains_match_the_full_plan_and_the_rules(tmp_path: Path, seed: int) -> None:
    rng = random.Random(1000 + seed)
    # A full build then incrementals (small and large ones), or a small first build that later
    # builds outgrow (the user cap moves), or equal builds.
    sizes = [[120, 15, 9, 20, 4, 30], [10, 150, 12, 3, 40], [60, 8, 8, 8, 8, 8, 8], [30, 30, 30, 30]][seed % 4]
    paths = random_history(tmp_path, rng, sizes)
    configs = (RetrainConfig(min_ratings=2, max_user_share=1.0), RetrainConfig(max_user_share=0.1), RetrainConfig(max_user_share=0.3, test_fraction=0.5, split_seed=f"s{seed}"))
    for j, config in enumerate(configs):
        previous, updated = None, 0
        for k in range(1, len(paths) + 1):  # each version built on the one before
            plan = _plan(paths[:k], config, previous)
            full = _plan(paths[:k], config)
            assert as_lists(plan) == as_lists(full) == reference(paths[:k], config), (sizes, k, config, plan.incremental)
            assert plan.summary == full.summary, (sizes, k, config)
            assert present(plan.agg) == present(full.agg)
            assert np.array_equal(plan.fate, full.fate) and np.array_equal(plan.row_test[plan.kto], full.row_test[full.kto])
            updated += plan.incremental
            previous = tmp_path / f"v{j}-{k}"
            previous.mkdir()
            _write_state(previous, plan, config)
            kto, dpo = _plan_tables(previous)
            assert kto["test"].to_pylist() == plan.kto_test.tolist() and dpo["chosen"].to_pylist() == plan.dpo[:, 0].tolist()
        assert updated >= len(paths) - 2, (sizes, config)  # the update path ran (the tiny-data thread move aside)


def test_a_version_without_plan_state_gets_a_full_plan(tmp_path: Path) -> None:
    paths = random_history(tmp_path, random.Random(3), [80, 10])
    config = RetrainConfig(min_ratings=2)
    folder = tmp_path / "v1"
    folder.mkdir()
    first = _plan(paths[:1], config)
    _write_state(folder, first, config)
    assert _plan(paths, config, folder).incremental
    shutil.rmtree(folder / "plan_state")  # a version from before plan states
    (folder / "plan_state.json").unlink()
    plan = _plan(paths, config, folder)
    assert not plan.incremental and as_lists(plan) == reference(paths, config)
    _write_state(folder, first, RetrainConfig(min_ratings=2, split_seed="other"))  # other settings: full plan too
    assert not _plan(paths, config, folder).incremental


def test_an_older_duplicate_of_a_capped_row_leaves_the_capped_user_as_they_were(tmp_path: Path) -> None:
    def row(ex: str, user: str, prompt: str, rated_at: float) -> RatedExchange:
        return RatedExchange(ex, f"t-{ex}", user, [{"role": "user", "content": prompt}], "same answer", f"m-{ex}", "assistant", "1.0.0", "echo", "base", 1.0, ex.startswith("h") or int(ex[-1]) % 2, "", (), rated_at)

    first = [row(f"h{i}", "heavy", f"q{i}", float(i)) for i in range(30)] + [row(f"l{u}-{i}", f"u{u}", f"p{u}-{i}", 5.0) for u in range(10) for i in range(3)]
    # Only a light user rates again: the heavy user's rows past dedup don't change, nor the cap;
    # the new row duplicates the heavy user's oldest (capped) row and is older, so that row stays.
    second = [row("x1", "u0", "q0", -1.0)]
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for path, rows in zip(paths, (first, second), strict=False):
        _write_shard(path, Collected.from_rows(rows), scrub=False, progress=False)
    config = RetrainConfig(min_ratings=2, max_user_share=0.2)
    base = _plan(paths[:1], config)
    assert base.stats["capped"] > 0
    folder = tmp_path / "v1"
    folder.mkdir()
    _write_state(folder, base, config)
    plan = _plan(paths, config, folder)
    assert plan.incremental and plan.stats["duplicates"] == 1
    assert as_lists(plan) == as_lists(_plan(paths, config)) == reference(paths, config)


def test_incremental_builds_load_and_count_as_full_plans_do(tmp_path: Path) -> None:
    """build() + load() end to end: each version of a chain, built on the one before, loads the
    same rows and pairs and has the same card counts as a full plan of its shards."""
    rng = random.Random(5)
    root = tmp_path / "datasets"
    config = RetrainConfig(min_ratings=2, max_user_share=0.15)
    users = ["heavy"] * 5 + [f"u{i}" for i in range(8)]
    previous: str | None = None
    earlier: list[str] = []
    for b, size in enumerate([150, 20, 1, 35, 12]):
        rows = list({
            r.exchange_id: r
            for r in (
                RatedExchange(
                    f"ex{rng.randrange(260)}", f"t{rng.randrange(30)}", rng.choice(users), [{"role": "user", "content": f"prompt {rng.randrange(10)} me@example.com"}],
                    f"answer {rng.randrange(5)}", f"m{rng.randrange(12)}", "assistant", rng.choice(["1.0.0", "1.1.0"]), "echo", rng.choice(["base", "mv-1"]),
                    float(rng.randrange(50)), rng.randrange(2), "", (), float(b * 10 + rng.randrange(30)),
                )
                for _ in range(size)
            )
        }.values())
        forgotten = set(rng.sample(earlier, min(len(earlier), 3))) - {r.exchange_id for r in rows}
        earlier += [r.exchange_id for r in rows]
        collected = Collected.from_rows(rows, forgotten, since=None if previous is None else f"{b}-0")
        built = dataset.build(collected, config, root, previous, progress=False)
        previous = built.version
        paths = [_shard_path(root, s) for s in built.card["shards"]]
        full = _plan(paths, config)
        twin = root / f"full-{b}"
        twin.mkdir()
        for name in ("manifest.json", "card.json"):  # a version's files besides its state (load rewrites the README from the card)
            (twin / name).write_text((root / built.version / name).read_text())
        _write_state(twin, full, config)
        mine, theirs = dataset.load(root, built.version), dataset.load(root, twin.name)
        for split in dataset.SPLITS:
            assert mine[split].to_list() == theirs[split].to_list(), (b, split)
        card = _card(built.version, built.card["previous"], built.card["shards"], collected, built.card["this_build"], full, config)
        for part in ("counts", "weights", "dropped", "user_cap", "pii", "time_range", "prompt_versions", "model_versions"):
            assert built.card[part] == card[part], (b, part)

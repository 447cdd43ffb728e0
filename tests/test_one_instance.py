"""One `chatbot up` per data directory: a second one is refused before it starts anything, and a
killed one (`kill -9`) leaves nothing that blocks the next start, nor a Redis on its AOF."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from launcher import redis_server
from launcher.cli.up import port_in_use
from launcher.process import ServiceGroup, StartupError, free_port, wait_until
from support.services import ROOT, RedisServer
from support.up import start_up, up_env


def redis_pid(sock: Path) -> int:
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


@pytest.mark.timeout(300)
def test_a_second_up_on_the_same_data_dir_is_refused_and_a_killed_one_does_not_block(tmp_path: Path, standin: str) -> None:
    env = up_env(tmp_path, standin)
    data = tmp_path / "data"
    sock = data / "redis" / "redis.sock"
    first = start_up(env, tmp_path / "first.log")
    third: subprocess.Popen[bytes] | None = None
    try:
        first_redis = redis_pid(sock)
        aof = sorted(p.name for p in (data / "redis").rglob("*.aof*"))
        # Another port, as the port check's advice says: the same directory is what matters.
        second_env = dict(env, PORT=str(free_port()), LOCAL_MODEL_PORT=str(free_port()))
        second = subprocess.run([sys.executable, "-m", "launcher.cli", "up"], env=second_env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        said = " ".join(second.stderr.split())  # the console wraps long lines
        assert "Loop is already running from this directory" in said
        assert f"pid {first.pid}, http://127.0.0.1:{env['PORT']}" in said
        assert "Traceback" not in second.stderr
        # Nothing started, the first untouched: same Redis process on the same socket and AOF.
        assert not port_in_use("127.0.0.1", int(second_env["PORT"]))
        assert first.poll() is None and sock.exists() and redis_pid(sock) == first_redis
        assert sorted(p.name for p in (data / "redis").rglob("*.aof*")) == aof
        assert httpx.get(f"http://127.0.0.1:{env['PORT']}/project/settings?language=en-US", timeout=5).status_code < 500

        # kill -9: no Ctrl-C handler runs, the lock file stays behind naming the dead process...
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert (data / "chatbot.lock").read_text().split()[0] == str(first.pid)
        # ...its services stop with it (their Redis saves and removes its socket)...
        wait_until(lambda: not sock.exists() and not port_in_use("127.0.0.1", int(env["PORT"])), 30, what="the killed instance's services stopping")
        # ...and the kernel released the lock: the next start is not blocked.
        third = start_up(env, tmp_path / "third.log")
        assert (data / "chatbot.lock").read_text().split()[0] == str(third.pid)
        assert redis_pid(sock) != first_redis
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
    assert third is not None and third.returncode == 0, (tmp_path / "third.log").read_text()
    out = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert out.stdout.strip() == "", "children left running"


def test_the_embedded_redis_never_starts_on_a_socket_a_live_server_answers_on(redis_server_: RedisServer, own_services: ServiceGroup) -> None:
    """What a `chatbot up` killed without its services would leave: a live Redis on the data
    directory. Another start says which process to stop, and leaves it serving."""
    sock = Path(redis_server_.url.removeprefix("unix://"))
    pid = redis_pid(sock)
    with pytest.raises(StartupError, match=f"A Redis server \\(pid {pid}\\) still serves {sock}.*kill {pid}"):
        redis_server.start(own_services, sock.parent, sock)
    assert own_services.procs == [] and sock.exists() and redis_server_.client.ping()

"""`chatbot up`: starts what is needed, serves chats, stops everything on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from feedback import keys
from launcher.cli.up import port_in_use
from launcher.process import child_env, free_port, wait_until
from sim.client import ChatClient
from support.services import ROOT


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return child_env(**{"DATA_DIR": str(tmp_path / "data"), "PORT": str(free_port()), "LOCAL_MODEL_PORT": str(free_port()), **extra})


async def test_up_with_embedded_redis_chats_and_stops_cleanly_on_ctrl_c(tmp_path: Path, standin: str) -> None:
    env = base_env(tmp_path, LLM_BASE_URL=f"{standin}/v1", LLM_MODEL="echo")
    port = int(env["PORT"])
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "up"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/project/settings?language=en-US", timeout=1).status_code < 500, 60, proc, "chatbot up")
        # Login is on by default: a generated admin password, kept under the data directory.
        password = (tmp_path / "data" / "secrets" / "admin-password").read_text().strip()
        assert oct((tmp_path / "data" / "secrets" / "admin-password").stat().st_mode & 0o777) == "0o600"
        client = ChatClient(f"http://127.0.0.1:{port}")
        await client.login("admin", password)
        await client.connect()
        reply = await client.send("hi")
        await client.close()
        assert reply.text == "You said: hi"
        sock = tmp_path / "data" / "redis" / "redis.sock"
        stored = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        assert client.thread_id is not None
        assert stored.zcard(keys.thread_exchanges(client.thread_id)) == 1
        stored.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert f"log in as admin / {password}" in stderr
    assert "Stopped." in stderr
    assert not port_in_use("127.0.0.1", port)
    # The AOF file exists: acknowledged writes survive a restart.
    assert list((tmp_path / "data" / "redis").rglob("*.aof*"))
    out = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert out.stdout.strip() == "", "children left running"


def test_up_without_the_default_model_says_what_to_change(tmp_path: Path) -> None:
    env = base_env(tmp_path, LLM_MODEL="some-org/model-that-cannot-be-downloaded", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "launcher.cli", "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Could not get model 'some-org/model-that-cannot-be-downloaded'" in result.stderr
    assert "LLM_BASE_URL" in result.stderr and "LLM_MODEL" in result.stderr
    assert "Traceback" not in result.stderr
    out = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert out.stdout.strip() == "", "the embedded Redis was stopped"


def test_up_refuses_a_port_in_use(tmp_path: Path, standin: str) -> None:
    taken = standin.rsplit(":", 1)[1]
    env = base_env(tmp_path, LLM_BASE_URL=f"{standin}/v1", LLM_MODEL="echo", PORT=taken)
    result = subprocess.run([sys.executable, "-m", "launcher.cli", "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"Port {taken} is already in use" in result.stderr and "PORT" in result.stderr


def test_up_with_a_remote_server_needs_the_model_name(tmp_path: Path) -> None:
    env = base_env(tmp_path, LLM_BASE_URL="http://127.0.0.1:9/v1")
    result = subprocess.run([sys.executable, "-m", "launcher.cli", "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "set LLM_MODEL too" in result.stderr and "Traceback" not in result.stderr

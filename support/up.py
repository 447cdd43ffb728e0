"""`chatbot up` as a user runs it, on a data directory of a test, with the stand-in model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from launcher.process import child_env, free_port, wait_until
from support.services import ROOT


def up_env(tmp_path: Path, standin: str) -> dict[str, str]:
    """DATA_DIR under tmp_path, free ports, the stand-in (its echo) as the model, no schedule."""
    return child_env(
        DATA_DIR=str(tmp_path / "data"), PORT=str(free_port()), LOCAL_MODEL_PORT=str(free_port()),
        LLM_BASE_URL=f"{standin}/v1", LLM_MODEL="echo", RETRAIN_INTERVAL_S="0", EXPERIMENT_LOOK_S="0",
    )  # fmt: skip


def start_up(env: dict[str, str], log: Path, *args: str, timeout_s: float = 180) -> subprocess.Popen[bytes]:
    """`chatbot up [args]`, its output in `log`, once its web UI answers."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "up", *args], env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['PORT']}/project/settings?language=en-US"
    wait_until(lambda: httpx.get(url, timeout=1).status_code < 500, timeout_s, proc, "chatbot up")
    return proc

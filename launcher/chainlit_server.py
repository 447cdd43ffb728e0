"""The Chainlit web server running bot/app.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

import bot
from launcher.process import ServiceGroup, wait_until

BOT_DIR = Path(bot.__file__).resolve().parent
APP = BOT_DIR / "app.py"


def prepare_app_root(root: Path) -> Path:
    """Chainlit reads its config from, and writes its files under, its app root: keep that out of
    the source tree, and refresh our config on every start so upgrades take effect."""
    (root / ".chainlit").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BOT_DIR / "ui" / "config.toml", root / ".chainlit" / "config.toml")
    shutil.copyfile(BOT_DIR / "ui" / "chainlit.md", root / "chainlit.md")
    return root


def argv(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "chainlit", "run", str(APP), "--headless", "--host", host, "--port", str(port)]


def start(group: ServiceGroup, env: dict[str, str], app_root: Path, host: str, port: int, timeout_s: float = 60) -> subprocess.Popen[bytes]:
    env = {**env, "CHAINLIT_APP_ROOT": str(prepare_app_root(app_root))}
    proc = group.start("chainlit", argv(host, port), env=env, cwd=app_root)
    url = f"http://{host}:{port}/project/settings?language=en-US"
    # Any HTTP answer (401 before login included) means the server is up.
    wait_until(lambda: httpx.get(url, timeout=2).status_code < 500, timeout_s, proc, "Chainlit")
    return proc

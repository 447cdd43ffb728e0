"""The local OpenAI-compatible model server (`transformers serve`), the default model backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from launcher.process import ServiceGroup, StartupError, wait_until

OFFLINE_HINT = (
    "Could not get model {model!r}: {reason}\n"
    "To chat anyway, set LLM_BASE_URL (and LLM_API_KEY, LLM_MODEL) to an OpenAI-compatible server, "
    "or set LLM_MODEL to a local model directory, or run `chatbot up --demo` (no download)."
)


def ensure_model(model: str) -> str:
    """Download a hub model once (with a progress bar); a local directory is used as it is."""
    if Path(model).is_dir():
        return str(Path(model).resolve())
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])
    except (OSError, HfHubHTTPError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StartupError(OFFLINE_HINT.format(model=model, reason=reason)) from None
    return model


def argv(port: int) -> list[str]:
    # No forced model: the server loads whichever model a request names (an id or a path), so a
    # promoted model is served on the next message without a restart.
    return [
        sys.executable, "-m", "transformers.cli.transformers", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--model-timeout", str(10 * 365 * 24 * 3600),  # never unload the model in service
        "--log-level", "warning",
    ]


def start(group: ServiceGroup, port: int, timeout_s: float = 120, threads: int | None = None) -> subprocess.Popen[bytes]:
    """The server, up and healthy. `threads`: torch threads (OMP_NUM_THREADS); a tiny model such as
    the demo model generates several times faster on one thread than on two when the app and
    other work share the cores (measured: docs/experiment); None = torch's default."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    proc = group.start("model-server", argv(port), env=env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, timeout_s, proc, "local model server")
    return proc


def warm_up(port: int, model: str, timeout_s: float = 900) -> float:
    """Load the model with one tiny request, so the first user doesn't wait; returns seconds."""
    from feedback.serving import WarmUpError, warm

    try:
        return warm(f"http://127.0.0.1:{port}/v1", "not-needed", model, timeout_s)
    except WarmUpError as exc:
        raise StartupError(f"local model server: {exc}") from None

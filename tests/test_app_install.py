"""`make up` from a virtual environment holding exactly what `make up` installs (the `app` extra and
the default model's wheel, not the test tools): the retraining it schedules runs to a decision.

The test runs the README's `make up` itself, with VENV pointing at a new environment: the install
step is the Makefile's, so a dependency the retraining needs but `make up` forgets fails here (the
rest of the suite runs in the `dev` environment, which would hide it)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from demo.tiny import build_tiny_model
from feedback import registry
from launcher.process import child_env, free_port, wait_until
from support import seed
from support.services import ROOT, RedisServer

pytestmark = pytest.mark.slow

LIKED = ["Yes.", "Short answer.", "Run the command.", "Redis is fast."]
DISLIKED = ["Well, that is a long story, and I am not sure, but let me think about it for a while, because it depends."]


def seed_ratings(url: str, n: int = 40) -> None:
    """n rated answers over 10 threads (each with liked and disliked ones) and 5 users: enough
    for the job's default options."""
    seed.seed_rated_series(url, n, LIKED, DISLIKED, lambda i: f"Question number {i}?", threads=10, users=5)


@pytest.mark.timeout(1500)  # a whole install, from pip's cache: minutes
def test_make_up_installs_what_the_scheduled_retraining_needs(tmp_path: Path, redis_db: RedisServer) -> None:
    venv = tmp_path / "venv"
    data = tmp_path / "data"
    model = build_tiny_model(tmp_path / "tiny").resolve()  # the installed path is the point, not the model
    seed_ratings(redis_db.url)
    # Nothing of this venv either: `make up` must build and use its own.
    env = {k: v for k, v in child_env().items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(
        VENV=str(venv), DATA_DIR=str(data), REDIS_URL=redis_db.url, LLM_MODEL=str(model), PORT=str(free_port()),
        LOCAL_MODEL_PORT=str(free_port()), RETRAIN_INTERVAL_S="1", MIN_NEW_RATINGS="10",
    )  # fmt: skip
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT / ".venv")))
    log = tmp_path / "make-up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "up", f"VENV={venv}"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    retrain_log = data / "logs" / "retrain.log"
    try:
        # Installing takes minutes (from pip's cache); then the first scheduled run starts within a second.
        def decided() -> bool:  # a version recorded, or the scheduled run failed (a missing module, say)
            text = retrain_log.read_text(errors="replace") if retrain_log.exists() else ""
            return registry.versions(redis_db.client) != [] or "Traceback" in text or "failed" in text

        wait_until(decided, 900, proc, "make up's scheduled retraining")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    output = log.read_text(errors="replace") + (retrain_log.read_text(errors="replace") if retrain_log.exists() else "")
    assert not (venv / "bin" / "pytest").exists(), "make up installed the test tools: this test would hide missing dependencies"
    assert "ModuleNotFoundError" not in output, output[-3000:]
    version = registry.versions(redis_db.client)[0]
    assert version.adapter_path is not None
    assert version.base_model == str(model) and Path(version.adapter_path, "adapter_config.json").exists()
    assert version.decision["reason"], output[-3000:]  # trained, evaluated, and the gate decided

"""The demo keeps to its own data directory (DATA_DIR/demo: Redis, registry, logs, secrets), and a
model version never serves on a base model other than the one it was trained from."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import redis

from demo.tiny import build_tiny_model
from feedback import audit, registry
from feedback import report as rep
from feedback import run as runs
from feedback.layout import DataLayout
from feedback.serving import ModelServer
from feedback.settings import load_settings
from launcher import redis_server
from launcher.process import ServiceGroup, free_port
from sim.client import ChatClient
from support.services import RedisServer, run_cli
from support.session import run_id
from support.up import start_up, up_env


def unix(sock: Path) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(sock), decode_responses=True)


async def chat(url: str, data: Path, text: str) -> tuple[ChatClient, str, dict[str, object]]:
    """One answer as the admin `chatbot up` created in `data` (returns the client, text, final message)."""
    client = ChatClient(url)
    await client.login("admin", DataLayout(data).admin_password.read_text().strip())
    await client.connect()
    reply = await client.send(text, timeout_s=120)
    final = reply.final()
    assert final is not None, reply.messages
    return client, reply.text, final | {"run_id": run_id(reply)}


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def in_service(services: ServiceGroup, layout: DataLayout, active: registry.ModelVersion, *others: registry.ModelVersion) -> None:
    """DATA_DIR's embedded Redis as a `chatbot up` from before leaves it: the versions registered,
    `active` in service (the server stopped again, for the test's own `chatbot up`)."""
    redis_server.start(services, layout.redis, layout.redis_socket)
    r = unix(layout.redis_socket)
    for v in (*others, active):
        registry.add(r, v)
    pipe = r.pipeline(transaction=True)
    registry.activate(pipe, active, None)
    pipe.execute()
    r.close()
    services.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)  # two `chatbot up`, one with a local model server
async def test_the_demo_keeps_its_own_data_and_the_product_never_sees_it(tmp_path: Path, standin: str) -> None:
    data = (tmp_path / "data").resolve()
    build_tiny_model(data / "demo-model")  # stands for the built demo model (no 4-minute build)
    env = up_env(tmp_path, standin)
    real = start_up(env, tmp_path / "real.log")
    demo_env = dict(env, PORT=str(free_port()), LOCAL_MODEL_PORT=str(free_port()), LLM_MAX_TOKENS="8")
    demo: subprocess.Popen[bytes] | None = None
    try:
        # The same DATA_DIR, side by side: the demo runs from DATA_DIR/demo, not on the product's Redis.
        demo = start_up(demo_env, tmp_path / "demo.log", "--demo")
        client, _, final = await chat(f"http://127.0.0.1:{demo_env['PORT']}", data / "demo", "What is Redis?")
        assert (await client.rate(str(final["run_id"]), 1)).status_code == 200
        await client.close()
        # `retrain --demo` reads and records in the demo's Redis (here it skips: too few ratings).
        retrained = run_cli("retrain", "--demo", env=env, timeout=300)
        assert retrained.returncode == 0 and "skipped" in retrained.stderr, retrained.stderr[-2000:]

        demo_r, real_r = unix(data / "demo" / "redis" / "redis.sock"), unix(data / "redis" / "redis.sock")
        assert len(rep.rated_answers(demo_r)) == 1 and len(runs.recent(demo_r)) == 1
        assert rep.rated_answers(real_r) == [] and runs.recent(real_r) == [] and registry.versions(real_r) == []
        demo_r.close()
        real_r.close()
        # `report` never pools them: the product's has nothing, the demo's its rating.
        assert "No rated answers yet." in run_cli("report", env=env).stderr
        demo_report = run_cli("report", "--demo", env=env)
        assert demo_report.returncode == 0 and "base" in demo_report.stdout, demo_report.stderr
        assert run_cli("model", "list", "--demo", env=env).returncode == 0
        # Its services' logs and secrets are the demo's too.
        assert (data / "demo" / "logs" / "model-server.log").exists() and not (data / "logs" / "model-server.log").exists()
        assert (data / "demo" / "chatbot.lock").read_text().split()[0] == str(demo.pid)
    finally:
        stop(real)
        if demo is not None:
            stop(demo)
    assert demo.returncode == 0, (tmp_path / "demo.log").read_text()


@pytest.mark.timeout(300)
async def test_a_version_trained_from_another_base_model_is_not_served(tmp_path: Path, standin: str, own_services: ServiceGroup) -> None:
    """The issue's case: a demo fine-tune in service, then the product starts on its own model."""
    layout = DataLayout((tmp_path / "data").resolve())
    foreign = registry.ModelVersion(id="mv-20260101-000000-ebda7f", base_model=str(layout.demo_model), served_name="fail-500")  # the stand-in fails it
    in_service(own_services, layout, foreign)

    env = up_env(tmp_path, standin)
    up = start_up(env, tmp_path / "up.log")
    try:
        client, text, final = await chat(f"http://127.0.0.1:{env['PORT']}", layout.root, "What is a good name for a cat?")
        await client.close()
        assert text == "You said: What is a good name for a cat?"  # the configured model (the stand-in's echo)
        assert final["metadata"]["model_version"] == registry.BASE  # type: ignore[index]
        r = unix(layout.redis_socket)
        kept = registry.get(r, foreign.id)  # not deleted: retired, saying why
        assert registry.active(r) is None and kept.status == "retired"
        assert kept.decision["set_aside"] == f"trained from base model {layout.demo_model}, but the configured base model is echo"
        assert [(e.action, e.who) for e in audit.recent(r, f"model:{foreign.id}")] == [("set_aside", "chatbot up")]
        r.close()
    finally:
        stop(up)
    said = " ".join((tmp_path / "up.log").read_text().split())
    assert f"Not serving model version {foreign.id}: it was trained from base model {layout.demo_model}, but the configured base model is echo." in said
    assert "In service: the base model (echo)" in said


@pytest.mark.timeout(300)
async def test_startup_says_which_version_serves_on_its_own_base(tmp_path: Path, standin: str, own_services: ServiceGroup) -> None:
    """A version trained from the configured base model stays in service across a restart, and
    startup says which one, on which base, fine-tuned from what."""
    layout = DataLayout((tmp_path / "data").resolve())
    parent = registry.ModelVersion(id="mv-20260101-000000-aaaaaa", base_model="echo", served_name="echo-parent", status="retired")
    version = registry.ModelVersion(id="mv-20260102-000000-bbbbbb", parent=parent.id, base_model="echo", served_name="echo-own")
    in_service(own_services, layout, version, parent)

    env = up_env(tmp_path, standin)
    up = start_up(env, tmp_path / "up.log")
    try:
        client, text, final = await chat(f"http://127.0.0.1:{env['PORT']}", layout.root, "What is a good name for a cat?")
        await client.close()
        assert text == "You said: What is a good name for a cat?"
        assert final["metadata"]["model_version"] == version.id  # type: ignore[index]
        r = unix(layout.redis_socket)
        assert registry.active(r) == registry.get(r, version.id) and audit.recent(r, "model:") == []  # nothing set aside
        r.close()
    finally:
        stop(up)
    said = " ".join((tmp_path / "up.log").read_text().split())
    # The stand-in is a remote server (LLM_BASE_URL): nothing to load at startup, so no load time.
    assert f"In service: model version {version.id} on base model echo (fine-tuned from {parent.id})" in said, said
    assert "In service: the base model" not in said and "Not serving" not in said


def test_promote_and_rollback_refuse_a_version_of_another_base_model(redis_db: RedisServer) -> None:
    r = redis_db.client
    server = ModelServer("http://127.0.0.1:9/v1", "not-needed", "echo", 1.0)  # nothing listens: the check comes first
    other = registry.ModelVersion(id="mv-other", base_model="some-org/another-model", served_name="echo", status="retired")
    registry.add(r, other)
    with pytest.raises(registry.RegistryError, match="mv-other was trained from base model some-org/another-model, but the configured base model is echo"):
        registry.promote(r, "mv-other", server)
    assert registry.active(r) is None and registry.get(r, "mv-other").status == "retired"
    # In service on its own base (promoted while it was configured), its parent is of another one.
    child = registry.ModelVersion(id="mv-child", parent="mv-other", base_model="echo", served_name="echo")
    registry.add(r, child)
    pipe = r.pipeline(transaction=True)
    registry.activate(pipe, child, None)
    pipe.execute()
    with pytest.raises(registry.RegistryError, match="mv-other was trained from base model some-org/another-model"):
        registry.rollback(r, server)
    assert registry.active(r) == registry.get(r, "mv-child")


def test_a_run_never_continues_a_version_of_another_base_model(redis_db: RedisServer, tmp_path: Path) -> None:
    """Without `chatbot up` to set it aside first (an external REDIS_URL): the run fails saying
    why, before training an adapter onto a base it was not made for; nothing changes."""
    from training import job
    from training.config import RetrainConfig

    r = redis_db.client
    settings = load_settings(data_dir=tmp_path, redis_url=redis_db.url, llm_base_url="http://127.0.0.1:9/v1", llm_model="echo")
    foreign = registry.ModelVersion(id="mv-foreign", base_model="some-org/another-model", served_name="echo")
    registry.add(r, foreign)
    pipe = r.pipeline(transaction=True)
    registry.activate(pipe, foreign, None)
    pipe.execute()
    outcome = job.run(r, settings, RetrainConfig(min_new_ratings=0), progress=False)
    assert outcome.status == "failed", outcome
    assert "(mv-foreign) was trained from base model some-org/another-model, not from the configured echo" in outcome.reason
    assert registry.active(r) == registry.get(r, "mv-foreign") and not (tmp_path / "datasets").exists()

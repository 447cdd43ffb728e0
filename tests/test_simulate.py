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
        "--rate-probability", "1", "--noise", "0", "--regenerate", "1", "--concurrency", "3", env=env, timeout=120,
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
    common = ["--url", app_server.url, "--users", accounts, "--conversations", "6", "--rate-probability", "1", "--noise", "0", "--regenerate", "1"]
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


def test_simulate_counts_errors_by_kind(own_services: ServiceGroup, redis_db: RedisServer, standin: str, tmp_path: Path) -> None:
    """A failed conversation is counted under why it failed, not as a bare "N errors": the app's
    error for a failing model; then answers that outlast --timeout (the stand-in's slow model) and
    messages the app refuses past MESSAGES_PER_MINUTE."""
    app = start_app(own_services, app_env(redis_db.url, f"{standin}/v1", tmp_path / "app", MESSAGES_PER_MINUTE="3"), tmp_path / "app")
    env = {**os.environ, "REDIS_URL": redis_db.url}
    args = ("simulate", "--prefer", "short", "--url", app.url, "--users", "alice:alice-pw", "--timeout", "2")

    redis_db.client.set(keys.active_model(), "fail-500")
    failing = run_cli(*args, "--conversations", "1", env=env, timeout=120)
    assert json.loads(failing.stdout)["error_kinds"] == {"the app answered with an error: The model server failed to answer (HTTP 500). Please try again.": 1}, failing.stderr
    assert "1 the app answered with an error: The model server failed" in failing.stderr

    redis_db.client.set(keys.active_model(), "slow")  # 400 tokens, 50 ms apart: 20 s
    done = run_cli(*args, "--conversations", "4", env=env, timeout=120)
    stats = json.loads(done.stdout)
    assert stats["error_kinds"] == {"timed out after 2 s waiting for the answer": 2, "refused: Too many messages: try again later.": 2}, stats
    assert "2 timed out after 2 s waiting for the answer" in done.stderr and "2 refused: Too many messages" in done.stderr, done.stderr
    assert "conversation failed: timed out after 2 s" in done.stderr  # said as it happens, not only at the end
    assert done.returncode == 1  # every conversation failed


def test_simulate_url_follows_host_and_port(app_server: AppServer, redis_server_: RedisServer) -> None:
    """Without --url, simulate talks to http://HOST:PORT, as `chatbot up` serves it."""
    port = app_server.url.rsplit(":", 1)[1]
    env = {**os.environ, "REDIS_URL": redis_server_.url, "HOST": "0.0.0.0", "PORT": port}
    done = run_cli("simulate", "--prefer", "short", "--users", "alice:alice-pw", "--conversations", "1", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answers"] == 1


def test_simulate_until_ratings_stops_once_retraining_would_train(app_server: AppServer, redis_db: RedisServer, tmp_path: Path) -> None:
    """--until-ratings N goes on until the retraining job's own count of usable ratings (one per
    answer, duplicates left out: the echoing stand-in gives the same answer to the same question,
    asked here from 10 questions) reaches N and a run would not skip for lack of data; then it stops."""
    from training.config import DEMO_RECIPE, RetrainConfig
    from training.usable import count

    questions = tmp_path / "questions.txt"
    questions.write_text("".join(f"What is a good name for pet number {i}?\n" for i in range(10)))
    accounts_ = ",".join(f"{u}:{p}" for u, p in USERS.items())
    env = {**os.environ, "REDIS_URL": redis_db.url}
    done = run_cli(
        "simulate", "--demo", "--prefer", "concise", "--users", accounts_, "--url", app_server.url, "--until-ratings", "12", "--conversations", "200",
        "--questions", str(questions), "--rate-probability", "1", "--noise", "0.5", "--regenerate", "0", env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    now = count(redis_db.client, RetrainConfig(**DEMO_RECIPE))
    assert now.usable >= 12 and now.skip is None, now
    assert stats["usable_ratings"] == now.usable and stats["retrain_would_skip"] is None
    assert now.duplicates > 0 and stats["rated"] > now.usable  # duplicates were not counted as usable
    assert stats["conversations"] < 200  # it stopped at the goal, not at the limit
    # Each conversation rates one answer: it stopped at the first conversation that got there.
    assert now.usable == 12 or "would still skip" not in done.stderr
    assert f"Usable ratings: {now.usable} of 12 wanted" in done.stderr
    again = run_cli("simulate", "--demo", "--prefer", "concise", "--users", accounts_, "--url", app_server.url, "--until-ratings", "12", env=env, timeout=120)
    assert again.returncode == 0 and "stored already" in again.stderr and json.loads(again.stdout)["conversations"] == 0, again.stderr


def test_simulate_ctrl_c_prints_what_was_done(app_server: AppServer, redis_server_: RedisServer, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) ends a run with a summary of what was done, no traceback, exit 130."""
    import signal
    import subprocess
    import sys
    import time

    from support.services import ROOT

    env = {**os.environ, "REDIS_URL": redis_server_.url}
    err = tmp_path / "stderr"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher.cli", "simulate", "--prefer", "short", "--users", "alice:alice-pw", "--url", app_server.url, "--conversations", "1000"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while "1/1000 conversations" not in err.read_text():  # a first conversation was held
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)  # polling the child's output, with a deadline
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    text = err.read_text()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "Interrupted." in text and "conversations in" in text, text
    assert json.loads(out)["conversations"] >= 1


def test_simulate_shows_a_progress_bar_from_the_first_conversation(app_server: AppServer, redis_server_: RedisServer) -> None:
    """On a terminal (here a pseudo-terminal of 80 columns), a progress bar with the counts so far is
    drawn from the first of 50 conversations on, whole; Ctrl-C there too ends with a summary."""
    import pty
    import select
    import signal
    import subprocess
    import sys
    import time

    from support.services import ROOT

    leader, follower = pty.openpty()
    env = {**os.environ, "REDIS_URL": redis_server_.url, "COLUMNS": "80", "LINES": "24", "TERM": "xterm"}
    args = ["simulate", "--prefer", "short", "--users", "alice:alice-pw,bob:bob-pw", "--url", app_server.url, "--conversations", "50"]
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 120
    interrupted = False
    while True:  # read the terminal until the child is gone (polling its output, with a deadline)
        assert time.monotonic() < deadline, seen
        if not interrupted and b"1/50 chats" in seen:  # drawn after the first conversation
            proc.send_signal(signal.SIGINT)
            interrupted = True
        if select.select([leader], [], [], 0.2)[0]:
            try:
                seen += os.read(leader, 4096)
                continue
            except OSError:  # the child closed the terminal
                break
        if proc.poll() is not None:
            break
    os.close(leader)
    proc.wait(timeout=60)
    assert interrupted, seen
    assert proc.returncode == 130, seen
    text = seen.decode(errors="replace")
    lines = [line for line in text.replace("\r", "\n").split("\n") if "chats" in line]
    assert lines and all("…" not in line for line in lines), lines
    assert "Interrupted." in text and "Traceback" not in text, text

"""A prompt experiment end to end, through the running app: simulated users chat (as a browser
does) with two prompt versions whose answers they like at different rates, the always-valid test
decides, and the app serves the winner to the next conversation without a restart.

    python -m bench.prompt_experiment [--conversations 600] [--noise 0.3] [--batch 20] [--seed 0]

Real Redis, real Chainlit app, the stand-in model server (support/standin_model.py: a system
prompt saying "stand-in: ramble" gets ~40 more words). Arm 3.0.0 answers briefly, arm 3.1.0
rambles; the raters like brief answers (under 25 words), each click flipped with probability
--noise (0.3: ~70% vs ~30% approval). The status is checked after every --batch conversations,
as an operator refreshing it would, until a decision. Prints the ratings to the decision, the
winner, and the version the next new conversation got.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from feedback import experiment as experiments
from feedback import keys
from feedback import prompt as prompts
from feedback.connection import connect_sync
from launcher import redis_server
from launcher.process import ServiceGroup
from sim.preference import Preference
from sim.rater import RaterPolicy
from sim.simulate import simulate
from support.services import app_env, start_app, start_standin
from support.session import logged_in, run_id

ARMS = {
    "3.0.0": "You are Loop. Answer in one sentence.",
    "3.1.0": "You are Loop. Explain everything at length. stand-in: ramble",
}
QUESTIONS = [f"What is topic number {i}?" for i in range(50)]


def brief(answer: str) -> bool:
    return len(answer.split()) < 25


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    users = {f"rater{i}": f"pw-rater{i}" for i in range(args.users)}
    with ServiceGroup(workdir / "logs") as group:
        sock = workdir / "redis" / "redis.sock"
        redis_server.start(group, workdir / "redis", sock)
        url = f"unix://{sock}"
        standin = start_standin(group)
        env = app_env(url, f"{standin}/v1", workdir / "app", AUTH_USERS=",".join(f"{u}:{p}" for u, p in {**users, "alice": "alice-pw"}.items()))
        app = start_app(group, env, workdir / "app")
        r = connect_sync(url)
        for version, system in ARMS.items():
            prompts.publish(r, prompts.parse({"id": "assistant", "version": version, "system": system}, "bench"))
        exp = experiments.start(r, "assistant", list(ARMS), "base", min_rated=args.min_rated, user_cap=args.user_cap, auto_serve=True)
        policy = RaterPolicy(Preference("brief", "too_long", brief, needs_topic=False), noise=args.noise, regenerate_probability=0.0)
        started = time.perf_counter()
        done = 0
        looks = 0
        report = experiments.status(r, "assistant", exp.id)
        while done < args.conversations and report.decision.status not in ("winner", "no_difference"):
            await simulate(app.url, users, QUESTIONS, policy, args.batch, seed=args.seed * 100_000 + done, concurrency=4)
            done += args.batch
            report = experiments.status(r, "assistant", exp.id)
            looks += 1
            c = report.counts
            print(f"{done:5d} conversations: " + ", ".join(f"{a} {c[a].liked}/{c[a].rated}" for a in exp.arms) + f"; {report.decision.status} (p={report.decision.p_value:.3f})", flush=True)
        seconds = time.perf_counter() - started
        client = await logged_in(app.url, "alice")  # a new conversation after the decision
        answered = await client.send("hello")
        next_version = r.hget(keys.exchange(str(client.thread_id), run_id(answered)), "prompt_version")
        await client.close()
        assignments = r.hgetall(keys.experiment_assignments(exp.id))
        return {
            "conversations": done,
            "looks": looks,
            "seconds": round(seconds, 1),
            "counts": {a: {"rated": c.rated, "liked": c.liked} for a, c in report.counts.items()},
            "decision": {"status": report.decision.status, "winner": report.decision.winner, "p_value": report.decision.p_value, "interval": report.decision.interval},
            "served": prompts.served(r, "assistant"),
            "next_conversation_version": next_version,
            "assigned": {a: sum(1 for v in assignments.values() if v == a) for a in exp.arms},
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.prompt_experiment", description=__doc__.split("\n\n")[0])
    p.add_argument("--conversations", type=int, default=600, help="at most this many conversations (default 600)")
    p.add_argument("--batch", type=int, default=20, help="conversations between two looks at the status (default 20)")
    p.add_argument("--noise", type=float, default=0.3, help="probability a click is flipped (default 0.3)")
    p.add_argument("--users", type=int, default=20, help="simulated users (default 20)")
    p.add_argument("--min-rated", type=int, default=50)
    p.add_argument("--user-cap", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prompt-exp-") as tmp:
        out = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(out, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    right = out["decision"]["winner"] == "3.0.0" and out["next_conversation_version"] == "3.0.0"  # type: ignore[index]
    print("the brief prompt won and is served to the next conversation" if right else "NOT the expected outcome")
    return 0 if right else 1


if __name__ == "__main__":
    sys.exit(main())

"""Live progress of the retraining run, for the console: one hash (`keys.retrain_progress()`) the
job updates at each step (collect, build, train, evaluate, decide, done) and during training; and
the console's "run now" request, which the schedule of `chatbot up` picks up. `r` decodes responses.

The job calls these best effort (training/job.py): a failed progress write never fails a run.
"""

from __future__ import annotations

import json
import time
from typing import cast

import redis

from feedback import keys

STEPS = ("collect", "build", "train", "evaluate", "decide", "done")


def start(r: redis.Redis, run_id: str) -> None:
    """A new run, at its first step: the previous run's fields (training steps, loss, status) go."""
    now = f"{time.time():.3f}"
    with r.pipeline(transaction=True) as pipe:
        pipe.delete(keys.retrain_progress())
        pipe.hset(keys.retrain_progress(), mapping={"run": run_id, "step": STEPS[0], "status": "running", "started": now, "updated": now})
        pipe.execute()


def step(r: redis.Redis, name: str) -> None:
    r.hset(keys.retrain_progress(), mapping={"step": name, "updated": f"{time.time():.3f}"})


def train_step(r: redis.Redis, step: int, steps: int, loss: float | None) -> None:
    fields = {"train_step": str(step), "train_steps": str(steps), "updated": f"{time.time():.3f}"}
    if loss is not None:
        fields["loss"] = repr(float(loss))
    r.hset(keys.retrain_progress(), mapping=fields)  # type: ignore[arg-type]


def finish(r: redis.Redis, status: str) -> None:
    """The run ended: step "done" with its outcome (promoted, rejected, skipped, failed)."""
    r.hset(keys.retrain_progress(), mapping={"step": "done", "status": status, "updated": f"{time.time():.3f}"})


def read(r: redis.Redis) -> dict[str, str] | None:
    """The running (or last) run's progress; None when no run ever reported."""
    data = cast("dict[str, str]", r.hgetall(keys.retrain_progress()))
    return data or None


def request_run(r: redis.Redis, by: str) -> bool:
    """Ask for a run now (`chatbot retrain --now` at the schedule's next tick); False when one was
    already asked for and not yet started."""
    return bool(r.set(keys.retrain_request(), json.dumps({"by": by, "at": time.time()}), nx=True))


def take_request(r: redis.Redis) -> dict[str, object] | None:
    """The pending request, removed (GETDEL: two schedules never both start it); None when none."""
    raw = cast("str | None", r.getdel(keys.retrain_request()))
    if raw is None:
        return None
    try:
        request = json.loads(raw)
    except ValueError:
        request = None
    return request if isinstance(request, dict) else {}


def set_next(r: redis.Redis, at: float, interval_s: float) -> None:
    """When the schedule starts its next run (the console shows it), kept until an interval after."""
    r.set(keys.retrain_next(), f"{at:.3f}", ex=max(1, round(at - time.time() + interval_s)))


def next_run(r: redis.Redis) -> float | None:
    """When the schedule of a running `chatbot up` starts its next run; None when none said."""
    raw = cast("str | None", r.get(keys.retrain_next()))
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None

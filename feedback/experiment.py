"""Prompt experiments: two or more published prompt versions ("arms") compared by their users'
ratings, decided by the always-valid test of feedback/sequential.py.

    start     one experiment per prompt at a time; every arm a published version
    assign    each new conversation gets an arm once (fixed: round robin; adaptive: Thompson
              weights with a floor, feedback/allocation.py) and keeps it when resumed; its answers
              record the experiment id
    status    approval per arm - thumbs up / rated answers, the last click of each answer once, at
              most `user_cap` answers per user and arm - folded into the test; a winner or "no
              difference" ends the experiment (with auto_serve the winner is served)
    stop      ends it without a decision

A model promotion during an experiment would confound it (both arms' later answers come from
another model): only answers from the model version in service at the start are counted, and
the status says how many answers from other versions were left out.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import numpy as np
import redis
from pydantic import BaseModel, Field, model_validator
from redis.asyncio import Redis

from feedback import audit, keys
from feedback import prompt as prompts
from feedback.allocation import thompson_weights
from feedback.errors import InvalidInput
from feedback.scripts import lua
from feedback.sequential import ALPHA, MAX_RATED, MIN_RATED, TAU, ArmCounts, Decision, SequentialTest

Policy = Literal["fixed", "adaptive"]
Status = Literal["running", "stopped", "decided"]
USER_CAP = 20  # rated answers per user and arm that count: one keen user cannot decide it
START = lua("start_experiment")
ASSIGN = lua("assign_arm")


class ExperimentError(InvalidInput):
    """An experiment that cannot start (unknown arms, one already running) or is not there."""


class Experiment(BaseModel):
    id: str = Field(pattern=f"^(?:{keys.ID_PATTERN.pattern})$")
    prompt_id: str
    arms: tuple[str, ...] = Field(min_length=2, max_length=10)
    policy: Policy = "fixed"
    alpha: float = Field(ALPHA, gt=0, lt=0.5)
    min_rated: int = Field(MIN_RATED, ge=10)
    max_rated: int = Field(MAX_RATED, ge=10)
    user_cap: int = Field(USER_CAP, ge=1)
    auto_serve: bool = False
    model_version: str  # in service at the start: only its answers count
    status: Status = "running"
    started_at: float = Field(default_factory=time.time)
    ended_at: float | None = None
    decision: dict[str, Any] = Field(default_factory=dict)  # the last look's Decision
    state: dict[str, float] = Field(default_factory=dict)  # SequentialTest.to_dict()
    weights: dict[str, float] = Field(default_factory=dict)  # adaptive: new conversations' shares

    @model_validator(mode="after")
    def _plan(self) -> Experiment:
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms must differ: {', '.join(self.arms)}")
        if self.max_rated < self.min_rated:
            raise ValueError("max_rated must be >= min_rated")
        return self

    def test(self) -> SequentialTest:
        return SequentialTest.from_dict({"alpha": self.alpha, "tau": TAU, "min_rated": self.min_rated, "max_rated": self.max_rated, **self.state})

    def to_hash(self) -> dict[str, str]:
        data = self.model_dump()
        for name in ("arms", "decision", "state", "weights"):
            data[name] = json.dumps(data[name])
        return {k: "" if v is None else str(v) for k, v in data.items()}

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Experiment:
        fields: dict[str, Any] = {k: (v or None) for k, v in data.items() if k in cls.model_fields}
        for name in ("arms", "decision", "state", "weights"):
            fields[name] = json.loads(data.get(name) or ("[]" if name == "arms" else "{}"))
        fields["auto_serve"] = data.get("auto_serve") == "True"
        return cls.model_validate(fields)


def new_id() -> str:
    return f"ex-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def start(r: redis.Redis, prompt_id: str, arms: list[str], model_version: str, who: str | None = None, **plan: Any) -> Experiment:
    """Start an experiment; ExperimentError (nothing written) when an arm is not published or one
    is already running for this prompt (concurrent starts: exactly one wins). `who`: the operator
    (the console's user, the CLI's OS user), recorded in the audit log; the console shows it."""
    published = {s.version for s in prompts.versions(r, prompt_id)}
    missing = [a for a in arms if a not in published]
    if missing:
        raise ExperimentError(f"not published for prompt {prompt_id!r}: {', '.join(missing)} (`chatbot prompt publish FILE` first)")
    try:
        exp = Experiment(id=new_id(), prompt_id=prompt_id, arms=tuple(arms), model_version=model_version, **plan)
    except ValueError as exc:
        raise ExperimentError(f"invalid experiment: {exc}") from None
    fields = [x for kv in exp.to_hash().items() for x in kv]
    index = keys.prompt_experiments(prompt_id)
    running = cast(str, r.eval(START, 3, keys.prompt_experiment(prompt_id), keys.experiment(exp.id), index, exp.id, exp.started_at, *fields))
    if running:
        raise ExperimentError(f"experiment {running} is already running for prompt {prompt_id!r}: stop it first (`chatbot prompt experiment stop`)")
    if who is not None:
        detail = f"{' vs '.join(exp.arms)}, {exp.policy} split, model {exp.model_version}" + (", auto-serve" if exp.auto_serve else "")
        audit.record(r, who, "experiment_start", f"experiment:{exp.id}", detail)
    return exp


def load(r: redis.Redis, experiment_id: str) -> Experiment | None:
    data = cast(dict[str, str], r.hgetall(keys.experiment(experiment_id)))
    return Experiment.from_hash(data) if data else None


def history(r: redis.Redis, prompt_id: str, count: int = 20) -> list[str]:
    """Ids of the experiments started for this prompt, newest first."""
    return cast("list[str]", r.zrevrange(keys.prompt_experiments(prompt_id), 0, count - 1))


def running(r: redis.Redis, prompt_id: str) -> Experiment | None:
    exp_id = cast("str | None", r.get(keys.prompt_experiment(prompt_id)))
    return load(r, exp_id) if exp_id else None


def _end(r: redis.Redis, exp: Experiment, status: Status) -> None:
    exp.status, exp.ended_at = status, time.time()
    pipe = r.pipeline(transaction=True)
    pipe.hset(keys.experiment(exp.id), mapping=cast(Any, exp.to_hash()))
    pipe.delete(keys.prompt_experiment(exp.prompt_id))
    pipe.execute()


def stop(r: redis.Redis, prompt_id: str, who: str | None = None) -> Experiment:
    """End the running experiment without a decision; `who`: recorded in the audit log (as start)."""
    exp = running(r, prompt_id)
    if exp is None:
        raise ExperimentError(f"no experiment is running for prompt {prompt_id!r}")
    _end(r, exp, "stopped")
    if who is not None:
        audit.record(r, who, "experiment_stop", f"experiment:{exp.id}", "ended without a decision")
    return exp


async def assign(r: Redis, prompt_id: str, thread_id: str) -> tuple[str, str] | None:
    """(experiment id, arm) for a conversation's first answer, or None when none is running. The
    same thread always gets the same arm."""
    exp_id = cast("str | None", await r.get(keys.prompt_experiment(prompt_id)))
    if exp_id is None:
        return None
    arm = cast(str, await r.eval(ASSIGN, 2, keys.experiment(exp_id), keys.experiment_assignments(exp_id), thread_id, random.random()))
    return (exp_id, arm) if arm else None


@dataclass
class Report:
    experiment: Experiment
    counts: dict[str, ArmCounts]  # per arm, capped per user, from the start's model version only
    decision: Decision
    other_model_answers: int = 0  # rated answers left out: another model version answered
    capped: int = 0  # rated answers left out by the per-user cap
    by_model: dict[str, dict[str, ArmCounts]] = field(default_factory=dict)  # arm -> model version -> counts (uncapped)


def verdict(exp: Experiment, d: Decision) -> str:
    """Where an experiment stands, in words (the CLI's status and the console say it alike)."""
    lo, hi = d.interval
    if d.status == "winner":
        return f"Winner: {d.winner} (better than {d.rival} by {lo:+.1%} to {hi:+.1%}, p = {d.p_value:.3f})."
    if d.status == "no_difference":
        return f"No difference found after {exp.max_rated} rated answers per arm (difference within {lo:+.1%} to {hi:+.1%})."
    if d.status == "running":
        return f"Running: {d.leader} leads {d.rival} by {lo:+.1%} to {hi:+.1%} (p = {d.p_value:.3f}, alpha {exp.alpha})."
    return f"Not enough data yet: every arm needs {exp.min_rated} rated answers."


def status(r: redis.Redis, prompt_id: str, experiment_id: str | None = None) -> Report:
    """Look: count the ratings, fold them into the test, and end the experiment when it is decided
    (serving the winner with auto_serve). Looking as often as one likes keeps the error rate."""
    exp = load(r, experiment_id) if experiment_id else running(r, prompt_id)
    if exp is None:
        raise ExperimentError(f"no experiment {'with id ' + experiment_id if experiment_id else 'is running for prompt ' + repr(prompt_id)}")
    report = _count(r, exp)
    if exp.status != "running":
        return report
    test = exp.test()
    decision = test.update(report.counts)
    exp.state, exp.decision = test.to_dict(), asdict(decision)
    if exp.policy == "adaptive":
        exp.weights = thompson_weights(report.counts, np.random.default_rng())
    report.decision = decision
    if decision.status in ("winner", "no_difference"):
        if decision.winner and exp.auto_serve:
            prompts.serve(r, prompt_id, decision.winner)
        _end(r, exp, "decided")
    else:
        r.hset(keys.experiment(exp.id), mapping=cast(Any, {k: v for k, v in exp.to_hash().items() if k in ("state", "decision", "weights")}))
    return report


def read(r: redis.Redis, exp: Experiment) -> Report:
    """An experiment's counts now, with the decision of its last look: nothing is decided and
    nothing is written (what the console's pages show)."""
    return _count(r, exp)


def look(r: redis.Redis, prompt_id: str, who: str, experiment_id: str | None = None) -> Report:
    """status(), by someone: a look that decides the experiment (ending it and, with auto-serve,
    serving the winner) is recorded in the audit log as theirs. The looks that may decide are
    `chatbot up`'s every EXPERIMENT_LOOK_S, the console's "Look now" and `chatbot prompt
    experiment status`; a page view never looks."""
    before = load(r, experiment_id) if experiment_id else running(r, prompt_id)
    was_running = before is not None and before.status == "running"
    report = status(r, prompt_id, experiment_id)
    exp, d = report.experiment, report.decision
    if was_running and exp.status == "decided":
        served = f"; {d.winner} served" if exp.auto_serve and d.winner else ""
        audit.record(r, who, "experiment_decided", f"experiment:{exp.id}", f"{verdict(exp, d)}{served}")
    return report


def _count(r: redis.Redis, exp: Experiment) -> Report:
    """Approval per arm over the experiment's conversations: each rated answer once (its current
    rating), the oldest `user_cap` per user and arm, answers of the start's model version only."""
    threads = cast(dict[str, str], r.hgetall(keys.experiment_assignments(exp.id)))
    pipe = r.pipeline(transaction=False)
    for thread in threads:
        pipe.zrange(keys.thread_exchanges(thread), 0, -1)
    answers = [(thread, e) for thread, ids in zip(threads, pipe.execute(), strict=True) for e in ids]
    pipe = r.pipeline(transaction=False)
    for thread, e in answers:
        pipe.hmget(keys.exchange(thread, e), "experiment", "prompt_version", "model_version", "user", "created_at")
        pipe.hget(keys.rating(thread, e), "value")
    replies = pipe.execute()
    rows = []
    for (experiment, arm, model, user, created), value in zip(replies[::2], replies[1::2], strict=True):
        if experiment == exp.id and value is not None and arm in exp.arms:
            rows.append((float(created or 0), arm, model, user, int(value)))
    rows.sort()
    rated: Counter[str] = Counter()
    liked: Counter[str] = Counter()
    per_user: Counter[tuple[str, str]] = Counter()
    by_model: dict[str, dict[str, ArmCounts]] = {a: {} for a in exp.arms}
    other = capped = 0
    for _, arm, model, user, value in rows:
        cell = by_model[arm].get(model, ArmCounts(0, 0))
        by_model[arm][model] = ArmCounts(cell.rated + 1, cell.liked + value)
        if model != exp.model_version:
            other += 1
            continue
        if per_user[(arm, user)] >= exp.user_cap:
            capped += 1
            continue
        per_user[(arm, user)] += 1
        rated[arm] += 1
        liked[arm] += value
    counts = {a: ArmCounts(rated[a], liked[a]) for a in exp.arms}
    # The last look's decision (a new look replaces it); none yet: not enough data.
    last = exp.decision or asdict(Decision("not_enough_data", None, None, None, 1.0, (-1.0, 1.0)))
    decision = Decision(**{**last, "interval": tuple(last["interval"])})
    return Report(exp, counts, decision, other, capped, by_model)

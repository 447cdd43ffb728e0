"""The experiment: do simulated users' ratings move the model in service toward what they like?

For each arm (a rater with one preference), on fresh state (its own Redis, data directory and
app; the model is shared, and so is its local model server unless the arms of the real model run
at once: then each has its own):

    cycle 0   measure: ask the app each held-out question once, label each answer;
              approval = share of answers the arm's rater would like (no noise), Wilson 95% CI
    cycle k   simulate: conversations through the app, rated by the arm's `RaterPolicy`
              retrain:  `training.job.run` (collect -> build -> train -> evaluate -> gate -> promote)
              measure:  as in cycle 0, on the model now in service

Everything the users do goes through the app as a browser does (`sim.simulate`); the job is the
product's own, run in this process with `RetrainConfig` options suited to the model (what
`chatbot retrain` would run with the same options).

Two models (`ExperimentConfig.model`):

    demo   the offline demo model (demo/model.py); raters prefer one of its four canned
           styles (demo.corpus.style_of); questions from demo.corpus
    real   a real chat model (data/default-model, SmolLM2-135M-Instruct); raters prefer natural
           properties of its answers - short vs detailed, list vs prose - always on topic
           (sim/preference.py); questions from sim/questions.py, held-out topics never chatted
           about; each measurement also reports the on-topic share (answers that mention the
           question's subject and end a sentence), so a collapse to empty or generic answers shows.

The results are a list of `CycleResult`; `write_outputs` turns them into a JSON file, a markdown
table and a PNG plot.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from feedback.report import wilson
from launcher import chainlit_server, model_server, redis_server
from launcher.process import ServiceGroup, child_env, free_port
from sim.preference import PREFERENCES, on_topic
from sim.rater import NOISE, RATE_PROBABILITY, REGENERATE_PROBABILITY, RaterPolicy
from sim.simulate import SimStats, ask_each, simulate
from training.config import DEMO_RECIPE, REAL_RECIPE, RetrainConfig

T = TypeVar("T")

Log = Callable[[str], None]

EVAL_USER = "observer"  # asks the held-out questions; never rates


def demo_retrain_config(**overrides: Any) -> RetrainConfig:
    """The demo model's retraining recipe (training.config.DEMO_RECIPE), every cycle training
    (min_new_ratings=0). (The 150-step test build moves at 3e-3 already.)"""
    return RetrainConfig(**{**DEMO_RECIPE, "min_new_ratings": 0, **overrides})


def real_retrain_config(**overrides: Any) -> RetrainConfig:
    """The real model's retraining recipe (training.config.REAL_RECIPE), every cycle training."""
    return RetrainConfig(**{**REAL_RECIPE, "min_new_ratings": 0, **overrides})


@dataclass
class ExperimentConfig:
    cycles: int = 3
    conversations: int = 100  # per cycle, per arm
    turns: int = 1  # user messages per conversation
    eval_questions: int = 96  # held-out questions asked per measurement (each once; the pool has 96)
    raters: int = 8  # simulated user accounts taking turns
    concurrency: int = 4
    seed: int = 0
    max_tokens: int = 160  # LLM_MAX_TOKENS of the app
    rate_probability: float = RATE_PROBABILITY
    noise: float = NOISE
    regenerate_probability: float = REGENERATE_PROBABILITY
    # Torch threads of the model server and of the retraining run. The demo model is tiny: on two
    # cores shared with the app, Redis and the simulated users, one thread each is several times
    # faster than two (thread contention), for generation and for training alike.
    torch_threads: int = 1
    retrain: RetrainConfig = field(default_factory=demo_retrain_config)
    # "demo": arms prefer demo corpus styles; "real": arms prefer sim.preference.PREFERENCES
    # ("detailed" is a name in both: the model decides which one is meant).
    model: str = "demo"

    def policy(self, preferred: str) -> RaterPolicy:
        pref = PREFERENCES[preferred] if self.model == "real" else preferred
        return RaterPolicy(pref, rate_probability=self.rate_probability, noise=self.noise, regenerate_probability=self.regenerate_probability)


@dataclass
class Approval:
    n: int  # answers classified
    liked: int
    errors: int  # questions the app did not answer
    styles: dict[str, int]  # the preference's label of each answer (demo: style; real: length + shape)
    versions: dict[str, int]  # model versions that answered
    seconds: float
    on_topic: int | None = None  # real model: answers that mention the subject and end a sentence
    liked_by: dict[str, int] = field(default_factory=dict)  # real model: answers each preference likes

    @property
    def rate(self) -> float:
        return self.liked / self.n if self.n else float("nan")

    def ci(self) -> tuple[float, float]:
        return wilson(self.liked, self.n)

    def share(self, style: str) -> float:
        return self.styles.get(style, 0) / self.n if self.n else float("nan")


@dataclass
class CycleResult:
    arm: str  # the preferred style of this arm's rater
    cycle: int
    model_version: str  # in service when measured
    status: str  # "base" (cycle 0) or the job's outcome: promoted, rejected, skipped, failed
    reason: str
    method: str | None
    gate: dict[str, Any]  # candidate / service preference accuracy and rows
    approval: float
    ci_low: float
    ci_high: float
    n: int
    liked: int
    eval_errors: int
    styles: dict[str, int]
    answered_by: dict[str, int]  # model versions recorded with the measured answers
    sim: dict[str, Any]  # SimStats of the cycle's conversations (empty at cycle 0)
    train_seconds: float
    elapsed_s: float  # since the arm started
    on_topic: int | None = None  # real model: measured answers on topic (of n)
    liked_by: dict[str, int] = field(default_factory=dict)  # real model: measured answers each preference likes


def heldout(questions: Sequence[T], n: int) -> list[T]:
    """n held-out questions spread evenly over the pool (which is ordered by topic), each once;
    the whole pool, cycled, when n is larger."""
    if n >= len(questions):
        return [questions[i % len(questions)] for i in range(n)]
    return [questions[i * len(questions) // n] for i in range(n)]


async def measure(base_url: str, password: str, questions: Sequence[str], policy: RaterPolicy, concurrency: int, real: bool = False) -> Approval:
    """Ask each question once through the app; count the answers the policy likes (no noise).
    `real`: also count the on-topic answers and those each real-model preference likes."""
    started = time.perf_counter()
    answers = await ask_each(base_url, EVAL_USER, password, questions, concurrency=concurrency)
    got = [(a.question, a.text) for a in answers if a.text is not None]
    styles = Counter(policy.preference.label(q, t) for q, t in got)
    versions = Counter(str(a.model_version) for a in answers if a.text is not None)
    liked = sum(policy.liked(t, q) for q, t in got)
    approval = Approval(len(got), liked, len(answers) - len(got), dict(styles), dict(versions), time.perf_counter() - started)
    if real:
        approval.on_topic = sum(on_topic(q, t) for q, t in got)
        approval.liked_by = {name: sum(p.liked(q, t) for q, t in got) for name, p in PREFERENCES.items()}
    return approval


@dataclass
class SharedModel:
    """The demo model and the local model server, shared by the arms."""

    path: Path
    base_url: str  # OpenAI-compatible, ending in /v1


def start_model_server(group: ServiceGroup, model_dir: Path, port: int, threads: int | None = 1) -> SharedModel:
    """The product's local model server (`launcher.model_server.argv`), with `threads` torch
    threads: the demo model (1 M parameters) generates ~10x faster on one thread than on two when
    the app, Redis and the simulated users share the two cores (measured: docs/experiment)."""
    model_server.start(group, port, threads=threads)
    model_server.warm_up(port, str(model_dir), timeout_s=300)
    return SharedModel(model_dir, f"http://127.0.0.1:{port}/v1")


def run_arm(
    preferred: str,
    model: SharedModel | Path,
    workdir: Path,
    config: ExperimentConfig,
    train_questions: Sequence[str],
    eval_questions: Sequence[str],
    log: Log = print,
) -> list[CycleResult]:
    """One arm: fresh Redis, data directory and app; cycle 0 measured, then `config.cycles`
    cycles of simulate -> retrain -> measure. `model`: a shared model server, or the model's
    directory to serve with a local model server of the arm's own."""
    import redis

    from feedback import registry
    from feedback.settings import Settings
    from training import job

    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    users = {f"rater{i}": f"pw-rater{i}" for i in range(config.raters)}
    eval_password = "pw-observer"
    policy = config.policy(preferred)
    real = config.model == "real"
    results: list[CycleResult] = []
    with ServiceGroup(workdir / "logs") as group:
        if isinstance(model, Path):
            model = start_model_server(group, model, free_port(), threads=config.torch_threads)
            log(f"[{preferred}] model server of its own up")
        sock = workdir / "redis" / "redis.sock"
        redis_server.start(group, workdir / "redis", sock)
        redis_url = f"unix://{sock}"
        env = child_env(
            REDIS_URL=redis_url,
            LLM_BASE_URL=model.base_url,
            LLM_MODEL=str(model.path),
            LLM_MAX_TOKENS=str(config.max_tokens),
            LLM_TIMEOUT_S="300",
            # Seeded sampling (each answer's seed fixed by its message id, which the simulated
            # users draw from their seeded streams): the same run gets the same answers.
            LLM_SEED=str(config.seed),
            # The product's local server, as `chatbot up` tells the app: sample at LLM_TEMPERATURE
            # (before this, the real model's answers were greedy: docs/experiment-real/NOTES.md).
            LLM_TRANSFORMERS_SERVE="true",
            AUTH_USERS=",".join(f"{u}:{p}" for u, p in {**users, EVAL_USER: eval_password}.items()),
            CHAINLIT_AUTH_SECRET="experiment-" + "x" * 40,
            DATA_DIR=str(data_dir),
            RETRAIN_INTERVAL_S="0",
            # The simulated raters are the operator's own load: past the per-user limits they
            # would only wait (sim.client honours Retry-After).
            MESSAGES_PER_MINUTE="100000",
            RATINGS_PER_MINUTE="100000",
        )
        port = free_port()
        chainlit_server.start(group, env, data_dir / "chainlit", "127.0.0.1", port)
        url = f"http://127.0.0.1:{port}"
        r = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        settings = Settings(redis_url=redis_url, llm_model=str(model.path), llm_base_url=model.base_url, data_dir=data_dir)

        def record(cycle: int, status: str, reason: str, method: str | None, gate: dict[str, Any], sim: SimStats | None, train_s: float, approval: Approval) -> None:
            active = registry.active(r)
            low, high = approval.ci()
            result = CycleResult(
                preferred, cycle, active.id if active else registry.BASE, status, reason, method, gate,
                approval.rate, low, high, approval.n, approval.liked, approval.errors, approval.styles, approval.versions,
                sim.to_dict() if sim else {}, train_s, time.perf_counter() - started, approval.on_topic, approval.liked_by,
            )
            results.append(result)
            log(
                f"[{preferred}] cycle {cycle}: {status} ({result.model_version}); approval {approval.rate:.3f} "
                f"[{low:.3f}, {high:.3f}] n={approval.n}; styles {approval.styles}"
                f"{'' if approval.on_topic is None else f'; on topic {approval.on_topic}/{approval.n}'}; {result.elapsed_s:.0f} s"
            )

        approval = asyncio.run(measure(url, eval_password, eval_questions, policy, config.concurrency, real))
        record(0, "base", "the base model, before any rating", None, {}, None, 0.0, approval)
        for cycle in range(1, config.cycles + 1):
            seed = config.seed * 1000 + cycle
            sim = asyncio.run(simulate(url, users, train_questions, policy, config.conversations, config.turns, seed=seed, concurrency=config.concurrency))
            log(f"[{preferred}] cycle {cycle}: {sim.answers} answers, {sim.rated} rated ({sim.liked} up), {sim.regenerated} regenerated, {sim.errors} errors in {sim.seconds:.0f} s"
                + (f"; why: {sim.error_samples}" if sim.errors else ""))
            t = time.perf_counter()
            outcome = _run_job(job, r, settings, config)
            train_s = time.perf_counter() - t
            method = None
            if outcome.version_id:
                method = registry.get(r, outcome.version_id).method
            gate = {
                "candidate": (outcome.details.get("candidate") or {}).get("accuracy"),
                "service": (outcome.details.get("service") or {}).get("accuracy"),
                "rows": (outcome.details.get("candidate") or {}).get("rows"),
                # mean log-prob per token of the held-out liked answers (the gate's second check)
                "liked_logp": [(outcome.details.get(side) or {}).get("liked_logp") for side in ("candidate", "service")],
            }
            log(f"[{preferred}] cycle {cycle}: job {outcome.status} in {train_s:.0f} s: {outcome.reason}")
            approval = asyncio.run(measure(url, eval_password, eval_questions, policy, config.concurrency, real))
            record(cycle, outcome.status, outcome.reason, method, gate, sim, train_s, approval)
        r.close()
    return results


def _run_job(job: Any, r: Any, settings: Any, config: ExperimentConfig) -> Any:
    import torch

    threads = torch.get_num_threads()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    try:
        return job.run(r, settings, config.retrain, progress=False)
    finally:
        torch.set_num_threads(threads)


def question_pools(model: str) -> tuple[list[str], list[str]]:
    """(train, held-out) questions: the demo corpus's, or the real-model pool (sim/questions.py)."""
    if model == "real":
        from sim.questions import HELDOUT_QUESTIONS, TRAIN_QUESTIONS

        return [q.text for q in TRAIN_QUESTIONS], [q.text for q in HELDOUT_QUESTIONS]
    from demo.corpus import HELDOUT_QUESTIONS as DEMO_HELDOUT
    from demo.corpus import TRAIN_QUESTIONS as DEMO_TRAIN

    return list(DEMO_TRAIN), list(DEMO_HELDOUT)


def run_experiment(
    arms: Sequence[str],
    model_dir: Path,
    workdir: Path,
    config: ExperimentConfig,
    log: Log = print,
    parallel: bool = False,
) -> list[CycleResult]:
    """Every arm: in turn, sharing one local model server; or (parallel) each in a process of its
    own at the same time (each then trains on one core of its own; `log` must be picklable, e.g.
    print or a `TimedLog`), sharing the server - the demo model - or, the real model, each with a
    server of its own: one server answers one request at a time, and a real answer takes seconds."""
    train_questions, heldout_pool = question_pools(config.model)
    eval_questions = heldout(heldout_pool, config.eval_questions)
    results: list[CycleResult] = []
    if parallel and len(arms) > 1 and config.model == "real":
        return _in_processes(arms, model_dir.resolve(), workdir, config, train_questions, eval_questions, log)
    with ServiceGroup(workdir / "logs") as group:
        t = time.perf_counter()
        model = start_model_server(group, model_dir.resolve(), free_port(), threads=config.torch_threads)
        log(f"model server up with {model_dir} in {time.perf_counter() - t:.0f} s")
        if not parallel or len(arms) < 2:
            for arm in arms:
                results += run_arm(arm, model, workdir / f"arm-{arm}", config, train_questions, eval_questions, log)
            return results
        return _in_processes(arms, model, workdir, config, train_questions, eval_questions, log)


def _in_processes(
    arms: Sequence[str], model: SharedModel | Path, workdir: Path, config: ExperimentConfig, train_questions: Sequence[str], eval_questions: Sequence[str], log: Log
) -> list[CycleResult]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    results: list[CycleResult] = []
    with ProcessPoolExecutor(len(arms), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_arm, arm, model, workdir / f"arm-{arm}", config, train_questions, eval_questions, log) for arm in arms]
        for future in futures:
            results += future.result()
    return results


@dataclass
class TimedLog:
    """A picklable logger: each line prefixed with the seconds since `started` (time.time())."""

    started: float = field(default_factory=time.time)

    def __call__(self, line: str) -> None:
        print(f"{time.time() - self.started:7.1f}s  {line}", flush=True)


# --- outputs --------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def share(c: CycleResult, main_style: str) -> float:
    """Share of the measured answers the main arm's rater likes: the main demo style's share, or
    (real model) the share the main real-model preference likes."""
    count = c.liked_by.get(main_style, 0) if c.liked_by else c.styles.get(main_style, 0)
    return count / c.n if c.n else float("nan")


def markdown_table(results: Sequence[CycleResult], main_style: str) -> str:
    """One row per arm and cycle: approval with its 95% CI, the main style's share, gate numbers
    (and, for the real model, the on-topic share)."""
    real = any(c.on_topic is not None for c in results)
    head = (
        f"| rater prefers | cycle | model in service | job | gate: candidate / service acc. | ratings (up) / pairs asked | "
        f"approval % [95% CI] | n | {main_style} share % |{' on topic % |' if real else ''} elapsed s |\n"
        f"|---|---:|---|---|---|---|---|---:|---:|{'---:|' if real else ''}---:|\n"
    )
    rows = []
    for c in results:
        gate = "" if c.gate.get("candidate") is None else f"{c.gate['candidate']:.3f} / {c.gate['service']:.3f} ({c.gate.get('rows')} rows)"
        liked = c.gate.get("liked_logp") or [None, None]
        if None not in liked:
            gate += f"; liked {liked[0]:.2f} / {liked[1]:.2f}"
        sim = f"{c.sim['rated']} ({c.sim['liked']}) / {c.sim['regenerated']}" if c.sim else ""
        topic = f" {_pct(c.on_topic / c.n if c.n and c.on_topic is not None else None)} |" if real else ""
        rows.append(
            f"| {c.arm} | {c.cycle} | {c.model_version} | {c.status}{' (' + c.method + ')' if c.method else ''} | {gate} | {sim} | "
            f"**{_pct(c.approval)}** [{_pct(c.ci_low)}, {_pct(c.ci_high)}] | {c.n} | {_pct(share(c, main_style))} |{topic} {c.elapsed_s:.0f} |"
        )
    return head + "\n".join(rows) + "\n"


def plot(results: Sequence[CycleResult], main_style: str, path: Path) -> None:
    """Left: each arm's approval by its own rater, with 95% CIs. Right: the share of the main
    style in both arms (up in one, down in the other)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(c.arm for c in results))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for i, arm in enumerate(arms):
        rows = [c for c in results if c.arm == arm]
        x = [c.cycle + (i - (len(arms) - 1) / 2) * 0.06 for c in rows]
        y = [100 * c.approval for c in rows]
        err = [[100 * (c.approval - c.ci_low) for c in rows], [100 * (c.ci_high - c.approval) for c in rows]]
        left.errorbar(x, y, yerr=err, marker="o", capsize=4, label=f"rater prefers {arm}")
        for xi, c in zip(x, rows, strict=True):
            if c.status == "rejected":
                left.annotate("kept", (xi, 100 * c.approval), textcoords="offset points", xytext=(-8, -14), fontsize=7)  # the gate kept the model in service
        shares = [100 * share(c, main_style) for c in rows]
        right.plot([c.cycle for c in rows], shares, marker="o", label=f"rater prefers {arm}")
        if rows and rows[0].on_topic is not None:
            topic = [100 * (c.on_topic or 0) / c.n if c.n else float("nan") for c in rows]
            right.plot([c.cycle for c in rows], topic, linestyle="--", marker="x", label=f"on topic ({arm} arm)")
    left.set(title="Approval of the model in service, held-out questions\n(kept: the gate rejected the candidate)", xlabel="cycle (0 = base model)", ylabel="approval % (95% Wilson CI)", ylim=(0, 100))
    right.set(title=f"Share of {main_style!r} answers", xlabel="cycle (0 = base model)", ylabel="% of answers", ylim=(0, 100))
    cycles = sorted({c.cycle for c in results})
    for ax in (left, right):
        ax.set_xticks(cycles)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(results: Sequence[CycleResult], main_style: str) -> list[str]:
    """The issue's targets, checked on these results."""
    lines = []
    for arm in dict.fromkeys(c.arm for c in results):
        rows = [c for c in results if c.arm == arm]
        before, best = rows[0], max(rows[1:4] or rows[:1], key=lambda c: c.approval)
        after = rows[-1]
        doubled = before.approval > 0 and best.approval >= 2 * before.approval
        plus30 = best.approval - before.approval >= 0.30
        lines.append(
            f"- rater prefers **{arm}**: approval {_pct(before.approval)}% -> {_pct(after.approval)}% after {after.cycle} cycles "
            f"(best within 3 cycles {_pct(best.approval)}%): {'doubled' if doubled else 'not doubled'}, "
            f"{'+30 points reached' if plus30 else '+30 points not reached'}."
        )
        if arm != main_style:
            s0, s1 = share(before, main_style), share(after, main_style)
            lines.append(f"  Share of {main_style} answers in this arm: {_pct(s0)}% -> {_pct(s1)}% ({'moved the other way' if s1 < s0 else 'did not move the other way'}).")
        if before.on_topic is not None:
            topic = " -> ".join(f"{_pct((c.on_topic or 0) / c.n if c.n else None)}%" for c in rows)
            lines.append(f"  On-topic share by cycle (mentions the subject, ends a sentence): {topic}.")
    return lines


# How the app's answers were decoded, said in each report (meta "decoding"): before 2026-12-07 the
# real model's answers through the app were greedy (docs/experiment-real/NOTES.md).
DECODING = (
    "sampled: every answer through the app at its LLM_TEMPERATURE (0.7 unless set), the server told to sample "
    "(LLM_TRANSFORMERS_SERVE), seeded per user message and attempt (LLM_SEED)"
)
UNRECORDED_DECODING = (
    "not recorded (runs before 2026-12-07: the app's answers were greedy for a model whose generation_config lacks "
    "do_sample, as the real default model's does, and sampled for the demo model, whose config samples)"
)


def write_outputs(results: Sequence[CycleResult], out_dir: Path, main_style: str, meta: dict[str, Any]) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "table": out_dir / "results.md", "plot": out_dir / "approval.png", "readme": out_dir / "README.md"}
    paths["json"].write_text(json.dumps({"meta": meta, "results": [asdict(c) for c in results]}, indent=1, default=str))
    table = markdown_table(results, main_style)
    paths["table"].write_text(table)
    plot(results, main_style, paths["plot"])
    config = meta.get("config", {})
    retrain = config.get("retrain", {})
    what_model, what_approval = (
        (
            f"sharing the demo model ({meta.get('model', '')}) served by the product's local model server",
            "(`HELDOUT_QUESTIONS`, never used in the simulated chats), each once in a new conversation, as a user who "
            "rates nothing. Approval = share of those answers whose style (`style_of`) the arm's rater prefers, without "
            "the rater's noise; 95% Wilson intervals.",
        )
        if config.get("model", "demo") != "real"
        else (
            f"sharing the real chat model ({meta.get('model', '')}, SmolLM2-135M-Instruct, answers of at most "
            f"{config.get('max_tokens')} tokens) served by the product's local model server",
            "(`sim/questions.py` HELDOUT_QUESTIONS: topics never used in the simulated chats), each once in a new "
            "conversation, as a user who rates nothing. Approval = share of those answers the arm's preference "
            "(`sim/preference.py`) likes, without the rater's noise; 95% Wilson intervals. Every preference requires "
            "the answer to be on topic (it mentions the question's subject and ends a sentence): the on-topic share "
            "is reported per cycle, so a collapse to empty, generic or cut-off answers would show.",
        )
    )
    lines = [
        "# Experiment: simulated raters vs the retraining loop",
        "",
        "Generated by `bench/experiment.py`; rerun it to refresh every file in this folder.",
        "",
        "Command (from the repository root):",
        "",
        f"    {meta.get('command', '')}",
        "",
        f"Date: {meta.get('date', '')}. Machine: {meta.get('machine', '')}"
        f"{'; load average ' + meta['load'] if meta.get('load') else ''}. Total time: **{meta.get('total_s', 0):.0f} s** "
        f"({meta.get('experiment_s', 0):.0f} s for the two arms, {meta.get('model_build_s', 0):.0f} s building the {'demo ' if config.get('model', 'demo') == 'demo' else ''}model"
        f"{' (cached: not counted)' if meta.get('model_cached') else ''}).",
        "",
        f"Decoding: {meta.get('decoding') or UNRECORDED_DECODING}.",
        "",
        "## What was done",
        "",
        f"Two arms, {'run at the same time (a process each)' if meta.get('parallel', True) else 'one after the other'}, each on a fresh Redis, data directory and Chainlit app, "
        f"{what_model} (`transformers serve`, "
        f"{config.get('torch_threads') or 'default'} torch threads; training also on {config.get('torch_threads') or 'default'} threads per arm). In each arm, "
        f"cycle 0 measures the base model; each of {config.get('cycles')} cycles then has "
        f"{config.get('raters')} simulated users hold {config.get('conversations')} conversations through the app "
        f"(socket.io and HTTP, as a browser: `sim/simulate.py`), rating as a `RaterPolicy` says "
        f"(rates {config.get('rate_probability')} of answers, flips {config.get('noise')} of ratings, "
        f"regenerates {config.get('regenerate_probability')} of disliked answers and rates the new one too), "
        f"then runs the retraining job (`training.job.run`: collect, build, train, evaluate, gate, promote) "
        f"with `lr={retrain.get('learning_rate')}`, `epochs={retrain.get('epochs')}`, `batch_size={retrain.get('batch_size')}`, "
        f"`lora_r={retrain.get('lora_r')}`, `beta={retrain.get('beta')}`, `method={retrain.get('method')}`, `margin={retrain.get('margin')}`, "
        f"{'continuing from the adapter in service' if retrain.get('continue_from_active', True) else 'from the base model each time'}"
        f"{' on the ratings its dataset lacked (`train_new_only`)' if retrain.get('train_new_only') else ''}; "
        f"then asks the app {config.get('eval_questions')} held-out questions {what_approval}",
        "",
        "## Results",
        "",
        "![approval per cycle](approval.png)",
        "",
        table,
        *verdict(results, main_style),
        "",
        "Columns: *job* is the retraining run's outcome (promoted: the gate found the candidate better and it is now "
        "in service; rejected: the model in service stays); *gate* is the preference accuracy of the candidate and of "
        "the model in service on the held-out split of the ratings, then (liked) the two models' mean log-prob per token "
        "of the held-out liked answers (the gate rejects a candidate more than max_liked_drop below); *ratings (up) / pairs asked* counts the cycle's "
        "ratings, thumbs up among them, and Regenerate clicks; *n* is answers classified.",
        "",
    ]
    paths["readme"].write_text("\n".join(lines))
    return paths


def machine() -> str:
    return f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


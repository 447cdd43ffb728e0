"""The retraining job: collect -> build -> train -> evaluate -> promote.

One run at a time across processes and machines: a Redis lock (redis-py's Lock: a token with an
expiry) that a crashed run cannot hold forever, kept alive while the run works. Every change the
run makes to shared state (registry, active model, watermark, dataset pointer) is written in one
transaction at the end, and only if the run still holds the lock: a crash at any step, or a
stale holder whose lock expired, leaves all of it as it was. Files it wrote (dataset shards, model
directories) stay on disk, unreferenced.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import redis
from redis.lock import Lock

from feedback import event as events
from feedback import keys, registry
from feedback import progress as live
from feedback import run as runs
from feedback.errors import LoopError, NotEnoughData
from feedback.event import UNKNOWN, RatingEvent, Unknown
from feedback.serving import ModelServer
from feedback.settings import Settings
from training.config import RetrainConfig

log = logging.getLogger(__name__)

class LostLockError(LoopError, RuntimeError):
    """The run's lock expired (e.g. the process stalled) and another run may have started."""


# What a run returns is what it records (feedback/run.py): its status, reason, dataset and model
# version, the gate's numbers, and (filled in when recorded) its start and duration.
Outcome = runs.RetrainRun


class _KeepAlive:
    """Renews the lock while the run works; a dead process stops renewing and the lock expires."""

    def __init__(self, lock: Lock, ttl_s: int) -> None:
        self.lock = lock
        self.ttl_s = ttl_s
        self.stop = threading.Event()
        self.lost = False
        self.thread = threading.Thread(target=self._run, name="retrain-lock", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.ttl_s / 3):
            try:
                self.lock.reacquire()
            except Exception:  # LockNotOwnedError or Redis trouble: the run must not commit
                self.lost = True
                return

    def __enter__(self) -> _KeepAlive:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@dataclass(frozen=True, slots=True)
class NewRatings:
    """What the trigger found since the last successful run."""

    counted: int  # compared with MIN_NEW_RATINGS: `changed`, at most `per_user` answers of each user
    changed: int  # answers whose rating is not what the last run saw (before the per-user bound)
    per_user: int | None  # the bound (None: none)
    bounded_users: int  # users who had more changed answers than the bound


def per_user_bound(share: float, min_new_ratings: int) -> int | None:
    """How many answers of one user count towards `min_new_ratings`: `share` of it, rounded up
    (None when the share does not bound anything)."""
    return None if share >= 1 or min_new_ratings <= 0 else math.ceil(share * min_new_ratings)


def count_new(r: redis.Redis, per_user: int | None = None, batch: int = 5000) -> NewRatings:
    """Answers whose rating changed since the last successful run (what the schedule compares with
    MIN_NEW_RATINGS): distinct answers, so one user flipping a thumb 50 times counts once; an
    answer whose rating is back at what the last run saw counts not at all (the first event after
    the watermark says, in "prev", what that was: the trimmed stream is not needed); and at most
    `per_user` answers of each user count. Only the values count: the dataset holds no reasons."""
    since = cast("str | None", r.get(keys.retrain_watermark()))
    seen: dict[tuple[str, str], tuple[int | Unknown | None, int | None, str]] = {}  # answer -> (value the run saw, value now, user)
    for _, entries in events.read_after(r, since, batch):
        for _, fields in entries:
            try:
                event = RatingEvent.from_fields(fields)
            except ValueError:  # not an event (collect skips it too)
                continue
            ref = (event.thread, event.exchange)
            first = seen.get(ref)
            seen[ref] = (event.prev if first is None else first[0], event.after, event.user)
    per: Counter[str] = Counter(user for saw, now, user in seen.values() if saw is UNKNOWN or saw != now)
    if per_user is None:
        return NewRatings(sum(per.values()), sum(per.values()), None, 0)
    return NewRatings(sum(min(n, per_user) for n in per.values()), sum(per.values()), per_user, sum(n > per_user for n in per.values()))


def new_ratings(r: redis.Redis, per_user: int | None = None, batch: int = 5000) -> int:
    """`count_new(...).counted`."""
    return count_new(r, per_user, batch).counted


def _waiting(found: NewRatings, needed: int) -> str:
    """Why a run is skipped: the count, and what the per-user bound left out."""
    bounded = ""
    if found.bounded_users:
        bounded = f" ({found.changed} before the bound of {found.per_user} per user, RETRAIN_USER_SHARE, which {found.bounded_users} user(s) passed)"
    return f"{found.counted} new ratings since the last run{bounded}; waiting for {needed}"


def retrain_lock(r: redis.Redis, ttl_s: int) -> Lock:
    """One retraining run at a time, and nothing that must not run beside one (dataset pruning):
    expires after ttl_s unless renewed; not thread-local, so the keepalive thread can renew it."""
    return r.lock(keys.retrain_lock(), timeout=ttl_s, blocking=False, thread_local=False)


def run(r: redis.Redis, settings: Settings, config: RetrainConfig, *, progress: bool = True, prepare_model: Callable[[], object] | None = None) -> Outcome:
    """One retraining run. Returns what happened; raises only for bugs (failures are recorded).

    `prepare_model` runs once the dataset is built, before training: the CLI converts the default
    model there, so a run that is skipped (too few ratings) never pays for it."""
    lock = retrain_lock(r, settings.retrain_lock_ttl_s)
    if not lock.acquire(blocking=False):
        return Outcome("skipped", "another retraining run is in progress")  # its progress stays
    started = time.time()
    _report(live.start, r, f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    outcome = Outcome("failed", "interrupted")  # what the progress says if the run never returns
    pushed: dict[str, Any] = {}  # the dataset's upload (--push-to-hub): recorded whatever the outcome
    try:
        with _KeepAlive(lock, settings.retrain_lock_ttl_s) as keepalive:
            outcome = _run_locked(r, settings, config, lock, keepalive, progress, prepare_model, pushed)
    except NotEnoughData as exc:  # too few ratings, one class, nothing new, all too long
        outcome = Outcome("skipped", str(exc))
    except LoopError as exc:  # a known failure (a model that cannot be loaded or converted): its message says what to do
        log.error("retraining run failed: %s", exc)
        outcome = Outcome("failed", f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # any crash: record it with its traceback, change nothing else
        log.exception("retraining run failed")
        outcome = Outcome("failed", f"{type(exc).__name__}: {exc}")
    finally:
        _report(live.finish, r, outcome.status)  # while the lock is held: the next run's start comes after
        try:
            lock.release()
        except Exception:  # expired already: nothing to release
            pass
    if pushed:
        outcome.details["push_to_hub"] = pushed
        if "error" in pushed:
            outcome.reason += f" (dataset {pushed['dataset_version']} not pushed to {pushed['repo']}: {pushed['error']})"
    _record(r, outcome, started)
    return outcome


def _run_locked(
    r: redis.Redis,
    settings: Settings,
    config: RetrainConfig,
    lock: Lock,
    keepalive: _KeepAlive,
    progress: bool,
    prepare_model: Callable[[], object] | None,
    pushed: dict[str, Any],
) -> Outcome:
    # Heavy imports here: the schedule and the CLI stay fast until a run really starts.
    from training import collect, dataset, evaluate, rebase, train

    if config.judge_prompts and not settings.judge_model:
        raise ValueError("judge_prompts needs a judge model: set JUDGE_MODEL (and JUDGE_BASE_URL, JUDGE_API_KEY unless the chat model's)")
    watermark = None if config.full_rebuild else cast("str | None", r.get(keys.retrain_watermark()))
    found = count_new(r, per_user_bound(settings.retrain_user_share, config.min_new_ratings))
    pending = found.counted
    if not config.full_rebuild and pending < config.min_new_ratings:
        return Outcome("skipped", _waiting(found, config.min_new_ratings), pending)

    service = registry.active(r)
    if service is not None and not registry.same_base(service.base_model, settings.effective_llm_model):
        raise registry.RegistryError(
            f"the model in service ({service.id}) was trained from base model {service.base_model}, not from the configured "
            f"{settings.effective_llm_model}: restart `chatbot up` (it puts the base model back in service) or set LLM_MODEL"
        )
    if service is not None and service.missing_files():
        raise FileNotFoundError(
            f"the model in service ({service.id}) points at missing files: {', '.join(service.missing_files())}; "
            "roll back with `chatbot model rollback` or promote another version"
        )
    collected = collect.collect(r, since=watermark, full=config.full_rebuild)
    previous = None if config.full_rebuild else cast("str | None", r.get(keys.retrain_dataset()))
    _report(live.step, r, "build")
    # gate: a held-out split the gate could not compare on skips the run before a version is written
    built = dataset.build(collected, config, settings.layout.datasets, previous, progress=progress, gate=True)
    data = dataset.load(settings.layout.datasets, built.version)
    if config.push_to_hub:
        pushed.update(_push(settings.layout.datasets, built.version, config.push_to_hub))
    _report(live.step, r, "train")
    if prepare_model is not None:
        prepare_model()

    service_name = service.served_name if service else settings.effective_llm_model
    init_adapter = service.adapter_path if service is not None and config.continue_from_active else None
    version_id = f"mv-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    weights = dict(desirable_weight=built.desirable_weight, undesirable_weight=built.undesirable_weight)
    if init_adapter is not None and config.train_new_only and service is not None:
        data, weights = _only_new(data, weights, settings.layout.datasets, service, config)
    if config.processes > 1:  # several GPUs: DDP processes of their own, this one waits
        trained = train.train_in_processes(
            config.processes, settings.layout.datasets, built.version, config, settings.effective_llm_model, init_adapter,
            settings.layout.model(version_id), progress=progress, **weights,
        )  # fmt: skip
    else:
        trained = train.train(
            data, config, settings.effective_llm_model, init_adapter, settings.layout.model(version_id),
            progress=progress, dataset_version=built.version, on_progress=_train_reporter(r), **weights,
        )  # fmt: skip
    _report(live.step, r, "evaluate")
    held, eval_prompt = rebase.with_served_prompt(data, r, settings.prompt_id)  # as the candidate would answer
    decision = evaluate.compare(
        str(trained.merged_dir), service_name, settings.effective_llm_model, held["kto_test"], held["dpo_test"], margin=config.margin, max_length=config.max_length,
        max_liked_drop=config.max_liked_drop,
    )
    if decision.promote and config.judge_prompts:
        decision = _judged(decision, held["kto_test"], config, settings, str(trained.merged_dir), service_name)
    _report(live.step, r, "decide")
    served_name = str(trained.merged_dir)
    if decision.promote and settings.vllm_lora:
        served_name = load_into_vllm(settings, version_id, trained.adapter_dir)
    version = registry.ModelVersion(
        id=version_id,
        parent=service.id if service else None,
        base_model=settings.effective_llm_model,
        served_name=served_name,
        adapter_path=str(trained.adapter_dir),
        dataset_version=built.version,
        method=trained.method,
        metrics={"train": trained.metrics, "candidate": decision.candidate, "service": decision.service, "eval_prompt": eval_prompt},
        status="rejected" if not decision.promote else "candidate",
        decision={"promote": decision.promote, "reason": decision.reason, "margin": config.margin, "compared_with": service.id if service else registry.BASE},
    )
    if decision.promote:
        # Loaded into the model server before the pointer moves (in _commit): the next user's
        # answer must not wait for the load. A server that can't load it fails the run
        # (WarmUpError, recorded with the reason) and nothing changes.
        ModelServer.of(settings).warm(served_name)
    _commit(r, lock, keepalive, version, service, decision.promote, collected.watermark, built.version)
    status: Literal["promoted", "rejected"] = "promoted" if decision.promote else "rejected"
    return Outcome(status, decision.reason, pending, built.version, version_id, {"candidate": decision.candidate, "service": decision.service})


def _push(root: Path, version: str, repo: str) -> dict[str, Any]:
    """Upload the dataset version (written and materialized: complete on disk either way). The Hub
    is not part of the run: an upload that fails (network, token, a refused repo) is logged and
    recorded with the run, whose result stands."""
    from training.dataset import hub

    try:
        return {"repo": repo, "dataset_version": version, "commit": hub.push(root, version, repo)}
    except Exception as exc:  # huggingface_hub's errors (HTTP, network, token) have no common base but Exception
        log.warning("dataset version %s was not pushed to %s: %s", version, repo, exc)
        return {"repo": repo, "dataset_version": version, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"}


def _only_new(data: Any, weights: dict[str, float], root: Path, service: registry.ModelVersion, config: RetrainConfig) -> tuple[Any, dict[str, float]]:
    """The training splits without the rows the adapter in service was trained on (same answer,
    same label: a flipped rating is new), with KTO weights for what is left. Every row when the
    service's dataset is gone or fewer than a batch of rows are new: too few to train on alone."""
    from training import dataset

    if not service.dataset_version:
        return data, weights
    try:
        seen = dataset.load(root, service.dataset_version)
    except Exception as exc:  # pruned by retention, or unreadable: train on everything
        log.warning("train_new_only: the service's dataset %s is not readable (%s); training on every row", service.dataset_version, exc)
        return data, weights
    old_kto = set(zip(seen["kto_train"]["exchange_id"], seen["kto_train"]["label"], strict=True))
    old_dpo = set(zip(seen["dpo_train"]["chosen_exchange_id"], seen["dpo_train"]["rejected_exchange_id"], strict=True))
    kto = data["kto_train"].filter(lambda row: (row["exchange_id"], row["label"]) not in old_kto, keep_in_memory=True)
    dpo = data["dpo_train"].filter(lambda row: (row["chosen_exchange_id"], row["rejected_exchange_id"]) not in old_dpo, keep_in_memory=True)
    if len(kto) < config.batch_size:
        log.info("train_new_only: %d new rows, fewer than a batch (%d); training on every row", len(kto), config.batch_size)
        return data, weights
    liked = sum(bool(x) for x in kto["label"])
    desirable, undesirable = dataset.class_weights(liked, len(kto) - liked)
    log.info("train_new_only: %d of %d KTO rows and %d of %d pairs are new", len(kto), len(data["kto_train"]), len(dpo), len(data["dpo_train"]))
    new = type(data)({**data, "kto_train": kto, "dpo_train": dpo})
    return new, dict(desirable_weight=desirable, undesirable_weight=undesirable)


def _judged(decision: Any, held_out: Any, config: RetrainConfig, settings: Settings, candidate: str, service: str) -> Any:
    """The judge's verdict on the two models' answers to held-out prompts (training/judge.py)."""
    from training import evaluate, judge

    prompts = judge.distinct_prompts(held_out["prompt"], config.judge_prompts)
    base_url, api_key = settings.effective_judge
    verdicts = judge.judge(
        prompts,
        judge.answers(candidate, prompts, config.judge_max_tokens),
        judge.answers(service, prompts, config.judge_max_tokens),
        base_url=base_url, model=str(settings.judge_model), api_key=api_key, timeout_s=settings.llm_timeout_s, seed=config.seed,
    )  # fmt: skip
    return evaluate.with_judge(decision, verdicts, config.judge_min_win_rate)


def load_into_vllm(settings: Settings, name: str, adapter_dir: Path) -> str:
    """Load a LoRA adapter into the vLLM server at LLM_BASE_URL; returns the model name to ask for.

    The adapter directory must be readable by the vLLM server (same machine or shared storage).
    """
    import httpx

    r = httpx.post(
        f"{settings.effective_llm_base_url}/load_lora_adapter",
        json={"lora_name": name, "lora_path": str(adapter_dir)},
        headers={"Authorization": f"Bearer {settings.llm_api_key.get_secret_value()}"},
        timeout=300,
    )
    if r.status_code != 200:
        raise RuntimeError(f"vLLM refused to load the adapter {adapter_dir} (HTTP {r.status_code}): {r.text[:300]}")
    return name


def _commit(
    r: redis.Redis,
    lock: Lock,
    keepalive: _KeepAlive,
    version: registry.ModelVersion,
    service: registry.ModelVersion | None,
    promote: bool,
    watermark: str | None,
    dataset_version: str,
) -> None:
    """Write the run's results in one transaction, only while this run still holds the lock."""
    token = lock.local.token
    token = token.decode() if isinstance(token, bytes) else token

    def write(pipe: redis.client.Pipeline) -> None:
        if keepalive.lost or pipe.get(keys.retrain_lock()) != token:
            raise LostLockError("the retraining lock expired before the results were saved; nothing was changed")
        pipe.multi()
        registry.add(r, version, pipe)
        if promote:
            registry.activate(pipe, version, service, version.decision)
        if watermark is not None:
            pipe.set(keys.retrain_watermark(), watermark)
        pipe.set(keys.retrain_dataset(), dataset_version)

    r.transaction(write, keys.retrain_lock())
    if watermark is not None:
        # Events up to the watermark are in the dataset now (a full rebuild lists the rating
        # indexes, not the streams): the streams keep only what is still to be read. (The streams
        # are on the buckets' slots, not in the transaction: trimming is only to save memory.)
        try:
            events.trim(r, watermark)
        except redis.RedisError as exc:
            log.warning("rating events not trimmed (they are read again, harmlessly): %s", exc)


def _report(write: Callable[..., None], r: redis.Redis, *args: Any) -> None:
    """Best effort: progress is for people watching the console; a Redis error must not fail the run."""
    try:
        write(r, *args)
    except redis.RedisError as exc:
        log.warning("could not report the retraining progress: %s", exc)


def _train_reporter(r: redis.Redis, every_s: float = 1.0) -> Callable[[int, int, float | None], None]:
    """What the trainer calls at each step: at most one write every `every_s`, and the last step's."""
    last = [-every_s]

    def report(step: int, steps: int, loss: float | None) -> None:
        now = time.monotonic()
        if step < steps and now - last[0] < every_s:
            return
        last[0] = now
        _report(live.train_step, r, step, steps, loss)

    return report


def _record(r: redis.Redis, outcome: Outcome, started: float) -> None:
    """Best effort: the runs log is for people; a Redis outage here must not hide the outcome."""
    outcome.started, outcome.seconds = started, time.time() - started
    try:
        runs.record(r, outcome)
    except redis.RedisError as exc:
        log.warning("could not record the retraining run: %s", exc)

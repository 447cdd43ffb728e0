"""Every Redis key the product uses, each with its type, writer and reader.

Keys spread over Redis Cluster by bucket. A thread and everything in it (its steps, elements,
answers, ratings, the op ids of writes into it) carry the hash tag of its thread's bucket, one of
`BUCKETS` tags `{fb.<k>.<n>}` (`tag`): the k-th lies in the k-th 64th of the slot space, so a
cluster's masters each serve their share of the buckets. So do the things a rating script updates
with the rating: the rating events, the approval counts and the review queue are one per bucket.
A user's record and thread list carry their user's bucket. What is global (the model registry,
the retraining job's state, prompts, experiments, the audit, limits) keeps the tag `{fb}`. Every
multi-key script or transaction touches one tag, so one slot. `tests/test_keys.py` pins these
strings: changing one is a data migration (`chatbot migrate spread` moved the keys of the first
layout, which put everything on `{fb}`: `legacy`).

Writers: "bot" is the chat process (bot/app.py), "data layer" its Chainlit persistence
(bot/datalayer.py), "job" the retraining job (training/).
"""

from __future__ import annotations

import re
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from feedback.errors import InvalidInput

PREFIX = "{fb}"
BUCKETS = 64  # a stored format: changing it is a data migration
_SLOTS_PER_BUCKET = REDIS_CLUSTER_HASH_SLOTS // BUCKETS

# What may be part of a key. Nothing else can: no ':' (another key's suffix), no '{' '}' (another
# hash slot), no '*' or spaces. Ids are Chainlit's uuids and our own hex or dated ids; user names
# are login names or e-mail addresses (header mode). Every builder below checks its parts, so no
# id from a client can name another key, whichever edge forgot to check it.
MAX_ID_CHARS = 64
ID_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID_CHARS}}}")
# \w: letters and digits of any script (an identity provider may well send "zoë"), and "_".
USER_PATTERN = re.compile(rf"[^\W_][\w.@+-]{{0,{MAX_ID_CHARS - 1}}}")


class _Wildcard(str):
    """The one "*" a builder accepts: only code can make it, so a SCAN pattern is always ours."""


ANY = _Wildcard("*")  # keys.rating(keys.ANY): the pattern matching every rating key


class KeyPartError(InvalidInput):
    """An id or user name that may not be part of a key (the edge answers 400)."""


def valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def valid_user(value: object) -> bool:
    return isinstance(value, str) and USER_PATTERN.fullmatch(value) is not None


def _id(value: str) -> str:
    if not (valid_id(value) or value is ANY):
        raise KeyPartError(f"invalid id {str(value)[:80]!r}: expected 1-{MAX_ID_CHARS} letters, digits, '_' or '-'")
    return value


def _user(value: str) -> str:
    if not (valid_user(value) or value is ANY):
        raise KeyPartError(f"invalid user name {str(value)[:80]!r}: expected 1-{MAX_ID_CHARS} letters, digits, '_', '.', '@', '+' or '-', starting with a letter or digit")
    return value


def bucket(thread_id: str) -> int:
    """The bucket of a thread (or a user name): where its slot lies in the slot space."""
    return key_slot(thread_id.encode()) // _SLOTS_PER_BUCKET


@cache
def _bucket_tags() -> tuple[str, ...]:
    """`{fb.<k>.<n>}` with n the first number putting the tag's slot in the k-th bucket (n <= 353)."""
    found = []
    for k in range(BUCKETS):
        n = 0
        while key_slot(f"fb.{k}.{n}".encode()) // _SLOTS_PER_BUCKET != k:
            n += 1
        found.append(f"{{fb.{k}.{n}}}")
    return tuple(found)


def bucket_tag(index: int) -> str:
    """The hash tag of bucket `index` (0 <= index < BUCKETS)."""
    if not (isinstance(index, int) and 0 <= index < BUCKETS):
        raise KeyPartError(f"invalid bucket {index!r}: expected 0-{BUCKETS - 1}")
    return _bucket_tags()[index]


def _thread_tag(thread_id: str) -> str:
    return "{fb.*}" if thread_id is ANY else _bucket_tags()[bucket(_id(thread_id))]


def _user_tag(user: str) -> str:
    return "{fb.*}" if user is ANY else _bucket_tags()[bucket(_user(user))]


# --- Model registry -----------------------------------------------------------------------------


def active_model() -> str:
    """STRING: name of the model in service, as sent to the model server (an id or a path).

    Writer: registry (promote, rollback). Reader: bot, per request; unset means LLM_MODEL.
    """
    return f"{PREFIX}:model:active"


def active_version() -> str:
    """STRING: registry id of the model version in service; unset means the base model.

    Writer: registry, together with active_model. Reader: bot (recorded with every answer), job.
    """
    return f"{PREFIX}:model:active_version"


def model_version(version_id: str) -> str:
    """HASH: one model version: id, parent, base_model, served_name, adapter_path,
    dataset_version, method, metrics (JSON), status (candidate, active, rejected, retired),
    decision (JSON), created_at, decided_at. Writer: job, registry. Reader: CLI, report.
    """
    return f"{PREFIX}:model:version:{_id(version_id)}"


def model_versions() -> str:
    """ZSET: model version ids scored by creation time. Writer: job. Reader: CLI, registry."""
    return f"{PREFIX}:model:versions"


def retrain_lock() -> str:
    """STRING (expires): token of the retraining run in progress (redis-py Lock): one run at a
    time across processes and machines; a crashed run's lock expires. Writer/reader: job.
    """
    return f"{PREFIX}:retrain:lock"


def retrain_watermark() -> str:
    """STRING: where the last successful retraining run stopped reading each bucket's rating
    events (feedback.watermark: JSON {bucket: stream id}; a plain stream id, as the first layout
    wrote it, stands for every bucket); moves only after success. Writer: job (with the registry
    update, atomically). Reader: job, scheduler.
    """
    return f"{PREFIX}:retrain:watermark"


def retrain_dataset() -> str:
    """STRING: the dataset version built by the last successful run: the next incremental build
    starts from it. Writer: job (with the watermark, atomically). Reader: job.
    """
    return f"{PREFIX}:retrain:dataset"


def retrain_runs() -> str:
    """STREAM: one entry per retraining run: outcome, counts, decision, errors.

    Writer: job. Reader: CLI, docs.
    """
    return f"{PREFIX}:retrain:runs"


def retrain_progress() -> str:
    """HASH: the running (or last) retraining run's progress: run, step (collect, build, train,
    evaluate, decide, done), started, updated, train_step, train_steps, loss, status.

    Writer: job. Reader: console (live progress).
    """
    return f"{PREFIX}:retrain:progress"


def retrain_request() -> str:
    """STRING: a "run now" asked for from the console (JSON: by, at); the schedule of `chatbot up`
    starts a run at its next tick and deletes it. Writer: console. Reader: schedule.
    """
    return f"{PREFIX}:retrain:request"


def retrain_next() -> str:
    """STRING (expires): when the schedule of `chatbot up` starts its next run (epoch seconds); it
    expires an interval after that, so a stopped `up` leaves no stale time. A run asked for does
    not move it. Writer: schedule. Reader: console.
    """
    return f"{PREFIX}:retrain:next"


# --- Operator console: aggregates, review queue, audit ---------------------------------------------


def approval_counts(index: int) -> str:
    """HASH: current ratings of bucket `index`'s threads counted per hour of the rated answer,
    prompt version, model version and value; field "<hour start, epoch s>|<prompt version>|<model
    version>|<0 or 1>" -> count. Kept in step with every rate, unrate and thread deletion, in the
    same script. Writer: rating script, thread deletion, stats rebuild. Reader: console overview
    (the buckets summed: no scan of the answers).
    """
    return f"{bucket_tag(index)}:stats:approval"


def stats_version() -> str:
    """STRING: the format of the aggregates above; missing: they were never built (data written
    before them) and `stats.rebuild` fills them. Writer: stats rebuild. Reader: console, `up`.
    """
    return f"{PREFIX}:stats:version"


def approval_counts_rebuilding(index: int, rebuild_id: str) -> str:
    """HASH: approval_counts(index) as one stats rebuild writes it before renaming it over the
    real key (expires after an hour if the rebuild dies). Writer/reader: stats rebuild.
    """
    return f"{approval_counts(index)}:rebuild:{_id(rebuild_id)}"


def review_queue_rebuilding(index: int, rebuild_id: str) -> str:
    """ZSET: review_queue(index) as one stats rebuild writes it before renaming it over the real
    key (expires after an hour if the rebuild dies). Writer/reader: stats rebuild.
    """
    return f"{review_queue(index)}:rebuild:{_id(rebuild_id)}"


def review_queue(index: int) -> str:
    """ZSET: bucket `index`'s answers whose current rating is a thumbs down (review_member),
    scored by the rating's time. Writer: rating script, thread deletion, stats rebuild. Reader: console review
    queue (the buckets merged by score).
    """
    return f"{bucket_tag(index)}:review:down"


def review_member(thread_id: str, exchange_id: str) -> str:
    """An answer in a review queue: "<thread id>/<exchange id>" (rate.lua writes the same)."""
    return f"{_id(thread_id)}/{_id(exchange_id)}"


def parse_review_member(value: str) -> tuple[str, str] | None:
    """(thread id, exchange id) of a queue member (or a form's "thread/answer"); None if malformed."""
    thread_id, _, exchange_id = value.partition("/")
    return (thread_id, exchange_id) if valid_id(thread_id) and valid_id(exchange_id) else None


def reviewed() -> str:
    """HASH: exchange id -> JSON {by, at}: thumbs-down answers an operator marked reviewed.
    Writer/reader: console.
    """
    return f"{PREFIX}:review:done"


def audit() -> str:
    """STREAM: what operators did and saw (capped): who, action, target, detail, ts. Writer:
    console (every state change, every view of another user's conversation). Reader: console.
    """
    return f"{PREFIX}:audit"


def audit_kind(kind: str) -> str:
    """ZSET: ids of the audit entries whose target is of this kind (the part before its first
    ":": "model", "thread", "dataset", ...), scored by the entry's time in ms; the member is the
    entry id with its sequence zero-padded (feedback.audit). Kept in step with the stream: the
    trim that drops old entries drops their members. Writer: feedback.audit.record. Reader:
    console pages (their audit tables).
    """
    return f"{PREFIX}:audit:kind:{_id(kind)}"


def audit_target(digest: str) -> str:
    """ZSET: like audit_kind, for one target (e.g. "thread:<id>"), named by the target's digest
    (feedback.audit.digest: a target may hold characters a key part may not). Writer:
    feedback.audit.record. Reader: console (the views of one conversation).
    """
    return f"{PREFIX}:audit:target:{_id(digest)}"


def audit_indexed() -> str:
    """STRING: the audit stream's entries up to this id are in the audit_kind/audit_target
    indexes (entries written before the indexes existed get there once, at the app's start).
    Writer: feedback.audit.reindex. Reader: the same.
    """
    return f"{PREFIX}:audit:indexed"


# --- Users and threads (Chainlit's history) -----------------------------------------------------


def user(identifier: str) -> str:
    """HASH: a user: id, identifier, createdAt, metadata (JSON). On the user's bucket.

    Writer/reader: data layer.
    """
    return f"{_user_tag(identifier)}:user:{_user(identifier)}"


def user_threads(user_id: str) -> str:
    """ZSET: a user's thread ids scored by last update (epoch s), for the history sidebar. On the
    user's bucket, so written beside (not inside) the scripts that write a thread: an id listed
    for a thread that is not the user's (a refused write) is not shown, and dropped.

    Writer: data layer (update_thread, create_step), bot (an answer replayed into a new thread).
    Reader: data layer (list_threads), console, migration.
    """
    return f"{_user_tag(user_id)}:user:{_user(user_id)}:threads"


def thread(thread_id: str) -> str:
    """HASH: a thread: id, name, userId, userIdentifier, createdAt, updatedAt, metadata, tags (JSON).

    Writer/reader: data layer.
    """
    return f"{_thread_tag(thread_id)}:thread:{_id(thread_id)}"


def thread_steps(thread_id: str) -> str:
    """ZSET: step ids of a thread scored by creation time (epoch s). Writer/reader: data layer."""
    return f"{thread(thread_id)}:steps"


def thread_elements(thread_id: str) -> str:
    """SET: element ids of a thread. Writer/reader: data layer."""
    return f"{thread(thread_id)}:elements"


def thread_exchanges(thread_id: str) -> str:
    """ZSET: exchange ids of a thread scored by creation time (epoch s).

    Writer: bot (with the exchange, atomically). Reader: data layer, job.
    """
    return f"{thread(thread_id)}:exchanges"


def thread_favorites(thread_id: str) -> str:
    """SET: ids of the thread's steps its user marked as favorite (a user's favorites: those of
    their threads). Writer: data layer (with the step). Reader: data layer.
    """
    return f"{thread(thread_id)}:favorites"


def step(thread_id: str, step_id: str) -> str:
    """HASH: a Chainlit step of the thread: data (the step dict as JSON, bot/stored_form.py),
    threadId, deleted ("1" when soft-deleted: an edited or regenerated answer stays, hidden, as
    the other side of a preference pair).

    Writer/reader: data layer.
    """
    return f"{_thread_tag(thread_id)}:step:{_id(step_id)}"


def element(thread_id: str, element_id: str) -> str:
    """STRING: a Chainlit element dict of the thread as JSON. Writer/reader: data layer."""
    return f"{_thread_tag(thread_id)}:element:{_id(element_id)}"


# --- Exchanges and ratings (the training data) ---------------------------------------------------


def exchange(thread_id: str, exchange_id: str) -> str:
    """HASH: one assistant answer in the thread, keyed by the id of the run step that produced it
    (Chainlit's Feedback.forId points at that run step): thread_id, user, message_id,
    prompt_message_id (the user message answered), the prompt exactly as sent, compactly (prefix:
    the digest of its fixed part, prompt_prefix(); history: JSON list of earlier turns, each the
    id of the answer of this thread holding it or a literal message; question; older records:
    messages, all as JSON), completion, prompt_id, prompt_version, model, model_version,
    experiment (when in one), created_at, latency_ms, first_token_ms, input_tokens,
    output_tokens, deleted ("1": hidden). Unrated, it expires UNRATED_EXCHANGE_TTL_DAYS after its
    thread's latest answer; the rating script keeps it and what it refers to.

    Writer: bot (with its thread index, atomically). Reader: rating path,
    data layer, job (all through feedback.exchange.Rebuild or its parts).
    """
    return f"{_thread_tag(thread_id)}:exchange:{_id(exchange_id)}"


def prompt_prefix(digest: str) -> str:
    """STRING: the fixed part of a prompt (system prompt, guidelines, few-shot examples) as JSON
    messages, stored once per content (digest: feedback.exchange.digest) and referred to by every
    exchange whose prompt starts with it. Never changed or deleted. Writer: bot (SET NX, before
    the exchange). Reader: every reader of exchanges (feedback.exchange.Rebuild, collect).
    """
    return f"{PREFIX}:prefix:{_id(digest)}"


def rating(thread_id: str, exchange_id: str) -> str:
    """HASH: the current rating of an exchange of the thread: value (0/1), comment, reasons
    (JSON), user, updated_at. Absent when unrated. Writer: rating script. Reader: data layer, job.
    """
    return f"{_thread_tag(thread_id)}:rating:{_id(exchange_id)}"


def thread_ratings(thread_id: str) -> str:
    """HASH: exchange id -> rating value, for the history's feedback filter and the job's full
    listing. Writer: rating script. Reader: data layer (list_threads), job.
    """
    return f"{thread(thread_id)}:ratings"


def thread_in(key: str) -> str | None:
    """The thread id in a key that thread() or a thread_... builder made (what SCAN lists)."""
    parts = key.split(":")
    return parts[2] if len(parts) >= 3 and parts[1] == "thread" and valid_id(parts[2]) else None


def events(index: int) -> str:
    """STREAM: append-only log of the rating changes (rate, unrate, delete) in bucket `index`'s
    threads, with exchange id, thread, user, value, ts and (rating script) prev, the value before.
    Writer: rating script, thread deletion. Reader: job (its watermark holds a stream id per bucket).
    """
    return f"{bucket_tag(index)}:events"


def applied_op(thread_id: str, op_id: str) -> str:
    """STRING (expires): marks a write into the thread as applied, so replaying the local spool
    after a Redis outage never applies a write twice. Writer/reader: the Lua scripts in feedback/.
    """
    return f"{_thread_tag(thread_id)}:op:{_id(op_id)}"


def layout() -> str:
    """STRING: the key layout the data is in: "spread" once `chatbot migrate spread` moved the
    first layout's keys (or there were none). Writer: migration. Reader: `chatbot up`, migration.
    """
    return f"{PREFIX}:layout"


# --- The first layout (everything on {fb}): read by `chatbot migrate spread` only ------------------

_LEGACY = {
    "thread": "thread:{}",
    "thread_steps": "thread:{}:steps",
    "thread_elements": "thread:{}:elements",
    "thread_exchanges": "thread:{}:exchanges",
    "thread_ratings": "thread:{}:ratings",
    "step": "step:{}",
    "element": "element:{}",
    "exchange": "exchange:{}",
    "rating": "rating:{}",
    "alternatives": "alternatives:{}",
    "user": "user:{}",
    "user_threads": "user:{}:threads",
    "user_favorites": "user:{}:favorites",
    "events": "events",
    "approval_counts": "stats:approval",
    "review_queue": "review:down",
}


def legacy(kind: str, part: str = "") -> str:
    """STRING, HASH, LIST, SET, ZSET or STREAM: a key of the first layout, where every key carried
    `{fb}` (kind: the builder above that replaced it; alternatives: LIST of the exchange ids
    answering one user message, no longer kept). Writer: none (was: everything). Reader: migration.
    """
    template = _LEGACY[kind]
    if "{}" in template:
        template = template.format(_user(part) if kind.startswith("user") else _id(part))
    return f"{PREFIX}:{template}"


# --- Prompt versions ----------------------------------------------------------------------------------


def prompt_versions(prompt_id: str) -> str:
    """HASH: version -> the spec as JSON (feedback.prompt.PromptSpec), immutable once written.
    Writer: feedback.prompt.publish (`chatbot prompt publish`, and the shipped files at start).
    Reader: the app (the spec of each conversation's version), the CLI.
    """
    return f"{PREFIX}:prompt:{_id(prompt_id)}:versions"


def prompt_served(prompt_id: str) -> str:
    """STRING: the version new conversations get. Writer: `chatbot prompt serve`, the app at
    start (PROMPT_VERSION, else the newest shipped when unset). Reader: the app, per new
    conversation (a thread keeps the version of its first answer).
    """
    return f"{PREFIX}:prompt:{_id(prompt_id)}:served"


def prompt_experiment(prompt_id: str) -> str:
    """STRING: the id of the experiment running for this prompt (one at a time: set only when
    unset). Writer: feedback.experiment (start; stop or a decision clears it). Reader: the app, per
    new conversation; the CLI.
    """
    return f"{PREFIX}:prompt:{_id(prompt_id)}:experiment"


def prompt_experiments(prompt_id: str) -> str:
    """ZSET: every experiment started for this prompt, scored by its start time. Writer:
    feedback.experiment (start, with the experiment). Reader: console, CLI.
    """
    return f"{PREFIX}:prompt:{_id(prompt_id)}:experiments"


def experiment(experiment_id: str) -> str:
    """HASH: an experiment (feedback.experiment.Experiment): arms, policy, plan, status, the
    running test's state and its last decision. Writer/reader: feedback.experiment.
    """
    return f"{PREFIX}:experiment:{_id(experiment_id)}"


def experiment_assignments(experiment_id: str) -> str:
    """HASH: thread id -> arm (prompt version), set once per thread (HSETNX: sticky, and a crash
    loses none). Writer: the app, at a conversation's first message. Reader: the experiment's
    status (its threads), the app.
    """
    return f"{PREFIX}:experiment:{_id(experiment_id)}:assignments"


# --- Sessions and limits (the edge: bot/edge.py) ---------------------------------------------------


def revoked_token(token_digest: str) -> str:
    """STRING (expires): a login token that was logged out, by its digest (never the token), kept
    until the token expires. Writer: edge (logout). Reader: edge, on every request and socket
    connection.
    """
    return f"{PREFIX}:token:revoked:{_id(token_digest)}"


def limit(kind: str, subject_digest: str) -> str:
    """ZSET: the allowed hits of one subject (a user; a client address and user name: by digest)
    in the last window, hit id -> time in ms on Redis's clock (a sliding-window log); expires a
    window after its latest hit.

    Writer/reader: feedback/limiter.py (lua/limit.lua).
    """
    return f"{PREFIX}:limit:{_id(kind)}:{_id(subject_digest)}"

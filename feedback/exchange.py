"""An exchange: one assistant answer with everything needed to learn from it later.

The prompt messages are stored compactly and rebuilt exactly on reading: the prompt's fixed part
(system prompt, guidelines, few-shot examples: the same for every answer of a prompt version) is
stored once per content (keys.prompt_prefix), an earlier turn of the thread as the id of the
answer that holds it (its question and completion), and only the rest as literal messages. Every
reader goes through `Rebuild` (or, for the retraining job's bulk read, training.collect's reader,
which uses the same parts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis as sync_redis
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from feedback import keys
from feedback.scripts import lua
from feedback.thread import iso

log = logging.getLogger(__name__)

# How long a write's id is remembered, so a spool replay never applies it twice.
OP_TTL_S = 7 * 24 * 3600

SAVE_SCRIPT = lua("save_exchange")  # the exchange with its indexes and thread, once per op id

# Fields of the stored hash that hold the prompt (the rest are Exchange's own fields).
PREFIX_FIELD = "prefix"  # digest of the fixed part (keys.prompt_prefix); absent: none
HISTORY_FIELD = "history"  # JSON list: an answer id (its question and completion) or a literal message
QUESTION_FIELD = "question"  # the last message: the user's, answered
LEGACY_FIELD = "messages"  # before the compact form: every message, as JSON (still read)
PROMPT_FIELDS = (PREFIX_FIELD, HISTORY_FIELD, QUESTION_FIELD, LEGACY_FIELD)


class PromptMessage(BaseModel):
    """One message exactly as sent to the model (OpenAI roles)."""

    role: str
    content: str


class TurnRef(BaseModel):
    """An earlier answer of the same thread, as the prompt may repeat it."""

    exchange_id: str
    question: str
    answer: str


class Exchange(BaseModel):
    # The run step that produced the answer: Chainlit's Feedback.forId points at it.
    id: str
    thread_id: str
    user: str
    message_id: str | None = None
    # The user message answered; regenerated or edited answers share it.
    prompt_message_id: str
    messages: list[PromptMessage]
    completion: str
    prompt_id: str
    prompt_version: str
    model: str
    model_version: str = "base"  # registry version id; "base": the configured model
    experiment: str | None = None  # the prompt experiment this answer's conversation is in
    created_at: float = Field(default_factory=time.time)
    latency_ms: float | None = None
    first_token_ms: float | None = None
    input_tokens: int | None = None  # when the model server reports usage
    output_tokens: int | None = None
    deleted: bool = False
    # How `messages` is stored, not stored themselves (the spool keeps them, so a replay stores
    # the same): the first `prefix_size` messages are the prompt's fixed part, and an earlier
    # turn equal to one of `turns` (this thread's earlier answers) is stored as that answer's id.
    prefix_size: int = 0
    turns: list[TurnRef] = Field(default_factory=list)

    def prefix(self) -> list[dict[str, str]]:
        """The fixed part of the prompt as stored once (empty when none is stored)."""
        messages = [m.model_dump() for m in self.messages]
        return messages[: _fixed_size(messages, self.prefix_size)]

    def to_hash(self) -> dict[str, str]:
        data = self.model_dump(exclude_none=True, exclude={"messages", "prefix_size", "turns", "deleted"})
        for timing in ("latency_ms", "first_token_ms"):  # a tenth of a ms is plenty
            if timing in data:
                data[timing] = round(data[timing], 1)
        fields = {k: str(v) for k, v in data.items()}
        if self.deleted:  # absent: shown
            fields["deleted"] = "1"
        return {**fields, **prompt_fields([m.model_dump() for m in self.messages], self.prefix_size, self.turns, self.id)}


def prompt_fields(messages: list[dict[str, str]], prefix_size: int, turns: list[TurnRef], own_id: str) -> dict[str, str]:
    """The stored fields of a prompt: the digest of its first `prefix_size` messages, its history
    (a turn equal to one of `turns` as that answer's id) and its question."""
    if not _chat_turn(messages):  # kept as sent
        return {LEGACY_FIELD: _json(messages)}
    n = _fixed_size(messages, prefix_size)
    fields = {PREFIX_FIELD: digest(messages[:n])} if n else {}
    history = _history(messages[n:-1], {(t.question, t.answer): t.exchange_id for t in turns if t.exchange_id != own_id})
    if history:
        fields[HISTORY_FIELD] = _json(history)
    fields[QUESTION_FIELD] = messages[-1]["content"]
    return fields


def _chat_turn(messages: list[dict[str, str]]) -> bool:
    """Messages that end with the user's: only those are stored compactly."""
    return bool(messages) and messages[-1]["role"] == "user"


def _fixed_size(messages: list[dict[str, str]], prefix_size: int) -> int:
    """How many of `messages` are stored as the fixed part: `prefix_size`, where the messages are a
    chat turn with something after it; else none."""
    return prefix_size if _chat_turn(messages) and 0 < prefix_size < len(messages) else 0


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def digest(prefix: list[dict[str, str]]) -> str:
    """The content address of a prompt's fixed part."""
    return hashlib.sha256(_json(prefix).encode()).hexdigest()[:32]


def _history(body: list[dict[str, str]], known: Mapping[tuple[str, str], str]) -> list[str | dict[str, str]]:
    """The messages between the fixed part and the question: a (user, assistant) pair equal to a
    known answer becomes that answer's id; anything else stays literal."""
    out: list[str | dict[str, str]] = []
    i = 0
    while i < len(body):
        if i + 1 < len(body) and body[i]["role"] == "user" and body[i + 1]["role"] == "assistant":
            ref = known.get((body[i]["content"], body[i + 1]["content"]))
            if ref is not None:
                out.append(ref)
                i += 2
                continue
        out.append(body[i])
        i += 1
    return out


def refs_of(data: Mapping[str, str]) -> list[str]:
    """The answer ids a stored exchange's prompt refers to."""
    raw = data.get(HISTORY_FIELD)
    return [h for h in json.loads(raw) if isinstance(h, str)] if raw else []


def question_of(data: Mapping[str, str | None]) -> str:
    """The user's message a stored exchange answers, without rebuilding the rest."""
    question = data.get(QUESTION_FIELD)
    if question is not None:
        return question
    legacy = data.get(LEGACY_FIELD)
    messages = json.loads(legacy) if legacy else []
    return next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")


class MissingPart(KeyError):
    """A stored prompt refers to a fixed part or an answer that is not there (anymore)."""


def messages_of(data: Mapping[str, str], prefixes: Mapping[str, list[dict[str, str]]], answers: Mapping[str, tuple[str, str]]) -> list[dict[str, str]]:
    """The exact messages of a stored exchange, from its fields, the fixed parts by digest and the
    (question, completion) of the answers it refers to. Raises MissingPart."""
    legacy = data.get(LEGACY_FIELD)
    if legacy is not None:
        return cast(list[dict[str, str]], json.loads(legacy))
    out: list[dict[str, str]] = []
    if PREFIX_FIELD in data:
        if data[PREFIX_FIELD] not in prefixes:
            raise MissingPart(f"prompt prefix {data[PREFIX_FIELD]}")
        out += prefixes[data[PREFIX_FIELD]]
    for item in json.loads(data.get(HISTORY_FIELD) or "[]"):
        if isinstance(item, str):
            if item not in answers:
                raise MissingPart(f"earlier answer {item}")
            question, answer = answers[item]
            out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        else:
            out.append(item)
    out.append({"role": "user", "content": data[QUESTION_FIELD]})
    return out


def from_hash(data: Mapping[str, str], prefixes: Mapping[str, list[dict[str, str]]], answers: Mapping[str, tuple[str, str]]) -> Exchange:
    fields: dict[str, Any] = {k: v for k, v in data.items() if k not in PROMPT_FIELDS}
    fields["messages"] = messages_of(data, prefixes, answers)
    fields["prefix_size"] = len(prefixes[data[PREFIX_FIELD]]) if PREFIX_FIELD in data and LEGACY_FIELD not in data else 0
    fields["deleted"] = data.get("deleted") == "1"
    return Exchange.model_validate(fields)


# The fixed parts read so far, by digest: content-addressed, so never stale (a few per version).
_PREFIXES: dict[str, list[dict[str, str]]] = {}


Ref = tuple[str, str]  # (thread id, answer id): where an answer is (keys.exchange)


def queue_parts(pipe: Any, digests: list[str], refs: list[Ref]) -> None:
    """The reads of the parts prompts refer to, on a pipeline (sync or async): a GET per fixed
    part, an HMGET per answer (its question, its older literal messages, its completion)."""
    for d in digests:
        pipe.get(keys.prompt_prefix(d))
    for thread_id, ref in refs:
        pipe.hmget(keys.exchange(thread_id, ref), QUESTION_FIELD, LEGACY_FIELD, "completion")


def read_parts(digests: list[str], refs: list[Ref], replies: list[Any]) -> tuple[dict[str, list[dict[str, str]]], dict[str, tuple[str, str]]]:
    """The replies of `queue_parts`: the fixed parts' messages by digest, and (question,
    completion) by answer id; what is gone is left out."""
    prefixes = {d: json.loads(raw) for d, raw in zip(digests, replies, strict=False) if raw is not None}
    answers = {
        ref: (question_of({QUESTION_FIELD: question, LEGACY_FIELD: legacy}), completion)
        for (_, ref), (question, legacy, completion) in zip(refs, replies[len(digests) :], strict=False)
        if completion is not None
    }
    return prefixes, answers


class Rebuild:
    """Stored exchanges (HGETALL replies) to Exchange records: what else must be read (the fixed
    parts not known yet, the answers referred to that are not among the rows), then the records.
    The async and the blocking readers each run the reads on their own client."""

    def __init__(self, rows: Iterable[Mapping[str, str]]) -> None:
        self.rows = [row for row in rows if row]
        self.answers: dict[str, tuple[str, str]] = {row["id"]: (question_of(row), row.get("completion", "")) for row in self.rows if "id" in row}
        self.prefixes = [d for d in {row[PREFIX_FIELD] for row in self.rows if PREFIX_FIELD in row} if d not in _PREFIXES]
        self.refs = sorted({(row.get("thread_id", ""), ref) for row in self.rows for ref in refs_of(row) if ref not in self.answers})

    def queue(self, pipe: Any) -> None:
        queue_parts(pipe, self.prefixes, self.refs)

    def records(self, replies: list[Any]) -> list[Exchange]:
        """The rows as records, given the pipeline's replies; a row whose parts are gone (or that
        this code can't read) is left out, with a warning."""
        prefixes, answers = read_parts(self.prefixes, self.refs, replies)
        _PREFIXES.update(prefixes)
        self.answers.update(answers)
        out = []
        for row in self.rows:
            try:
                out.append(from_hash(row, _PREFIXES, self.answers))
            except (MissingPart, ValueError, KeyError) as exc:
                log.warning("exchange %s can't be read: %s: %s", row.get("id"), type(exc).__name__, exc)
        return out

    def needs_reads(self) -> bool:
        return bool(self.prefixes or self.refs)


async def rebuild(r: Redis, rows: Iterable[Mapping[str, str]]) -> list[Exchange]:
    build = Rebuild(rows)
    replies: list[Any] = []
    if build.needs_reads():
        async with r.pipeline(transaction=False) as pipe:
            build.queue(pipe)
            replies = await pipe.execute()
    return build.records(replies)


def rebuild_sync(r: sync_redis.Redis, rows: Iterable[Mapping[str, str]]) -> list[Exchange]:
    build = Rebuild(rows)
    replies: list[Any] = []
    if build.needs_reads():
        pipe = r.pipeline(transaction=False)
        build.queue(pipe)
        replies = pipe.execute()
    return build.records(replies)


def save_call(exchange: Exchange, op_id: str, ttl_s: int = 0) -> tuple[list[str], list[str | int | float]]:
    """(keys, args) of SAVE_SCRIPT for this exchange: what `save` runs (and bulk seeding pipelines).
    `ttl_s`: an unrated answer's lifetime (0: kept); a rating keeps it, and what it refers to."""
    data = exchange.to_hash()
    fields = [x for kv in data.items() for x in kv]
    refs = refs_of(data)
    thread_id = exchange.thread_id
    keys_ = [
        keys.exchange(thread_id, exchange.id),
        keys.thread_exchanges(thread_id),
        keys.applied_op(thread_id, op_id),
        keys.thread(thread_id),
        *(keys.exchange(thread_id, ref) for ref in refs),
    ]
    created = iso(exchange.created_at)
    question = exchange.messages[-1].content[:200] if exchange.messages else ""
    args: list[str | int | float] = [OP_TTL_S, exchange.id, exchange.created_at, exchange.user, exchange.thread_id, created, question, ttl_s, *fields]
    return keys_, args


def prefix_entry(prefix: list[dict[str, str]]) -> tuple[str, str]:
    """(key, value) of a fixed part, written once per content (SET NX) before what refers to it."""
    return keys.prompt_prefix(digest(prefix)), _json(prefix)


def prefix_write(exchange: Exchange) -> tuple[str, str] | None:
    """`prefix_entry` of the exchange's fixed part; None when it stores none."""
    prefix = exchange.prefix()
    return prefix_entry(prefix) if prefix else None


async def save(r: Redis, exchange: Exchange, op_id: str, ttl_s: int = 0) -> bool:
    """Store the exchange with its thread index, atomically and idempotently.

    Returns False when this op id was already applied (a spool replay). An earlier answer the
    prompt would refer to that is not stored (lost, expired) is stored literally instead.
    """
    keys_, args = save_call(exchange, op_id, ttl_s)
    prefix = prefix_write(exchange)
    async with r.pipeline(transaction=False) as pipe:  # one round trip (on a cluster: one per node)
        if prefix is not None:  # the fixed part before anything refers to it
            pipe.set(*prefix, nx=True)
        # A replayed answer may be the first write into its thread: listed for its user (NX: a
        # listed thread keeps its place; on another slot, so not inside the script).
        pipe.zadd(keys.user_threads(exchange.user), {exchange.thread_id: exchange.created_at}, nx=True)
        pipe.eval(SAVE_SCRIPT, len(keys_), *keys_, *args)
        applied = (await pipe.execute())[-1]
    if applied == -1:
        keys_, args = save_call(exchange.model_copy(update={"turns": []}), op_id, ttl_s)
        applied = await r.eval(SAVE_SCRIPT, len(keys_), *keys_, *args)
    return bool(applied == 1)


async def load(r: Redis, thread_id: str, exchange_id: str) -> Exchange | None:
    data = cast(dict[str, str], await r.hgetall(keys.exchange(thread_id, exchange_id)))
    if not data:
        return None
    found = await rebuild(r, [data])
    return found[0] if found else None


async def for_thread(r: Redis, thread_id: str) -> list[Exchange]:
    ids = cast(list[str], await r.zrange(keys.thread_exchanges(thread_id), 0, -1))
    async with r.pipeline(transaction=False) as pipe:
        for exchange_id in ids:
            pipe.hgetall(keys.exchange(thread_id, exchange_id))
        rows = await pipe.execute()
    return await rebuild(r, rows)


def load_sync(r: sync_redis.Redis, thread_id: str, exchange_id: str) -> Exchange | None:
    """`load` for blocking callers (the CLI, the job, tools)."""
    data = cast(dict[str, str], r.hgetall(keys.exchange(thread_id, exchange_id)))
    found = rebuild_sync(r, [data]) if data else []
    return found[0] if found else None


def thread_rows_sync(r: sync_redis.Redis, thread_id: str) -> list[dict[str, str]]:
    """A thread's stored exchanges as they are (HGETALL replies), oldest first; gone ones left out."""
    ids = cast(list[str], r.zrange(keys.thread_exchanges(thread_id), 0, -1))
    pipe = r.pipeline(transaction=False)
    for exchange_id in ids:
        pipe.hgetall(keys.exchange(thread_id, exchange_id))
    return [row for row in pipe.execute() if row]


def for_thread_sync(r: sync_redis.Redis, thread_id: str) -> list[Exchange]:
    """`for_thread` for blocking callers."""
    return rebuild_sync(r, thread_rows_sync(r, thread_id))

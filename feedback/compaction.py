"""Compaction: rewriting the answers stored before the compact prompt form (every prompt message
literally in a `messages` field) in that form (feedback/exchange.py), thread by thread.

Idempotent and resumable: an answer already compact is left alone, so a second run (or one after
an interrupted run) only does what is left. Nothing is lost on the way: each answer's new fields
are rebuilt and compared with its messages before anything is written, the write happens only if
the messages are still the ones read (a script compares their SHA-1), and each thread's answers
are read back through the product's reader afterwards. An answer that would not rebuild exactly
stays as it was (counted).

The fixed part of a prompt is the published prompt version's (system prompt and few-shot examples,
`PromptSpec.prefix_messages`) when the answer's messages start with it, else its leading system
messages; earlier turns become references to the answers of the same thread written before it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis

from feedback import exchange as exchanges
from feedback import keys
from feedback.errors import LoopError
from feedback.prompt import PromptSpec
from feedback.scripts import lua

COMPACT_SCRIPT = lua("compact_exchange")


class CompactionError(LoopError):
    """An answer that was rewritten does not read back as it was (nothing after it is touched)."""


@dataclass
class Compaction:
    threads: int = 0
    answers: int = 0  # seen
    converted: int = 0  # rewritten by this run
    already: int = 0  # compact before this run
    kept: int = 0  # left literal: would not rebuild exactly, or changed while this ran
    bytes_before: int = 0  # of the converted answers' prompt fields
    bytes_after: int = 0


def compact(r: redis.Redis, on_progress: Callable[[Compaction], None] | None = None) -> Compaction:
    """Compact every thread's answers; `r` decodes responses. Raises CompactionError when a
    rewritten answer does not read back exactly as before."""
    done = Compaction()
    specs: dict[tuple[str, str], list[dict[str, str]] | None] = {}
    for index_key in cast("list[str]", list(r.scan_iter(match=keys.thread_exchanges(keys.ANY), count=500))):
        thread_id = keys.thread_in(index_key)
        if thread_id is None:
            continue  # not a key the product wrote
        _thread(r, thread_id, specs, done)
        done.threads += 1
        if on_progress is not None:
            on_progress(done)
    return done


def _thread(r: redis.Redis, thread_id: str, specs: dict[tuple[str, str], list[dict[str, str]] | None], done: Compaction) -> None:
    rows = exchanges.thread_rows_sync(r, thread_id)
    done.answers += len(rows)
    turns = sorted(((float(row.get("created_at") or 0), exchanges.TurnRef(exchange_id=row["id"], question=exchanges.question_of(row), answer=row.get("completion", ""))) for row in rows if "id" in row), key=lambda t: t[0])
    answers = {t.exchange_id: (t.question, t.answer) for _, t in turns}
    before: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        legacy = row.get(exchanges.LEGACY_FIELD)
        if legacy is None:
            done.already += 1
            continue
        messages = cast("list[dict[str, str]]", json.loads(legacy))
        created = float(row.get("created_at") or 0)
        prefix_size = _prefix_size(r, messages, row.get("prompt_id", ""), row.get("prompt_version", ""), specs)
        earlier = [t for at, t in turns if at < created]
        fields = exchanges.prompt_fields(messages, prefix_size, earlier, row["id"])
        prefixes = {fields[exchanges.PREFIX_FIELD]: messages[:prefix_size]} if exchanges.PREFIX_FIELD in fields else {}
        try:
            exact = exchanges.LEGACY_FIELD not in fields and exchanges.messages_of(fields, prefixes, answers) == messages
        except exchanges.MissingPart:
            exact = False
        if not exact:
            done.kept += 1
            continue
        if prefixes:
            r.set(*exchanges.prefix_entry(messages[:prefix_size]), nx=True)
        flat = [x for kv in fields.items() for x in kv]
        if r.eval(COMPACT_SCRIPT, 1, keys.exchange(thread_id, row["id"]), hashlib.sha1(legacy.encode()).hexdigest(), *flat) == 1:
            done.converted += 1
            done.bytes_before += len(legacy.encode())
            done.bytes_after += sum(len(v.encode()) for v in fields.values())
            before[row["id"]] = messages
        else:
            done.kept += 1  # changed (or deleted) since it was read
    if before:
        read = {e.id: [m.model_dump() for m in e.messages] for e in exchanges.for_thread_sync(r, thread_id)}
        wrong = [i for i, messages in before.items() if read.get(i) != messages]
        if wrong:
            raise CompactionError(f"thread {thread_id}: {len(wrong)} rewritten answer(s) do not read back as before, e.g. {wrong[0]}")


def _prefix_size(r: redis.Redis, messages: list[dict[str, str]], prompt_id: str, version: str, specs: dict[tuple[str, str], list[dict[str, str]] | None]) -> int:
    """How many of `messages` are the prompt's fixed part."""
    if (prompt_id, version) not in specs:
        raw = r.hget(keys.prompt_versions(prompt_id), version) if keys.valid_id(prompt_id) else None
        specs[(prompt_id, version)] = PromptSpec.model_validate_json(cast(str, raw)).prefix_messages() if raw else None
    spec = specs[(prompt_id, version)]
    if spec and len(messages) > len(spec) and messages[: len(spec)] == spec:
        return len(spec)
    n = 0
    while n < len(messages) - 1 and messages[n]["role"] == "system":
        n += 1
    return n


def summary(done: Compaction) -> dict[str, Any]:
    return {
        "threads": done.threads,
        "answers": done.answers,
        "converted": done.converted,
        "already compact": done.already,
        "left as they were": done.kept,
        "prompt bytes before": done.bytes_before,
        "prompt bytes after": done.bytes_after,
    }

"""Step 1 of the retraining job: find the rated exchanges to (re)read from Redis.

Incremental mode reads the rating event streams (`keys.events(bucket)`, one per bucket of
threads) after the last successful run's watermark (a stream id per bucket): every exchange an
event names (rate, unrate, delete) is re-read in its *current* state, so the last rating wins, and one whose rating is gone by now is forgotten, whatever the
events said. Full mode lists every rated exchange from the per-thread rating indexes
(`keys.thread_ratings`, on every master of a cluster), which the rating script writes atomically
with each rating.

`collect` only gathers ids (a few dozen bytes each; in full mode not even that: a thread lists
them, `LIST_RATED`, while the rows are read); the rows themselves are read by
`Collected.batches()`, `batch` exchanges per round trip, while the dataset build consumes them. A
million rows are never all in memory at once: their texts alone would take more than a gigabyte.
Ids come grouped by thread, so a thread's turns (each of whose prompts repeats the earlier turns)
are processed together. Rows are plain slotted dataclasses: no pydantic validation per row.

Prompts stored compactly (feedback.exchange: a fixed part by digest, earlier turns as answer ids) are
rebuilt per batch from the rows themselves, a cache of fixed parts and one read of what is missing.

Reading speed: the client's per-reply-item work (redis-py packing each command, the parser
building one Python object per field) was half of a full build's CPU. A Lua script
(`PACKED_ROWS`) therefore HMGETs an exchange and its rating server-side and returns the row as ONE
string, its fields joined by NUL after a presence mask: one command per bucket's rows of a batch
(at most `SCRIPT_ROWS`: a script's keys are in one slot on a cluster) and one reply item per row, split in C by `str.split`. A field that contains a NUL itself (possible
only in free text) shows up as a wrong part count and that row is read again with plain HMGETs.
The next batch's script calls are sent before the current batch is parsed and consumed, so Redis
works on them meanwhile (one batch of replies waits in the socket: ~5 KB a row); on a cluster,
to each master on a connection of its own.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import cast

import orjson
import redis
from redis.connection import AbstractConnection

from feedback import event as events
from feedback import keys
from feedback.event import RatingEvent
from feedback.exchange import LEGACY_FIELD, PROMPT_FIELDS, Exchange, Ref, question_of, queue_parts, read_parts
from feedback.rating import StoredRating
from feedback.scripts import lua

SyncRedis = redis.Redis  # (a class below has a field named `redis`)
log = logging.getLogger(__name__)


# The hash fields read per row: HMGET gets a third of HGETALL's reply items, and parsing reply
# items is most of the read time with redis-py's pure-Python parser. Bytes: redis-py packs them
# without encoding each one again (8% of the read time).
EXCHANGE_FIELDS = tuple(
    f.encode()
    for f in ("thread_id", "user", *PROMPT_FIELDS, "completion", "prompt_message_id", "prompt_id", "prompt_version", "model", "model_version", "created_at")
)
RATING_FIELDS = tuple(f.encode() for f in ("value", "comment", "reasons", "updated_at"))
# Field names are the records' own (feedback.exchange.Exchange, feedback.rating.StoredRating): a
# rename there fails here, at import, not as rows silently missing a field.
assert {f.decode() for f in EXCHANGE_FIELDS} <= {*Exchange.model_fields, *PROMPT_FIELDS}, "EXCHANGE_FIELDS names a field Exchange lacks"
assert {f.decode() for f in RATING_FIELDS} <= set(StoredRating.__annotations__), "RATING_FIELDS names a field StoredRating lacks"
_N_FIELDS = len(EXCHANGE_FIELDS) + len(RATING_FIELDS)
_ALL_PRESENT = "1" * _N_FIELDS

PACKED_ROWS = lua("packed_rows", EXCHANGE_FIELDS=", ".join(f"'{f.decode()}'" for f in EXCHANGE_FIELDS), RATING_FIELDS=", ".join(f"'{f.decode()}'" for f in RATING_FIELDS))
# Rows per script call: Redis runs a script without serving anyone else, so a call is kept to a
# few milliseconds (~10 µs a row) for the chat's own commands.
SCRIPT_ROWS = 500


@dataclass(slots=True)
class RatedExchange:
    """One rated answer, as stored (the current rating). `messages` are the prompt messages
    exactly as sent; within one batch, equal message dicts are one shared object (a system prompt
    is kept once, not once per row), so treat them as read-only."""

    exchange_id: str
    thread_id: str
    user: str
    messages: list[dict[str, str]]
    completion: str
    prompt_message_id: str  # regenerated alternatives answer the same user message
    prompt_id: str
    prompt_version: str
    model: str
    model_version: str
    created_at: float
    value: int  # 1 thumbs up, 0 thumbs down
    comment: str
    reasons: tuple[str, ...]
    rated_at: float


@dataclass
class Collected:
    # Exchanges rated when collected, (thread id, exchange id), grouped by thread. A full
    # collection lists them while its rows are read (`listing`): complete once `batches()` has run
    # to the end.
    ids: list[Ref]
    # Exchanges whose rating was removed, or whose thread was deleted, since `since`: builds that
    # start from an earlier dataset version must drop their rows.
    forgotten: set[str]
    # Where the reading of each bucket's events stopped (feedback.event.watermark_of); the job
    # stores it only after the whole run succeeded.
    watermark: str | None
    new_events: int
    since: str | None = None
    full: bool = False
    redis: redis.Redis | None = field(default=None, repr=False)
    batch: int = 5000
    # Filled while reading: ids unrated or deleted between collect and read (their events come
    # after the watermark; the build drops them now too), and records this code can't parse.
    vanished: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    listing: bool = False
    _rated: list[RatedExchange] | None = field(default=None, repr=False)
    _prefixes: dict[str, list[dict[str, str]]] = field(default_factory=dict, repr=False)  # fixed parts by digest

    def batches(self) -> Iterator[list[RatedExchange]]:
        """The rated exchanges in their current state, `batch` at a time."""
        if self._rated is not None:
            for i in range(0, len(self._rated), self.batch):
                yield self._rated[i : i + self.batch]
            return
        if not self.ids and not self.listing:
            return
        if self.redis is None:
            raise ValueError("a Collected without rows needs the Redis client it was collected from")
        if self.listing:
            listed = self._listed(self.redis)
            try:
                yield from self._read(listed)
            finally:
                listed.close()  # stops the listing thread when the reader stops early
            self.listing = False  # listed in full: a second pass reads self.ids
        else:
            yield from self._read(self.ids[i : i + self.batch] for i in range(0, len(self.ids), self.batch))

    def _read(self, chunks: Iterator[list[Ref]]) -> Iterator[list[RatedExchange]]:
        """The rows of each chunk of ids; the next chunk's script calls are sent before this
        chunk's rows are parsed and consumed, so Redis reads them meanwhile. On a cluster, each
        master gets the calls for its buckets on a connection of its own."""
        assert self.redis is not None
        refs = next(chunks, None)
        if refs is None:
            return
        nodes = _Nodes(self.redis)
        conns = [client.connection_pool.get_connection() for client in nodes.clients]
        sending: _Sending | None = None
        clean = False
        try:
            plan = self._plan(nodes, conns, refs)
            for conn, _, _, packed in plan:
                conn.send_packed_command(packed)
            while plan:
                if sending is not None:
                    sending.wait()
                replies = [conn.read_response() for conn, calls, _, _ in plan for _ in range(calls)]
                ordered = [ref for _, _, part, _ in plan for ref in part]
                sending = None
                following = next(chunks, None)
                plan = self._plan(nodes, conns, following) if following is not None else []
                if plan:
                    sending = _Sending([(conn, packed) for conn, _, _, packed in plan])
                yield self._parse(ordered, [row for reply in replies for row in reply])
            clean = True
        finally:
            if sending is not None:
                sending.wait(raise_error=False)
            for client, conn in zip(nodes.clients, conns, strict=True):
                if not clean:  # replies may still be on their way: this connection can't be reused
                    conn.disconnect()
                client.connection_pool.release(conn)

    def _listed(self, r: SyncRedis) -> Generator[list[Ref], None, None]:
        """Every rated exchange, `batch` at a time, listed by a thread (`LIST_RATED` calls on
        another connection, master after master) while the rows are read: Redis's listing work
        (SCAN over every key: an eighth of a full build's time) overlaps the parsing instead of
        preceding it."""
        self.ids = []
        found: queue.SimpleQueue[list[str] | BaseException | None] = queue.SimpleQueue()
        stop = threading.Event()
        nodes = _Nodes(r)

        def run() -> None:
            try:
                for client in nodes.clients:
                    cursor = "0"
                    while not stop.is_set():
                        reply = cast(list[str], client.eval(LIST_RATED, 0, cursor, keys.thread_ratings(keys.ANY), self.batch, LIST_SCANS))
                        cursor = reply.pop()
                        found.put(reply)
                        if cursor == "0":
                            break
                found.put(None)
            except BaseException as exc:  # re-raised by the reading side
                found.put(exc)

        thread = threading.Thread(target=run, name="collect-list", daemon=True)
        thread.start()
        seen: set[str] = set()
        pending: list[Ref] = []
        try:
            while (item := found.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                # Pairs: thread id, exchange id. SCAN may list a key twice (the keyspace resized meanwhile).
                new = [(sys.intern(t), e) for t, e in zip(item[::2], item[1::2], strict=True) if e not in seen]
                seen.update(e for _, e in new)
                self.ids += new
                pending += new
                while len(pending) >= self.batch:
                    yield pending[: self.batch]
                    pending = pending[self.batch :]
            if pending:
                yield pending
        finally:
            stop.set()
            thread.join()

    @classmethod
    def from_rows(cls, rows: list[RatedExchange], forgotten: Iterable[str] = (), watermark: str | None = None, *, since: str | None = None) -> Collected:
        """Rows already in memory (tests, tools): a full collection unless `since` is given."""
        return cls([(r.thread_id, r.exchange_id) for r in rows], set(forgotten), watermark, len(rows), since, since is None, _rated=list(rows))

    @property
    def rated(self) -> list[RatedExchange]:
        """Every row, in memory: for tests and small data. The build streams `batches()`."""
        if self._rated is None:
            self._rated = list(chain.from_iterable(self.batches()))
        return self._rated

    @staticmethod
    def _plan(nodes: _Nodes, conns: Sequence[AbstractConnection], refs: list[Ref]) -> list[tuple[AbstractConnection, int, list[Ref], list[bytes]]]:
        """Per master serving some of `refs`: its connection, how many script calls read them,
        its refs in the order their rows come back, the calls packed. A call reads rows of one
        bucket (one slot on a cluster), at most SCRIPT_ROWS."""
        by_bucket: dict[int, list[Ref]] = {}
        for ref in refs:
            by_bucket.setdefault(keys.bucket(ref[0]), []).append(ref)
        by_node: dict[int, list[list[Ref]]] = {}
        for b, part in by_bucket.items():
            calls = by_node.setdefault(nodes.of_bucket(b), [])
            calls += [part[i : i + SCRIPT_ROWS] for i in range(0, len(part), SCRIPT_ROWS)]
        plan = []
        for n, calls in by_node.items():
            packed = []
            for chunk in calls:
                row_keys = [k for thread_id, exchange_id in chunk for k in (keys.exchange(thread_id, exchange_id), keys.rating(thread_id, exchange_id))]
                # EVAL, not EVALSHA: the server caches the script by its hash anyway, and a SCRIPT
                # FLUSH meanwhile can't fail the read (the source adds ~1 KB per call).
                packed.append(("EVAL", PACKED_ROWS, len(row_keys), *row_keys))
            plan.append((conns[n], len(calls), [ref for chunk in calls for ref in chunk], conns[n].pack_commands(packed)))
        return plan

    def _parse(self, refs: list[Ref], packed: list[str]) -> list[RatedExchange]:
        reader = _Reader(self._prefixes)
        rows = []
        for (thread_id, exchange_id), row_text in zip(refs, packed, strict=False):
            if not row_text:
                self.vanished.add(exchange_id)
                continue
            fields: list[str | None] = row_text.split("\0")  # type: ignore[assignment]
            if len(fields) != _N_FIELDS + 1:  # a field holds a NUL: read it field by field
                row = self._read_fields(thread_id, exchange_id, reader)
                if row is not None:
                    rows.append(row)
                continue
            mask = cast(str, fields[0])  # present: the packed row's first field is its mask
            if mask != _ALL_PRESENT:
                fields = [None, *(v if m == "1" else None for v, m in zip(fields[1:], mask, strict=False))]
            row = reader.row(exchange_id, fields)
            if row is None:
                self.skipped.add(exchange_id)
            else:
                rows.append(row)
        assert self.redis is not None
        unreadable = reader.rebuild(self.redis)
        if unreadable:
            self.skipped |= unreadable
            rows = [r for r in rows if r.exchange_id not in unreadable]
        return rows

    def _read_fields(self, thread_id: str, exchange_id: str, reader: _Reader) -> RatedExchange | None:
        """One row with plain HMGETs (on another connection of the pool)."""
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.exchange(thread_id, exchange_id), EXCHANGE_FIELDS)
        pipe.hmget(keys.rating(thread_id, exchange_id), RATING_FIELDS)
        ex, rt = pipe.execute()
        if ex[0] is None or rt[0] is None:
            self.vanished.add(exchange_id)
            return None
        row = reader.row(exchange_id, [None, *ex, *rt])
        if row is None:
            self.skipped.add(exchange_id)
        return row  # its prompt is rebuilt with the batch's


class _Nodes:
    """Where the rows are: on Redis Cluster, a plain client per master (the reader pipelines
    packed script calls on one connection per master, which the cluster client does not offer)
    and which master serves each bucket; elsewhere `r` itself, for every bucket."""

    def __init__(self, r: redis.Redis) -> None:
        from redis.cluster import RedisCluster

        self._bucket_node: list[int] = [0] * keys.BUCKETS
        if not isinstance(r, RedisCluster):
            self.clients: list[redis.Redis] = [r]
            return
        names: dict[str, int] = {}
        self.clients = []
        for b in range(keys.BUCKETS):
            node = r.get_node_from_key(keys.events(b))
            if node.name not in names:
                names[node.name] = len(self.clients)
                self.clients.append(node.redis_connection or redis.Redis(host=node.host, port=node.port, decode_responses=True))
            self._bucket_node[b] = names[node.name]

    def of_bucket(self, bucket: int) -> int:
        return self._bucket_node[bucket]


def masters(r: redis.Redis) -> list[redis.Redis]:
    """A plain client per master of a cluster (the data is on all of them); else [r]."""
    return _Nodes(r).clients


def collect(r: redis.Redis, since: str | None, full: bool = False, batch: int = 5000) -> Collected:
    """The exchanges touched by rating events after `since` (a watermark, exclusive), or every
    rated exchange when `full` (or when there is no watermark yet). `r` must decode responses (as
    feedback.connection.connect_sync does) and stay open while the rows are read; on Redis
    Cluster, a cluster client."""
    if full or since is None:
        # The watermark is read before the listing: a rating written meanwhile is read again next
        # time (harmless: the last rating wins), never lost.
        watermark = events.watermark_of(events.latest(r))
        return Collected([], set(), watermark, events.count(r), since, True, r, batch, listing=True)
    touched, watermark, new_events = _touched_since(r, since, batch)
    ids: list[Ref] = []
    forgotten: set[str] = set()
    for chunk in _chunks(list(touched), batch):
        pipe = r.pipeline(transaction=False)
        for thread_id, exchange_id in chunk:
            pipe.exists(keys.rating(thread_id, exchange_id))
        for ref, rated in zip(chunk, pipe.execute(), strict=False):
            if rated:
                ids.append(ref)
            else:
                forgotten.add(ref[1])
    return Collected(ids, forgotten, watermark or since, new_events, since, False, r, batch)


def _touched_since(r: redis.Redis, since: str, batch: int) -> tuple[list[Ref], str | None, int]:
    """The answers named by events after the watermark `since`, grouped by thread; the new
    watermark (None when no stream had anything new); the number of events."""
    touched: dict[str, str] = {}
    read = events.positions(since)
    count = 0
    for bucket, entries in events.read_after(r, since, batch):
        for event_id, fields in entries:
            try:
                event = RatingEvent.from_fields(fields)
            except ValueError as exc:  # not ours: skipped, never fatal
                log.warning("event %s skipped: %s", event_id, exc)
                continue
            touched[event.exchange] = event.thread
        count += len(entries)
        read[bucket] = entries[-1][0]
    ordered = sorted(((t, e) for e, t in touched.items() if keys.valid_id(t) and keys.valid_id(e)), key=lambda ref: ref[0])
    return ordered, events.watermark_of(read) if count else None, count


# One call replaces ARGV[4] SCAN round trips and a pipeline of HKEYS: on a loaded machine every
# round trip waits for the scheduler (a million rows' listing took 17 s of wall time for 2.6 s of
# client CPU).
LIST_RATED = lua("list_rated")
LIST_SCANS = 4  # SCAN pages per call: a call scans ~4 * batch keys (a few ms of Redis time)


class _Sending:
    """A send in a thread. A batch's request (~80 bytes of keys a row) is larger than the socket
    buffer, so sendall blocks until Redis has run most of the batch's script calls: in the main
    thread that wait would stop the parsing it is meant to overlap. The thread only sends (to
    each master in turn); the main thread reads the replies after `wait()`."""

    def __init__(self, sends: list[tuple[AbstractConnection, list[bytes]]]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sends,), name="collect-send", daemon=True)
        self._thread.start()

    def _run(self, sends: list[tuple[AbstractConnection, list[bytes]]]) -> None:
        try:
            for conn, packed in sends:
                conn.send_packed_command(packed, check_health=False)  # no PING in between: replies are pending
        except BaseException as exc:  # re-raised in the main thread by wait()
            self._error = exc

    def wait(self, raise_error: bool = True) -> None:
        self._thread.join()
        if self._error is not None and raise_error:
            raise self._error


def _chunks(items: Iterator[Ref] | list[Ref], size: int) -> Iterator[list[Ref]]:
    chunk: list[Ref] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_NO_REASONS: tuple[str, ...] = ()


class _Reader:
    """Turns raw hash fields into rows; within a batch, each distinct message is kept once (a
    thread's later prompts repeat its earlier turns, every prompt repeats the system prompt).
    Prompts stored compactly (feedback.exchange) are rebuilt once the whole batch is read: the
    earlier answers they refer to are mostly rows of the same batch."""

    def __init__(self, prefixes: dict[str, list[dict[str, str]]]) -> None:
        self.messages: dict[tuple[str, str], dict[str, str]] = {}  # (role, content) -> message
        self.prefixes = prefixes  # digest -> the fixed part's messages (kept across batches)
        self.answers: dict[str, tuple[dict[str, str], dict[str, str]]] = {}  # exchange id -> (question, answer)
        self.compact: list[tuple[RatedExchange, str | None, str | None, dict[str, str]]] = []  # rows to rebuild

    def row(self, exchange_id: str, fields: list[str | None]) -> RatedExchange | None:
        """`fields`: anything (the packed row's mask), then EXCHANGE_FIELDS and RATING_FIELDS in
        order, None where missing."""
        _, thread_id, user, prefix, history, question, legacy, completion, prompt_message_id, prompt_id, prompt_version, model, model_version, created_at, value, comment, reasons, rated_at = fields
        try:
            if (  # one test per required field, not a call: this runs once per row
                thread_id is None or user is None or (question is None and legacy is None) or completion is None or prompt_message_id is None
                or prompt_id is None or prompt_version is None or model is None or created_at is None or value is None or rated_at is None
            ):  # fmt: skip
                raise KeyError("missing field")
            row = RatedExchange(
                exchange_id,
                sys.intern(thread_id),
                sys.intern(user),
                self._messages(legacy) if legacy is not None else [],
                completion,
                prompt_message_id,
                sys.intern(prompt_id),
                sys.intern(prompt_version),
                sys.intern(model),
                sys.intern(model_version or "base"),
                float(created_at),
                int(value),
                comment or "",
                _NO_REASONS if reasons in (None, "", "[]") else tuple(orjson.loads(reasons)),
                float(rated_at),
            )
        except (KeyError, ValueError, TypeError) as exc:  # a record this code did not write
            log.warning("skipping malformed exchange %s: %s: %s", exchange_id, type(exc).__name__, exc)
            return None
        if legacy is None:
            asked = self._message("user", cast(str, question))
            self.compact.append((row, prefix, history, asked))
        else:
            asked = self._message("user", question_of({LEGACY_FIELD: legacy}))
        self.answers[exchange_id] = (asked, self._message("assistant", completion))
        return row

    def rebuild(self, r: SyncRedis) -> set[str]:
        """Fill in the compact rows' messages (reading the fixed parts and earlier answers not
        seen yet); returns the ids of rows that can't be rebuilt (a part is gone)."""
        if not self.compact:
            return set()
        parsed = [(row, prefix, orjson.loads(history) if history else (), asked) for row, prefix, history, asked in self.compact]
        digests = sorted({p for _, p, _, _ in parsed if p is not None and p not in self.prefixes})
        refs = sorted({(row.thread_id, h) for row, _, items, _ in parsed for h in items if isinstance(h, str) and h not in self.answers})
        if digests or refs:
            pipe = r.pipeline(transaction=False)
            queue_parts(pipe, digests, refs)
            prefixes, answers = read_parts(digests, refs, pipe.execute())
            for d, messages in prefixes.items():
                self.prefixes[d] = [self._message(m["role"], m["content"]) for m in messages]
            for ref, (question, completion) in answers.items():
                self.answers[ref] = (self._message("user", question), self._message("assistant", completion))
        unreadable = set()
        for row, prefix, items, asked in parsed:
            try:
                messages = list(self.prefixes[prefix]) if prefix is not None else []
                for item in items:
                    if isinstance(item, str):
                        messages += self.answers[item]
                    else:
                        messages.append(self._message(item["role"], item["content"]))
            except KeyError as exc:
                log.warning("skipping exchange %s: a part of its prompt is gone: %s", row.exchange_id, exc)
                unreadable.add(row.exchange_id)
                continue
            messages.append(asked)
            row.messages = messages
        self.compact = []
        return unreadable

    def _message(self, role: str, content: str) -> dict[str, str]:
        key = (role, content)
        shared = self.messages.get(key)
        if shared is None:
            shared = self.messages[key] = {"role": role, "content": content}
        return shared

    def _messages(self, raw: str) -> list[dict[str, str]]:
        return [self._message(m["role"], m["content"]) for m in orjson.loads(raw)]


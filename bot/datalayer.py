"""Chainlit's persistence in Redis: users, threads, steps, elements, feedback, favorites.

Chainlit checks thread ownership for reads and deletes (get_thread_author) but not for writes,
so every write here checks that the thread belongs to the user of the current session. Deleted
steps are soft-deleted: an edited or regenerated answer stays, hidden, as the rejected side of a
preference pair. Per-user thread lists are read whole for search and filters: fine for the
hundreds of threads one person has, not meant for analytics.

Search (the history's search box) finds its words in a thread's name or in the questions and
answers shown in it (the newest SEARCH_CONTENT_THREADS threads are read for that); `rated:up` and
`rated:down` among the words keep the threads with such a rating (the box is the only filter the
history offers).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any, Literal, cast

from chainlit.context import context
from chainlit.data.base import BaseDataLayer
from chainlit.data.utils import queue_until_user_message
from chainlit.element import Element, ElementDict
from chainlit.step import StepDict
from chainlit.types import Feedback, FeedbackDict, PageInfo, PaginatedResponse, Pagination, ThreadDict, ThreadFilter
from chainlit.user import PersistedUser, User
from redis.asyncio import Redis

from bot import answer_info as answer_infos
from bot.stored_form import pack_element, pack_step, unpack_element, unpack_step
from feedback import exchange as exchanges
from feedback import keys, registry
from feedback import rating as ratings
from feedback import thread as threads
from feedback.errors import LoopError
from feedback.scripts import lua, run_after
from feedback.store import OUTAGE, Store
from feedback.thread import iso

log = logging.getLogger(__name__)


SEARCH_CONTENT_THREADS = 500
# The app's session state that Chainlit would save with the thread but that resuming rebuilds from
# the stored answers (bot/app.py: resume): a copy growing with every answer, never read.
NOT_PERSISTED = frozenset({"turns", "answers"})
RATED_WORDS = {"rated:up": "1", "rated:down": "0"}


def parse_search(text: str | None) -> tuple[str, set[str]]:
    """(the text to find, casefolded; the rating values asked for with rated:up / rated:down)."""
    words = (text or "").split()
    wanted = {RATED_WORDS[w.casefold()] for w in words if w.casefold() in RATED_WORDS}
    return " ".join(w for w in words if w.casefold() not in RATED_WORDS).casefold(), wanted


def shown_text(raw: str | None, deleted: str | None) -> str:
    """What a stored step shows to search in: the text of a question or an answer in view."""
    if not raw or deleted == "1":
        return ""
    step = json.loads(raw)  # (only its type, metadata and output: no need to unpack it whole)
    if step.get("type") not in ("user_message", "assistant_message") or (step.get("metadata") or {}).get("transient"):
        return ""
    return str(step.get("output") or "").casefold()


UPDATE_IF_EXISTS = lua("update_thread")
CLAIM_THREAD = lua("claim_thread")
WRITE_STEP = lua("write_step")


def step_call(user: str, thread_id: str, step: dict[str, Any], now: float) -> tuple[list[str], list[str | float]]:
    """(keys, args) of WRITE_STEP for a Chainlit step written by `user` at `now` (bulk seeding
    pipelines the same)."""
    step.pop("feedback", None)  # ratings live in their own keys
    favorite = "1" if (step.get("metadata") or {}).get("favorite") else "0"
    keys_ = [keys.thread(thread_id), keys.step(thread_id, step["id"]), keys.thread_steps(thread_id), keys.thread_favorites(thread_id)]
    return keys_, [user, thread_id, step["id"], pack_step(step), _epoch(step.get("createdAt")), now, iso(now), favorite]


class OwnershipError(LoopError, PermissionError):
    """A write into a thread that belongs to someone else."""


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return time.time()
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def _session_thread() -> str | None:
    """The thread of the socket session that triggered this call, if any."""
    try:
        return cast("str | None", context.session.thread_id)
    except Exception:  # chainlit raises its own error when there is no context
        return None


def _session_user() -> str | None:
    """Identifier of the user whose socket session triggered this call, if any."""
    try:
        user = context.session.user
    except Exception:  # chainlit raises its own error when there is no context
        return None
    return user.identifier if user else None


class RedisDataLayer(BaseDataLayer):
    def __init__(self, redis: Redis, store: Store) -> None:
        self.r = redis
        self.store = store
        self._step_script = redis.register_script(WRITE_STEP)
        self._claim_script = redis.register_script(CLAIM_THREAD)

    # --- users ----------------------------------------------------------------------------------

    async def get_user(self, identifier: str) -> PersistedUser | None:
        data = cast("dict[str, str]", await self.r.hgetall(keys.user(identifier)))
        if not data:
            return None
        return PersistedUser(
            id=data["id"], identifier=data["identifier"], createdAt=data["createdAt"], metadata=json.loads(data.get("metadata") or "{}")
        )

    async def create_user(self, user: User) -> PersistedUser | None:
        # The identifier is the id: unique, stable, and needs no second index.
        key = keys.user(user.identifier)
        await self.r.hsetnx(key, "createdAt", iso(time.time()))
        await self.r.hset(key, mapping={"id": user.identifier, "identifier": user.identifier, "metadata": json.dumps(user.metadata or {})})
        return await self.get_user(user.identifier)

    # --- threads --------------------------------------------------------------------------------

    async def get_thread_author(self, thread_id: str) -> str:
        return cast("str | None", await self.r.hget(keys.thread(thread_id), "userIdentifier")) or ""

    async def _claim_thread(self, thread_id: str, user_id: str | None) -> None:
        """Create the thread for user_id, or check it is theirs. Raises OwnershipError."""
        if not user_id:
            return
        now = time.time()
        # Listed beside the claim (another slot): an id listed for a thread that turns out to be
        # someone else's is not shown (list_threads checks the owner) and dropped.
        listing = keys.user_threads(user_id)
        owner = await run_after(self.r, self._claim_script, [keys.thread(thread_id)], [thread_id, user_id, iso(now)], lambda p: p.zadd(listing, {thread_id: now}, nx=True))
        if owner != user_id:
            raise OwnershipError(f"thread {thread_id} belongs to another user")

    async def update_thread(
        self,
        thread_id: str,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict | None = None,
        tags: list[str] | None = None,
    ) -> None:
        if name is None and metadata is not None and tags is None:
            try:
                await self._update_thread(thread_id, None, user_id, metadata, None)
            except OUTAGE as exc:
                # Chainlit saves the session here on disconnect; failing would leak the session.
                log.warning("could not save session metadata of thread %s: %s", thread_id, exc)
            return
        await self._update_thread(thread_id, name, user_id, metadata, tags)

    async def _update_thread(self, thread_id: str, name: str | None, user_id: str | None, metadata: dict | None, tags: list[str] | None) -> None:
        if name is not None:
            await self._claim_thread(thread_id, user_id or _session_user())
        owner = cast("str | None", await self.r.hget(keys.thread(thread_id), "userId"))
        if owner is None:
            return  # Chainlit calls this on every connect: a thread starts with its first message
        if user_id and user_id != owner:
            raise OwnershipError(f"thread {thread_id} belongs to another user")
        fields: dict[str, str] = {"updatedAt": iso(time.time())}
        if name is not None:
            fields["name"] = name[:200]
        if tags is not None:
            fields["tags"] = json.dumps(tags)
        if metadata is not None:
            current = json.loads(cast("str | None", await self.r.hget(keys.thread(thread_id), "metadata")) or "{}")
            kept = {k: v for k, v in metadata.items() if k not in NOT_PERSISTED}
            fields["metadata"] = json.dumps({**current, **kept}, default=str, separators=(",", ":"))
        # Only if the thread still exists: a late update must not resurrect a deleted thread.
        pairs = [x for kv in fields.items() for x in kv]
        if await self.r.eval(UPDATE_IF_EXISTS, 1, keys.thread(thread_id), *pairs) == owner:
            await self.r.zadd(keys.user_threads(owner), {thread_id: time.time()}, xx=True)

    def _thread_dict(self, data: dict[str, str]) -> ThreadDict:
        return ThreadDict(
            id=data["id"],
            createdAt=data.get("createdAt", ""),
            name=data.get("name"),
            userId=data.get("userId"),
            userIdentifier=data.get("userIdentifier"),
            tags=json.loads(data.get("tags") or "[]"),
            metadata=json.loads(data.get("metadata") or "{}"),
            steps=[],
            elements=[],
        )

    async def get_thread(self, thread_id: str) -> ThreadDict | None:
        data = cast("dict[str, str]", await self.r.hgetall(keys.thread(thread_id)))
        if not data:
            return None
        thread = self._thread_dict(data)
        step_ids = cast("list[str]", await self.r.zrange(keys.thread_steps(thread_id), 0, -1))
        element_ids = cast("set[str]", await self.r.smembers(keys.thread_elements(thread_id)))
        async with self.r.pipeline(transaction=False) as pipe:
            for sid in step_ids:
                pipe.hmget(keys.step(thread_id, sid), "data", "deleted")
            for sid in step_ids:
                pipe.hgetall(keys.rating(thread_id, sid))
            for eid in element_ids:
                pipe.get(keys.element(thread_id, eid))
            rows = await pipe.execute()
        n = len(step_ids)
        ratings_by_id = {sid: int(rated["value"]) for sid, rated in zip(step_ids, rows[n : 2 * n], strict=True) if rated}
        for sid, (raw, deleted), rated in zip(step_ids, rows[:n], rows[n : 2 * n], strict=True):
            if not raw or deleted == "1":
                continue
            step = cast(StepDict, unpack_step(raw, sid, thread_id))
            if (step.get("metadata") or {}).get("transient"):
                continue  # e.g. the reasons question an earlier version asked after a thumbs down
            if rated:  # ratings are keyed by the run step, like Chainlit's feedback
                value = cast("Literal[0, 1]", int(rated["value"]))
                feedback = FeedbackDict(id=sid, forId=sid, value=value, comment=rated.get("comment") or None)
                # The reasons too (not a Chainlit field): the page's thumbs send back what they hold.
                step["feedback"] = cast(FeedbackDict, {**feedback, "reasons": json.loads(rated.get("reasons") or "[]")})
            thread["steps"].append(step)
        thread["elements"] = [cast(ElementDict, unpack_element(e)) for e in rows[2 * n :] if e]
        await self._add_answer_infos(thread, ratings_by_id)
        return thread

    async def _add_answer_infos(self, thread: ThreadDict, ratings_by_id: dict[str, int]) -> None:
        """The line under each answer shown (bot/answer_info.py), from the thread's stored answers
        and their current ratings; an answer whose line was stored as an element (threads written
        before) keeps that one, with its tooltip rewritten from its shown names (it named the
        served model, a path on the server for a local one)."""
        shown = {s["id"] for s in thread["steps"] if s.get("type") == "assistant_message"}
        elements = thread["elements"] = thread.get("elements") or []
        stored = {e.get("forId") for e in elements if e.get("name") == answer_infos.NAME}
        for e in elements:
            props = e.get("props") if e.get("name") == answer_infos.NAME else None
            if isinstance(props, dict) and "written" in props:
                props["written"] = answer_infos.written(str(props.get("model", "")), str(props.get("prompt", "")))
        answers = await exchanges.for_thread(self.r, thread["id"])
        bases = await registry.base_models(self.r, {e.model_version for e in answers})
        for record in answers:
            if record.message_id in shown and record.message_id not in stored and not record.deleted:
                elements.append(cast(ElementDict, answer_infos.element(record, answers, ratings_by_id, bases)))

    async def list_threads(self, pagination: Pagination, filters: ThreadFilter) -> PaginatedResponse[ThreadDict]:
        if not filters.userId:
            raise ValueError("list_threads needs a user")
        ids = cast("list[str]", await self.r.zrevrange(keys.user_threads(filters.userId), 0, -1))
        async with self.r.pipeline(transaction=False) as pipe:
            for tid in ids:
                pipe.hgetall(keys.thread(tid))
            for tid in ids:
                pipe.hvals(keys.thread_ratings(tid))
            rows = await pipe.execute()
        search, rated = parse_search(filters.search)
        if filters.feedback is not None:
            rated.add(str(filters.feedback))
        owned = [data.get("userId") == filters.userId for data in rows[: len(ids)]]
        if not all(owned):  # listed beside a write that was refused, or left by a deletion: dropped
            await self.r.zrem(keys.user_threads(filters.userId), *(tid for tid, mine in zip(ids, owned, strict=True) if not mine))
        kept = [data for data, values, mine in zip(rows[: len(ids)], rows[len(ids) :], owned, strict=True) if mine and rated <= set(values)]
        if search:
            by_content = await self._threads_saying(search, [d["id"] for d in kept[:SEARCH_CONTENT_THREADS] if search not in (d.get("name") or "").casefold()])
            kept = [d for d in kept if search in (d.get("name") or "").casefold() or d["id"] in by_content]
        threads = [self._thread_dict(data) for data in kept]
        start = 0
        if pagination.cursor:
            start = next((i + 1 for i, t in enumerate(threads) if t["id"] == pagination.cursor), len(threads))
        page = threads[start : start + pagination.first]
        return PaginatedResponse(
            pageInfo=PageInfo(
                hasNextPage=start + pagination.first < len(threads),
                startCursor=page[0]["id"] if page else None,
                endCursor=page[-1]["id"] if page else None,
            ),
            data=page,
        )

    async def _threads_saying(self, text: str, thread_ids: list[str]) -> set[str]:
        """The threads among `thread_ids` with `text` (casefolded) in a question or answer shown."""
        if not thread_ids:
            return set()
        async with self.r.pipeline(transaction=False) as pipe:
            for tid in thread_ids:
                pipe.zrange(keys.thread_steps(tid), 0, -1)
            step_ids = cast("list[list[str]]", await pipe.execute())
        async with self.r.pipeline(transaction=False) as pipe:
            for tid, sids in zip(thread_ids, step_ids, strict=True):
                for sid in sids:
                    pipe.hmget(keys.step(tid, sid), "data", "deleted")
            rows = iter(await pipe.execute())
        found = set()
        for tid, sids in zip(thread_ids, step_ids, strict=True):
            texts = [shown_text(*next(rows)) for _ in sids]  # consume the thread's rows whatever matches
            if any(text in t for t in texts):
                found.add(tid)
        return found

    async def delete_thread(self, thread_id: str) -> None:
        """Delete the thread with everything in it (feedback.thread.delete)."""
        await threads.delete(self.r, thread_id)

    # --- steps ----------------------------------------------------------------------------------

    async def _check_step_write(self, thread_id: str | None) -> str:
        """Steps and elements are written only by a logged-in session, into its own threads.
        Returns the owner."""
        user = _session_user()
        if not thread_id or not user:
            raise OwnershipError("steps are written by a logged-in session, into a thread")
        await self._claim_thread(thread_id, user)
        return user

    @queue_until_user_message()  # nothing is stored before the first user message
    async def create_step(self, step_dict: StepDict) -> None:
        await self._write_step(dict(step_dict))

    @queue_until_user_message()  # nothing is stored before the first user message
    async def update_step(self, step_dict: StepDict) -> None:
        # Chainlit sends the whole step on update: a write replaces it.
        await self._write_step(dict(step_dict))

    async def _write_step(self, step: dict[str, Any]) -> None:
        """One round trip: ownership checks and all writes in one script (this runs on the same
        event loop as the streaming, several times per message). The user's thread list (another
        slot; see _claim_thread) moves the thread up with each question, in the same round trip;
        a thread the script had to create is listed after it."""
        user, thread_id = _session_user(), step.get("threadId")
        if not thread_id or not user:
            raise OwnershipError("steps are written by a logged-in session, into a thread")
        now = time.time()
        keys_, args = step_call(user, thread_id, step, now)
        listing = keys.user_threads(user)
        listed = step.get("type") == "user_message"
        if listed:
            outcome = await run_after(self.r, self._step_script, keys_, args, lambda p: p.zadd(listing, {thread_id: now}))
        else:
            outcome = await self._step_script(keys=keys_, args=args)
        if outcome == "created" and not listed:
            await self.r.zadd(listing, {thread_id: now})
        elif outcome not in ("ok", "created"):
            raise OwnershipError(f"step {step['id']}: {outcome}")

    @queue_until_user_message()  # nothing is stored before the first user message
    async def delete_step(self, step_id: str) -> None:
        # Chainlit deletes a step from the session of the thread it is in.
        thread_id = _session_thread()
        if not thread_id or not keys.valid_id(step_id):
            return
        raw = cast("str | None", await self.r.hget(keys.step(thread_id, step_id), "data"))
        if not raw:
            return
        step = unpack_step(raw, step_id, thread_id)
        await self._check_step_write(thread_id)
        await self.r.hset(keys.step(thread_id, step_id), "deleted", "1")
        # A removed answer message (edit, regenerate): hide its exchange, keep it for training.
        run_id = step.get("parentId")
        if step.get("type") == "assistant_message" and run_id:
            if cast("str | None", await self.r.hget(keys.exchange(thread_id, run_id), "message_id")) == step_id:
                await self.r.hset(keys.exchange(thread_id, run_id), "deleted", "1")

    async def get_favorite_steps(self, user_id: str) -> list[StepDict]:
        """The steps marked favorite in the user's own threads."""
        thread_ids = cast("list[str]", await self.r.zrevrange(keys.user_threads(user_id), 0, -1))
        async with self.r.pipeline(transaction=False) as pipe:
            for tid in thread_ids:
                pipe.hget(keys.thread(tid), "userId")
                pipe.smembers(keys.thread_favorites(tid))
            replies = await pipe.execute()
        found = [(tid, sid) for tid, owner, sids in zip(thread_ids, replies[::2], replies[1::2], strict=True) if owner == user_id for sid in sids]
        async with self.r.pipeline(transaction=False) as pipe:
            for tid, sid in found:
                pipe.hget(keys.step(tid, sid), "data")
            rows = await pipe.execute()
        return [cast(StepDict, unpack_step(raw, sid, tid)) for (tid, sid), raw in zip(found, rows, strict=True) if raw]

    # --- elements -------------------------------------------------------------------------------

    @queue_until_user_message()  # nothing is stored before the first user message
    async def create_element(self, element: Element) -> None:
        await self._check_step_write(element.thread_id)
        data = element.to_dict()
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(keys.element(element.thread_id, element.id), pack_element(dict(data)))
            pipe.sadd(keys.thread_elements(element.thread_id), element.id)
            await pipe.execute()

    async def get_element(self, thread_id: str, element_id: str) -> ElementDict | None:
        raw = cast("str | None", await self.r.get(keys.element(thread_id, element_id)))
        if not raw:
            return None
        data = cast(ElementDict, unpack_element(raw))
        return data if data.get("threadId") == thread_id else None

    @queue_until_user_message()  # nothing is stored before the first user message
    async def delete_element(self, element_id: str, thread_id: str | None = None) -> None:
        thread_id = thread_id or _session_thread()
        if not thread_id:
            return
        raw = cast("str | None", await self.r.get(keys.element(thread_id, element_id)))
        if not raw:
            return
        if str(unpack_element(raw).get("threadId") or "") != thread_id:
            raise OwnershipError(f"element {element_id} is not in thread {thread_id}")
        await self._check_step_write(thread_id)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(keys.element(thread_id, element_id))
            pipe.srem(keys.thread_elements(thread_id), element_id)
            await pipe.execute()

    # --- feedback -------------------------------------------------------------------------------
    # The HTTP routes for feedback are bot/api.py's (they check the caller). These methods serve
    # calls made from a socket session, whose user is known from the context.

    async def upsert_feedback(self, feedback: Feedback) -> str:
        user = _session_user()
        if not user or not feedback.threadId:
            raise ratings.RatingError("unauthenticated", "rating needs a logged-in session and a thread")
        rating = ratings.RatingInput(value=feedback.value, comment=feedback.comment)
        await self.store.rate(user=user, thread_id=feedback.threadId, exchange_id=feedback.forId, rating=rating)
        return feedback.forId

    async def delete_feedback(self, feedback_id: str) -> bool:
        user = _session_user()
        thread_id = await ratings.thread_of(self.r, user, feedback_id) if user else None
        if not user or not thread_id:
            return False
        await self.store.rate(user=user, thread_id=thread_id, exchange_id=feedback_id, rating=None)
        return True

    # --- misc -----------------------------------------------------------------------------------

    async def build_debug_url(self) -> str:
        return ""

    async def close(self) -> None:
        await self.r.aclose()

"""Every data-layer method against a real Redis, including those the HTTP tests don't reach
(elements, favorites, step updates) and the ownership checks on writes."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chainlit.context import init_http_context
from chainlit.element import Text
from chainlit.types import Feedback, Pagination, ThreadFilter
from chainlit.user import User

from bot.datalayer import OwnershipError, RedisDataLayer
from feedback import keys
from feedback.connection import connect
from feedback.exchange import Exchange, PromptMessage
from feedback.rating import RatingError
from feedback.spool import Spool
from feedback.store import Store
from support.services import RedisServer


@pytest.fixture
async def layer(redis_db: RedisServer, tmp_path: Path) -> AsyncIterator[RedisDataLayer]:
    r = connect(redis_db.url)
    dl = RedisDataLayer(r, Store(r, Spool(tmp_path / "spool.jsonl")))
    yield dl
    await dl.close()


def as_user(name: str | None, thread_id: str | None = None) -> None:
    """A session of `name` (None: logged out), in `thread_id` (Chainlit deletes a step from its thread's session)."""
    init_http_context(thread_id=thread_id, user=User(identifier=name) if name else None)


def step(step_id: str, thread_id: str, **extra: object) -> dict:
    return {"id": step_id, "threadId": thread_id, "type": "assistant_message", "name": "Loop", "output": "hi",
            "createdAt": "2026-01-01T00:00:00Z", "metadata": {}, **extra}


async def test_users(layer: RedisDataLayer) -> None:
    assert await layer.get_user("carol") is None
    created = await layer.create_user(User(identifier="carol", metadata={"role": "tester"}))
    assert created is not None and created.identifier == "carol" and created.metadata == {"role": "tester"}
    again = await layer.create_user(User(identifier="carol"))
    assert again is not None and again.createdAt == created.createdAt  # creation time kept


async def test_steps_update_soft_delete_and_favorites(layer: RedisDataLayer, redis_db: RedisServer) -> None:
    as_user("alice", "t1")
    await layer.update_thread("t1", name="first", user_id="alice")
    await layer.create_step(step("s1", "t1", output="draft"))
    await layer.update_step(step("s1", "t1", output="final", metadata={"favorite": True}))
    thread = await layer.get_thread("t1")
    assert thread is not None and [s["output"] for s in thread["steps"]] == ["final"]
    assert [s["id"] for s in await layer.get_favorite_steps("alice")] == ["s1"]
    await layer.update_step(step("s1", "t1", metadata={"favorite": False}))
    assert await layer.get_favorite_steps("alice") == []

    await layer.delete_step("s1")
    thread = await layer.get_thread("t1")
    assert thread is not None and thread["steps"] == []
    assert redis_db.client.hget(keys.step("t1", "s1"), "deleted") == "1"  # hidden, not gone
    assert await layer.get_thread_author("t1") == "alice"
    assert await layer.get_thread_author("nope") == ""


async def test_writes_into_someone_elses_thread_are_refused(layer: RedisDataLayer, redis_db: RedisServer) -> None:
    as_user("alice", "t1")
    await layer.update_thread("t1", name="alice's", user_id="alice")
    await layer.create_step(step("s1", "t1"))
    as_user("bob", "t1")  # a session of bob's that claims alice's thread
    with pytest.raises(OwnershipError):
        await layer.create_step(step("s2", "t1"))
    with pytest.raises(OwnershipError):
        await layer.update_step(step("s1", "t1", output="hacked"))
    with pytest.raises(OwnershipError):
        await layer.delete_step("s1")
    with pytest.raises(OwnershipError):
        await layer.update_thread("t1", name="mine now", user_id="bob")
    as_user(None)
    with pytest.raises(OwnershipError):
        await layer.create_step(step("s3", "t1"))
    thread = await layer.get_thread("t1")
    assert thread is not None and [s["output"] for s in thread["steps"]] == ["hi"]
    assert redis_db.client.hget(keys.thread("t1"), "name") == "alice's"
    assert not redis_db.client.exists(keys.step("t1", "s2"), keys.step("t1", "s3"))


async def test_elements(layer: RedisDataLayer) -> None:
    as_user("alice")
    await layer.update_thread("t1", name="with files", user_id="alice")
    element = Text(thread_id="t1", name="notes", content="hello", for_id="s1")
    await layer.create_element(element)
    got = await layer.get_element("t1", element.id)
    assert got is not None and got["name"] == "notes"
    assert await layer.get_element("other-thread", element.id) is None  # only through its thread
    thread = await layer.get_thread("t1")
    assert thread is not None and thread["elements"] is not None
    assert [e["id"] for e in thread["elements"]] == [element.id]
    # Through another thread: its bucket's key holds no such element, or (a thread of t1's bucket) it is not that thread's.
    elsewhere, beside = (next(f"other-{n}" for n in itertools.count() if (keys.bucket(f"other-{n}") == keys.bucket("t1")) == same) for same in (False, True))
    await layer.delete_element(element.id, elsewhere)
    with pytest.raises(OwnershipError):
        await layer.delete_element(element.id, beside)
    assert await layer.get_element("t1", element.id) is not None
    await layer.delete_element(element.id, "t1")
    assert await layer.get_element("t1", element.id) is None


async def test_feedback_from_a_session_and_thread_listing(layer: RedisDataLayer) -> None:
    as_user("alice")
    await layer.update_thread("t1", name="rated", user_id="alice")
    await layer.store.save_exchange(Exchange(id="run1", thread_id="t1", user="alice", prompt_message_id="m1",
                                             messages=[PromptMessage(role="user", content="q")], completion="a",
                                             prompt_id="assistant", prompt_version="1.0.0", model="m"))
    assert await layer.upsert_feedback(Feedback(forId="run1", threadId="t1", value=0, comment="meh")) == "run1"
    page = await layer.list_threads(Pagination(first=10), ThreadFilter(userId="alice", feedback=0))
    assert [t["id"] for t in page.data] == ["t1"]
    assert (await layer.get_thread("t1")) is not None
    as_user("bob")
    with pytest.raises(RatingError):
        await layer.upsert_feedback(Feedback(forId="run1", threadId="t1", value=1))
    assert await layer.delete_feedback("run1") is False  # not an answer of his threads
    assert (await layer.r.hget(keys.rating("t1", "run1"), "value")) == "0"
    as_user("alice")
    assert await layer.delete_feedback("run1") is True
    page = await layer.list_threads(Pagination(first=10), ThreadFilter(userId="alice", feedback=0))
    assert page.data == []
    with pytest.raises(ValueError):
        await layer.list_threads(Pagination(first=10), ThreadFilter())
    assert await layer.build_debug_url() == ""


async def test_a_line_under_an_answer_stored_before_names_no_server_path(layer: RedisDataLayer) -> None:
    """Threads written before the line was derived kept it as an element, its tooltip naming the
    served model (for the local one, its directory): read back, the tooltip names what the line shows."""
    from chainlit.element import CustomElement

    as_user("alice")
    await layer.update_thread("t-old", name="old", user_id="alice")
    written = "Written by model /srv/loop/data/default-model (version base) with prompt assistant@1.0.0"
    line = CustomElement(name="AnswerInfo", props={"model": "default-model (base model)", "prompt": "assistant@1.0.0", "written": written, "earlier": []})
    line.thread_id, line.for_id = "t-old", "s-1"
    await layer.create_element(line)
    thread = await layer.get_thread("t-old")
    assert thread is not None and thread["elements"] is not None
    [props] = [e.get("props") for e in thread["elements"] if e["name"] == "AnswerInfo"]
    assert props is not None and props["model"] == "default-model (base model)"
    assert props["written"] == "Written by model default-model (base model) with prompt assistant@1.0.0"

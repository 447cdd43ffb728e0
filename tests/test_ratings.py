"""Ratings and history through the interfaces the browser uses (HTTP + socket.io), on a real
Redis and the real Chainlit server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import cast

import pytest

from feedback import event, keys
from feedback import exchange as exchanges
from feedback.event import RatingEvent
from sim.client import ChatClient
from support.services import AppServer, RedisServer
from support.session import USERS, final_message, logged_in, run_id


def events(redis_db: RedisServer) -> list[RatingEvent]:
    """The event streams (every bucket's, each in order), each entry read as the job reads it:
    exactly the fields RatingEvent defines, whichever writer wrote it (the rating script, thread
    deletion)."""
    entries = [fields for _, batch in event.read_after(redis_db.client, None) for _, fields in batch]
    parsed = [RatingEvent.from_fields(f) for f in entries]
    assert [e.to_fields() for e in parsed] == entries
    return parsed


@pytest.fixture
async def alice(app_server: AppServer, redis_db: RedisServer) -> AsyncIterator[ChatClient]:
    client = await logged_in(app_server.url)
    yield client
    await client.close()


async def test_rate_upsert_and_unrate_with_events(alice: ChatClient, redis_db: RedisServer) -> None:
    reply = await alice.send("rate me")
    rid = run_id(reply)
    assert final_message(reply)["metadata"]["exchange_id"] == rid  # the exchange is keyed by its run step
    thread = alice.thread_id
    assert thread is not None

    r = await alice.rate(rid, 1, comment="great", reasons=["helpful", "clear", "helpful"])
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "feedbackId": rid, "stored": "redis"}
    rating = redis_db.client.hgetall(keys.rating(thread, rid))
    assert rating["value"] == "1" and rating["comment"] == "great" and rating["user"] == "alice"
    assert json.loads(rating["reasons"]) == ["helpful", "clear"]

    # The last click wins.
    assert (await alice.rate(rid, 0, comment="actually wrong", reasons=["wrong"])).status_code == 200
    assert redis_db.client.hget(keys.rating(thread, rid), "value") == "0"
    # Un-rating removes it.
    assert (await alice.rate(rid, None)).status_code == 200
    assert not redis_db.client.exists(keys.rating(thread, rid))

    log = events(redis_db)
    assert [(e.action, e.value) for e in log] == [("rate", 1), ("rate", 0), ("unrate", None)]
    assert all(e.exchange == rid and e.user == "alice" and e.thread == alice.thread_id for e in log)


async def test_thumbs_down_in_the_ui_offers_reasons(alice: ChatClient, redis_db: RedisServer) -> None:
    reply = await alice.send("explain")
    rid, answer = run_id(reply), final_message(reply)["id"]
    thread = alice.thread_id
    assert thread is not None
    assert (await alice.rate(rid, 0, comment="meh")).status_code == 200  # the UI sends no reasons
    # A toggle per reason, on the rated answer itself: nothing is added to the conversation.
    offered = await alice.offered("reason", 5, lambda a: a["payload"]["exchange_id"] == rid)
    assert {a["forId"] for a in offered} == {answer}
    assert [a["label"] for a in offered] == ["Wrong", "Unhelpful", "Too long", "Unsafe", "Off topic"]
    for reason in ("too_long", "wrong", "too_long"):  # several reasons; a second click unpicks
        await alice.action("reason", {"exchange_id": rid, "reason": reason}, for_id=answer, answers=False)
    rating = redis_db.client.hgetall(keys.rating(thread, rid))
    assert rating["value"] == "0" and rating["comment"] == "meh" and json.loads(rating["reasons"]) == ["wrong"]
    assert [e.action for e in events(redis_db)] == ["rate"] * 4
    shown = (await alice.get_thread(thread)).json()
    assert [s["output"] for s in shown["steps"] if s["type"] == "assistant_message"] == ["You said: explain"]
    assert [s["feedback"]["reasons"] for s in shown["steps"] if s.get("feedback")] == [["wrong"]]  # the page sends them back
    # Bob can't change Alice's reasons even with her exchange id.
    bob = await logged_in(alice.base_url, "bob")
    try:
        await bob.send("hello")
        await bob.action("reason", {"exchange_id": rid, "reason": "unsafe"}, answers=False)
    finally:
        await bob.close()
    assert json.loads(cast(str, redis_db.client.hget(keys.rating(thread, rid), "reasons"))) == ["wrong"]


async def test_history_lists_searches_filters_resumes_and_deletes(app_server: AppServer, redis_db: RedisServer) -> None:
    first = await logged_in(app_server.url)
    liked = await first.send("tell me about pandas")
    await first.rate(run_id(liked), 1, comment="nice")
    await first.close()
    second = await logged_in(app_server.url)
    await second.send("what about koalas")
    await second.close()

    r = await second.list_threads()
    assert r.status_code == 200
    names = [t["name"] for t in r.json()["data"]]
    assert names == ["what about koalas", "tell me about pandas"]  # newest first

    page1 = (await second.list_threads(first=1)).json()
    assert page1["pageInfo"]["hasNextPage"] is True and len(page1["data"]) == 1
    page2 = (await second.list_threads(first=1, cursor=page1["pageInfo"]["endCursor"])).json()
    assert [t["name"] for t in page2["data"]] == ["tell me about pandas"] and page2["pageInfo"]["hasNextPage"] is False

    assert [t["name"] for t in (await second.list_threads(search="PANDA")).json()["data"]] == ["tell me about pandas"]
    assert [t["name"] for t in (await second.list_threads(feedback=1)).json()["data"]] == ["tell me about pandas"]
    assert (await second.list_threads(feedback=0)).json()["data"] == []

    # Resuming shows the messages and the rating already given.
    assert first.thread_id is not None
    thread = (await second.get_thread(first.thread_id)).json()
    outputs = [s["output"] for s in thread["steps"] if s["type"] in ("user_message", "assistant_message")]
    assert outputs == ["tell me about pandas", "You said: tell me about pandas"]
    rated = [s for s in thread["steps"] if s.get("feedback")]
    assert len(rated) == 1 and rated[0]["feedback"]["value"] == 1 and rated[0]["feedback"]["comment"] == "nice"

    # Deleting removes the thread, its answers and ratings, and logs it for the retraining job.
    assert (await second.delete_thread(first.thread_id)).status_code == 200
    assert [t["name"] for t in (await second.list_threads()).json()["data"]] == ["what about koalas"]
    assert (await second.get_thread(first.thread_id)).status_code == 404
    assert not redis_db.client.exists(keys.exchange(first.thread_id, run_id(liked)), keys.rating(first.thread_id, run_id(liked)))
    deleted = events(redis_db)[-1]
    assert (deleted.action, deleted.exchange, deleted.thread, deleted.user) == ("delete", run_id(liked), first.thread_id, "alice")


async def test_resumed_thread_keeps_its_history(app_server: AppServer, redis_db: RedisServer, standin: str) -> None:
    import httpx

    first = await logged_in(app_server.url)
    await first.send("remember koalas")
    await first.close()
    resumed = ChatClient(app_server.url)
    await resumed.login("alice", USERS["alice"])
    await resumed.connect(thread_id=first.thread_id)
    resumed.thread_id = first.thread_id
    try:
        await resumed.send("and now?")
    finally:
        await resumed.close()
    sent = httpx.get(f"{standin}/requests").json()[-1]["messages"]
    assert [m["content"] for m in sent[-3:]] == ["remember koalas", "You said: remember koalas", "and now?"]


async def test_regenerate_keeps_both_answers_as_a_pair(alice: ChatClient, redis_db: RedisServer) -> None:
    first = await alice.send("pick one")
    first_id = run_id(first)
    thread = alice.thread_id
    assert thread is not None
    assert (await alice.rate(first_id, 0, reasons=["unhelpful"])).status_code == 200

    redis_db.client.set(keys.active_model(), "echo-v2")  # a different model answers the retry
    second = await alice.action("regenerate", {"exchange_id": first_id}, for_id=final_message(first)["id"])
    second_id = run_id(second)
    assert second_id != first_id and final_message(second)["metadata"]["model"] == "echo-v2"
    assert (await alice.rate(second_id, 1)).status_code == 200

    # Both answers to the same user message, the first hidden but kept, rated both ways: a pair.
    user_message_id = cast("str | None", redis_db.client.hget(keys.exchange(thread, first_id), "prompt_message_id"))
    assert user_message_id is not None
    same = [e.id for e in exchanges.for_thread_sync(redis_db.client, thread) if e.prompt_message_id == user_message_id]
    assert same == [first_id, second_id]
    a, b = (exchanges.load_sync(redis_db.client, thread, i) for i in (first_id, second_id))
    assert a is not None and b is not None
    assert a.messages == b.messages  # exactly the same prompt
    assert a.deleted and not b.deleted
    assert redis_db.client.hget(keys.rating(thread, first_id), "value") == "0"
    assert redis_db.client.hget(keys.rating(thread, second_id), "value") == "1"

    # The history shows only the answer in service, and the next turn builds on it.
    shown = (await alice.get_thread(thread)).json()
    answers = [s["output"] for s in shown["steps"] if s["type"] == "assistant_message"]
    assert answers == ["You said: pick one"] and len([s for s in shown["steps"] if s["type"] == "assistant_message"]) == 1


async def test_edit_keeps_the_earlier_answer_as_an_alternative(alice: ChatClient, redis_db: RedisServer) -> None:
    first = await alice.send("original question")
    first_id = run_id(first)
    thread = alice.thread_id
    assert thread is not None
    prompt_id = cast("str | None", redis_db.client.hget(keys.exchange(thread, first_id), "prompt_message_id"))
    assert prompt_id is not None
    edited = await alice.edit(prompt_id, "edited question")
    edited_id = run_id(edited)
    assert edited.text == "You said: edited question"
    assert [e.id for e in exchanges.for_thread_sync(redis_db.client, thread) if e.prompt_message_id == prompt_id] == [first_id, edited_id]
    assert redis_db.client.hget(keys.exchange(thread, first_id), "deleted") == "1"
    assert redis_db.client.hget(keys.step(thread, final_message(first)["id"]), "deleted") == "1"  # soft-deleted, not gone


# --- ownership and bad input -----------------------------------------------------------------------


async def test_another_user_cannot_read_rate_or_delete(app_server: AppServer, redis_db: RedisServer) -> None:
    alice = await logged_in(app_server.url)
    reply = await alice.send("private")
    rid = run_id(reply)
    await alice.close()
    assert alice.thread_id is not None
    bob = await logged_in(app_server.url, "bob")
    try:
        assert (await bob.get_thread(alice.thread_id)).status_code == 401
        r = await bob.rate(rid, 0, thread_id=alice.thread_id)
        assert r.status_code == 403 and "your own" in r.json()["detail"]
        r = await bob.rate(rid, None)  # an un-rate names no thread: looked for in Bob's own threads only
        assert r.status_code == 404 and "No answer" in r.json()["detail"], r.text
        assert (await bob.delete_thread(alice.thread_id)).status_code == 401
        assert (await bob.list_threads()).json()["data"] == []
        # Resuming someone else's thread over the socket is refused.
        intruder = ChatClient(app_server.url)
        await intruder.login("bob", USERS["bob"])
        with pytest.raises(Exception, match=r"(?i)connect"):
            await intruder.connect(thread_id=alice.thread_id)
    finally:
        await bob.close()
    assert not redis_db.client.exists(keys.rating(alice.thread_id, rid))
    assert events(redis_db) == []
    assert redis_db.client.exists(keys.thread(alice.thread_id), keys.exchange(alice.thread_id, rid)) == 2


@pytest.mark.parametrize(
    ("feedback", "status", "detail"),
    [
        ({"value": 2}, 422, "value"),
        ({"value": "yes"}, 422, "value"),
        ({"value": 1, "comment": "x" * 2001}, 422, "comment"),
        ({"value": 0, "reasons": ["rude-word"]}, 422, "reasons"),
        ({"value": 0, "reasons": ["wrong"] * 50}, 422, "reasons"),
        ({"value": 1, "forId": "../../etc"}, 422, "forId"),
        ({"value": 1, "forId": "no-such-answer"}, 404, "No answer"),
        ({"value": 1, "threadId": "another-thread"}, 404, "No answer"),
    ],
)
async def test_bad_ratings_are_refused_and_change_nothing(alice: ChatClient, redis_db: RedisServer, feedback: dict, status: int, detail: str) -> None:
    reply = await alice.send("hi")
    assert alice.thread_id is not None
    body = {"forId": run_id(reply), "threadId": alice.thread_id, **feedback}
    async with alice.http() as http:
        r = await http.put("/feedback", json={"feedback": body, "sessionId": alice.session_id})
    assert r.status_code == status, r.text
    assert detail in json.dumps(r.json())
    assert not redis_db.client.exists(keys.rating(alice.thread_id, run_id(reply)))
    assert events(redis_db) == []


async def test_malformed_and_unauthenticated_requests(app_server: AppServer, alice: ChatClient, redis_db: RedisServer) -> None:
    async with alice.http() as http:
        assert (await http.put("/feedback", content=b"{not json", headers={"content-type": "application/json"})).status_code == 422
        assert (await http.put("/feedback", json={"feedback": "nope"})).status_code == 422
        big = {"feedback": {"forId": "a", "threadId": "b", "value": 1, "comment": "x" * 40_000}}
        assert (await http.put("/feedback", json=big)).status_code == 413

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: refused as it streams in
            yield b'{"feedback": {"forId": "a", "threadId": "b", "value": 1, "comment": "'
            for _ in range(100):
                yield b"x" * 1000
            yield b'"}}'

        assert (await http.put("/feedback", content=chunked(), headers={"content-type": "application/json"})).status_code == 413
        assert (await http.request("DELETE", "/feedback", json={"feedbackId": "unknown"})).status_code == 404
    anonymous = ChatClient(app_server.url)
    async with anonymous.http() as http:
        assert (await http.put("/feedback", json={"feedback": {"forId": "a", "threadId": "b", "value": 1}})).status_code == 401
    assert events(redis_db) == []


async def test_oversize_message_is_refused_without_calling_the_model(alice: ChatClient, redis_db: RedisServer) -> None:
    reply = await alice.send("x" * 8001)
    assert reply.refused and "limit is 8000" in reply.refused
    assert reply.messages == [] and reply.tokens == []
    stored = [k for k in cast("list[str]", redis_db.client.keys("*")) if k != keys.user("alice") and not k.startswith(f"{keys.PREFIX}:limit:")]  # the login: user record, counter
    assert stored == []  # not stored, not even as Chainlit's step

"""What tests do as a logged-in user, and what they compare Redis with."""

from __future__ import annotations

from typing import Any, cast

import redis

from sim.client import ChatClient, Reply

# The test users (AUTH_USERS of every app the tests start).
USERS = {"alice": "alice-pw", "bob": "bob-pw"}


async def logged_in(url: str, user: str = "alice") -> ChatClient:
    """A user logged in over HTTP with their socket.io session open, as the browser does."""
    client = ChatClient(url)
    await client.login(user, USERS[user])
    await client.connect()
    return client


async def send_in(url: str, user: str, thread_id: str, text: str) -> Reply:
    """Resume one of the user's threads (as the history sidebar does) and send a message in it."""
    client = ChatClient(url)
    await client.login(user, USERS[user])
    await client.connect(thread_id=thread_id)
    client.thread_id = thread_id
    try:
        return await client.send(text)
    finally:
        await client.close()


def final_message(reply: Reply) -> dict[str, Any]:
    """The reply's final assistant message (there must be one)."""
    final = reply.final()
    assert final is not None, reply.messages
    return final


def run_id(reply: Reply) -> str:
    """The run step the answer belongs to: what Chainlit's feedback buttons point at."""
    final = reply.final()
    assert final is not None, reply.messages
    return str(final["parentId"])


def keyspace(url: str) -> dict[bytes, bytes | None]:
    """Every key and its serialized value (DUMP), but the rate-limit counters (a refused request
    counts): what "nothing changed" is compared with."""
    raw = redis.Redis.from_url(url)  # DUMP's bytes are not text
    try:
        return {k: raw.dump(k) for k in cast("list[bytes]", raw.keys("*")) if not k.startswith(b"{fb}:limit:")}
    finally:
        raw.close()

"""Attacks through the real interfaces: HTTP and socket.io exactly as a browser uses them, two users
(alice, bob), the real Chainlit app, a real Redis, and chromium for the cross-origin page.

Each refused attack is checked three ways: the status, the message a person reads, and the Redis
keyspace before and after (nothing written; rate-limit counters aside). docs/security.md is the
model these tests hold the app to.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import jwt
import pytest
import socketio

from feedback import exchange as exchanges
from feedback import keys
from launcher.process import ServiceGroup
from sim.client import ChatClient, Reply
from support.browser import OtherPage
from support.services import AppServer, RedisServer, app_env, start_app
from support.session import USERS, keyspace, logged_in, run_id

CHROMIUM = Path("/usr/bin/chromium")
T = TypeVar("T")





@pytest.fixture
async def alice(app_server: AppServer, redis_db: RedisServer) -> AsyncIterator[ChatClient]:
    client = await logged_in(app_server.url, "alice")
    yield client
    await client.close()


@pytest.fixture
async def bob(app_server: AppServer, redis_db: RedisServer) -> AsyncIterator[ChatClient]:
    client = await logged_in(app_server.url, "bob")
    yield client
    await client.close()


# --- 2. Origins ----------------------------------------------------------------------------------


async def test_a_state_change_from_another_origin_is_refused(app_server: AppServer, alice: ChatClient, redis_db: RedisServer) -> None:
    reply = await alice.send("rate me")
    rid = run_id(reply)
    assert (await alice.rate(rid, 1)).status_code == 200
    before = keyspace(redis_db.url)
    other = "http://127.0.0.1:1"  # another port of the same host: same site, another origin
    async with alice.http() as http:
        body = {"feedback": {"forId": rid, "threadId": alice.thread_id, "value": 0}}
        r = await http.put("/feedback", json=body, headers={"Origin": other})
        assert r.status_code == 403 and r.json()["detail"] == "Cross-origin request refused."
        r = await http.request("DELETE", "/project/thread", json={"threadId": alice.thread_id}, headers={"Origin": other})
        assert r.status_code == 403
        # No Origin header, but the browser says the request came from another site.
        r = await http.put("/feedback", json=body, headers={"Sec-Fetch-Site": "same-site"})
        assert r.status_code == 403
        assert keyspace(redis_db.url) == before
        # The app's own origin is served as before.
        r = await http.put("/feedback", json=body, headers={"Origin": app_server.url, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 200
    assert redis_db.client.hget(keys.rating(alice.thread_id or "", rid), "value") == "0"


async def test_socket_connections_from_another_origin_are_refused(app_server: AppServer, alice: ChatClient) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    auth = {"clientType": "webapp", "sessionId": "s-1", "threadId": None, "userEnv": "{}", "chatProfile": None}
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(app_server.url, socketio_path="/ws/socket.io", auth=auth, headers={"Cookie": alice.cookie or "", "Origin": "http://127.0.0.1:1"}, transports=["websocket"])
    await sio.connect(app_server.url, socketio_path="/ws/socket.io", auth=auth, headers={"Cookie": alice.cookie or "", "Origin": app_server.url}, transports=["websocket"])
    await sio.disconnect()


ATTACK_JS = """async ({app, rid, tid, csrf}) => {
  const out = {};
  const json = {'content-type': 'application/json'};
  try {
    const r = await fetch(app + '/project/threads', {method: 'POST', credentials: 'include', headers: json,
                                                     body: JSON.stringify({pagination: {first: 20}, filter: {}})});
    out.read = 'read ' + r.status + ' ' + (await r.text()).slice(0, 100);
  } catch (e) { out.read = 'blocked'; }
  try {
    const r = await fetch(app + '/feedback', {method: 'PUT', credentials: 'include', headers: json,
                                              body: JSON.stringify({feedback: {forId: rid, threadId: tid, value: 0}})});
    out.rate = 'sent ' + r.status;
  } catch (e) { out.rate = 'blocked'; }
  if (csrf) {  // a "simple" request: no preflight, the browser sends it with her cookie (it would log her out)
    try {
      await fetch(app + '/logout', {method: 'POST', mode: 'no-cors', credentials: 'include'});
      out.simple = 'sent';
    } catch (e) { out.simple = 'blocked'; }
  }
  out.socket = await new Promise((resolve) => {
    const ws = new WebSocket(app.replace('http', 'ws') + '/ws/socket.io/?EIO=4&transport=websocket');
    ws.onmessage = () => { resolve('open'); ws.close(); };
    ws.onerror = () => resolve('refused');
  });
  return out;
}"""


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
async def test_a_page_of_another_origin_cannot_read_or_change_a_logged_in_users_data(
    app_server: AppServer, alice: ChatClient, redis_db: RedisServer, other_origin: tuple[str, type[OtherPage]]
) -> None:
    """alice is logged in in chromium; a page on another port of 127.0.0.1 tries to read her threads,
    change her rating and open a socket with her cookie."""
    from playwright.async_api import async_playwright

    reply = await alice.send("keep my rating")
    rid = run_id(reply)
    assert (await alice.rate(rid, 1)).status_code == 200
    before = keyspace(redis_db.url)
    origin, page_class = other_origin
    page_class.html = b"<html><body>another site</body></html>"
    token = (alice.cookie or "").removeprefix("access_token=")
    args = {"app": app_server.url, "rid": rid, "tid": alice.thread_id, "csrf": False}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            ctx = await browser.new_context()
            await ctx.add_cookies([{"name": "access_token", "value": token, "url": app_server.url}])
            page = await ctx.new_page()
            # The same script from the app's own origin works: the attack below fails for the origin alone.
            await page.goto(app_server.url + "/health")
            own = await page.evaluate(ATTACK_JS, args)
            assert own["read"].startswith("read 200") and alice.thread_id in own["read"], own
            assert own["rate"] == "sent 200" and own["socket"] == "open", own
            assert (await alice.rate(rid, 1)).status_code == 200  # put her rating back
            before = keyspace(redis_db.url)

            await page.goto(origin)
            attack = await page.evaluate(ATTACK_JS, {**args, "csrf": True})
        finally:
            await browser.close()
    assert attack["read"] == "blocked", attack  # no credentialed CORS for other origins
    assert attack["rate"] == "blocked", attack  # the preflight is refused
    assert attack["socket"] == "refused", attack
    assert attack["simple"] == "sent", attack
    assert keyspace(redis_db.url) == before  # the logout was sent and refused: her token is not revoked
    assert redis_db.client.hget(keys.rating(alice.thread_id or "", rid), "value") == "1"
    async with alice.http() as http:
        assert (await http.get(f"/project/thread/{alice.thread_id}")).status_code == 200


# --- 3. Ids and names ----------------------------------------------------------------------------

HOSTILE_IDS = ["*", "{fb}", "a b/../c", "x\x00y", "x" * 5000, "carol:threads"]


async def test_hostile_ids_reach_no_key(app_server: AppServer, alice: ChatClient, redis_db: RedisServer) -> None:
    reply = await alice.send("my thread")
    tid = alice.thread_id
    assert tid and run_id(reply)
    before = keyspace(redis_db.url)

    # socket.io: a thread id that names another key of alice's thread, and other hostile ids.
    for bad in [f"{tid}:elements", *HOSTILE_IDS]:
        intruder = ChatClient(app_server.url)
        intruder.cookie = alice.cookie
        with pytest.raises(socketio.exceptions.ConnectionError):
            await intruder.connect(thread_id=bad)
        await intruder.close()
    # A message whose id is not an id is refused before Chainlit stores it.
    refused = await alice.send("hello", message_id="../x:1", retry=False)
    assert refused.refused == "Invalid message id." and refused.messages == []

    async with alice.http() as http:
        for bad in [f"{tid}:elements", "*", "{fb}", "a%20b", "x" * 5000]:
            r = await http.get(f"/project/thread/{bad}")
            assert r.status_code == 400 and "invalid id" in r.json()["detail"], (bad, r.text)
        for bad in [f"{tid}:elements", *HOSTILE_IDS]:
            r = await http.request("DELETE", "/project/thread", json={"threadId": bad})
            assert r.status_code == 400, (bad, r.text)
            r = await http.put("/feedback", json={"feedback": {"forId": bad, "threadId": tid, "value": 1}})
            assert r.status_code == 422, (bad, r.text)
    assert keyspace(redis_db.url) == before
    # alice's thread is whole: read, resumed and deleted as usual.
    assert (await alice.get_thread(tid)).status_code == 200
    resumed = ChatClient(app_server.url)
    resumed.cookie = alice.cookie
    await resumed.connect(thread_id=tid)
    await resumed.close()
    assert (await alice.delete_thread(tid)).status_code == 200
    assert not redis_db.client.exists(keys.thread(tid))


# --- 4. Sessions ---------------------------------------------------------------------------------


async def test_logout_ends_the_session_on_the_server(app_server: AppServer, alice: ChatClient, redis_db: RedisServer) -> None:
    await alice.send("before logout")
    tid = alice.thread_id
    async with alice.http() as http:
        assert (await http.get(f"/project/thread/{tid}")).status_code == 200
        assert (await http.post("/logout")).status_code == 200
        # The token is still in hand (a copied cookie, a stolen token): it opens nothing now.
        r = await http.get(f"/project/thread/{tid}")
        assert r.status_code == 401 and r.json()["detail"] == "This session has ended: log in again."
        assert (await http.put("/feedback", json={"feedback": {"forId": "x", "threadId": tid, "value": 1}})).status_code == 401
    again = ChatClient(app_server.url)
    again.cookie = alice.cookie
    with pytest.raises(socketio.exceptions.ConnectionError):
        await again.connect()
    await again.close()
    fresh = await logged_in(app_server.url, "alice")  # a new login works
    async with fresh.http() as http:
        assert (await http.get(f"/project/thread/{tid}")).status_code == 200
    await fresh.close()


async def test_a_removed_user_is_refused_and_tokens_have_the_configured_lifetime(own_services: ServiceGroup, redis_db: RedisServer, standin: str, tmp_path: Path) -> None:
    env = app_env(redis_db.url, f"{standin}/v1", tmp_path / "a", SESSION_TTL_S="3600")
    first = start_app(own_services, env, tmp_path / "a")
    bob = await logged_in(first.url, "bob")
    await bob.close()
    claims = jwt.decode((bob.cookie or "").removeprefix("access_token="), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600

    # The operator removes bob and restarts the app (same Redis, same signing secret).
    second = start_app(own_services, {**env, "AUTH_USERS": f"alice:{USERS['alice']}"}, tmp_path / "b")
    async with httpx.AsyncClient(base_url=second.url, headers={"Cookie": bob.cookie or ""}) as http:
        r = await http.post("/project/threads", json={"pagination": {"first": 5}, "filter": {}})
        assert r.status_code == 401 and r.json()["detail"] == "This user no longer exists."
    stale = ChatClient(second.url)
    stale.cookie = bob.cookie
    with pytest.raises(socketio.exceptions.ConnectionError):
        await stale.connect()
    await stale.close()
    alice = await logged_in(second.url, "alice")
    await alice.close()


# --- 5. Pair lists -------------------------------------------------------------------------------


async def test_a_forged_message_id_joins_no_one_elses_answers(alice: ChatClient, bob: ChatClient, redis_db: RedisServer) -> None:
    mid = "7d1c5a3e-0b7e-4f55-9a0e-5c2b3a4d6e10"
    mine = await alice.send("alice asks", message_id=mid)
    theirs = await bob.send("bob reuses her message id", message_id=mid)
    assert theirs.text  # bob still gets an answer in his own thread...
    hers = exchanges.for_thread_sync(redis_db.client, alice.thread_id or "")
    assert [e.id for e in hers] == [run_id(mine)] and hers[0].completion == "You said: alice asks"  # ...that joins nothing of hers
    assert (await bob.delete_thread(bob.thread_id or "")).status_code == 200
    assert [e.id for e in exchanges.for_thread_sync(redis_db.client, alice.thread_id or "")] == [run_id(mine)]
    assert redis_db.client.exists(keys.exchange(alice.thread_id or "", run_id(mine)))


# --- 6. Limits -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_app(tmp_path_factory: pytest.TempPathFactory, standin: str, redis_server_: RedisServer) -> Iterator[AppServer]:
    """An app of its own with small limits (the shared app's are lifted for the suite's pace)."""
    data = tmp_path_factory.mktemp("limited")
    group = ServiceGroup(data / "logs")
    with group:
        env = app_env(redis_server_.url, f"{standin}/v1", data, MESSAGES_PER_MINUTE="3", RATINGS_PER_MINUTE="4", LOGINS_PER_MINUTE="5")
        yield start_app(group, env, data)


async def in_one_window(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt` (a coroutine function) so that it starts and ends in one minute window of the
    limits; when a window boundary falls inside, the counters start over: run it again."""
    for _ in range(3):
        window = int(time.time() // 60)
        result = await attempt()
        if int(time.time() // 60) == window:
            return result
    raise AssertionError("three window boundaries in a row")


async def test_floods_get_429_with_retry_after(limited_app: AppServer, redis_db: RedisServer) -> None:
    async def logins() -> list[httpx.Response]:
        redis_db.client.delete(*redis_db.client.keys("{fb}:limit:*") or ["-"])
        async with httpx.AsyncClient(base_url=limited_app.url) as http:
            return [await http.post("/login", data={"username": "alice", "password": "wrong"}) for _ in range(7)]

    answers = await in_one_window(logins)
    assert [r.status_code for r in answers] == [401] * 5 + [429] * 2
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
    assert "Too many login attempts" in answers[-1].json()["detail"]

    redis_db.client.delete(*redis_db.client.keys("{fb}:limit:*") or ["-"])
    alice = await logged_in(limited_app.url, "alice")
    try:
        reply = await alice.send("one")
        rid = run_id(reply)

        async def ratings() -> list[httpx.Response]:
            redis_db.client.delete(*redis_db.client.keys("{fb}:limit:*") or ["-"])
            async with alice.http() as http:
                body = {"feedback": {"forId": rid, "threadId": alice.thread_id, "value": 1}}
                return [await http.put("/feedback", json=body) for _ in range(6)]

        rated = await in_one_window(ratings)
        assert [r.status_code for r in rated] == [200] * 4 + [429] * 2
        assert "Too many ratings" in rated[-1].json()["detail"] and rated[-1].headers["retry-after"]

        async def messages() -> tuple[list[Reply], int]:
            redis_db.client.delete(*redis_db.client.keys("{fb}:limit:*") or ["-"])
            answers = keys.thread_exchanges(alice.thread_id or "")
            before = redis_db.client.zcard(answers)
            sent = [await alice.send(f"message {i}", retry=False) for i in range(4)]
            return sent, redis_db.client.zcard(answers) - before

        sent, stored = await in_one_window(messages)
        assert [r.refused is None for r in sent] == [True, True, True, False]
        assert (sent[-1].refused or "").startswith("Too many messages: try again in")
        assert stored == 3  # the refused message was not answered
    finally:
        await alice.close()


# --- 8, 10. Switched-off and internal routes, malformed bodies ------------------------------------


async def test_switched_off_and_internal_routes(app_server: AppServer, alice: ChatClient, redis_db: RedisServer) -> None:
    await alice.send("do not share")
    tid = alice.thread_id
    before = keyspace(redis_db.url)
    async with alice.http() as http:
        assert (await http.put("/project/thread/share", json={"threadId": tid, "isShared": True})).status_code == 404
        assert (await http.get(f"/project/share/{tid}")).status_code == 404
        r = await http.post("/project/action", json={"sessionId": "no-such-session", "action": {"name": "regenerate", "payload": {}, "forId": "x", "id": "a"}})
        assert r.status_code == 404 and r.json()["detail"] == "No such session."
        assert (await http.get("/openapi.json")).status_code == 200  # logged in: the schema
        assert "swagger" not in (await http.get("/docs")).text.lower()
    assert keyspace(redis_db.url) == before
    async with httpx.AsyncClient(base_url=app_server.url) as anonymous:
        assert (await anonymous.get("/openapi.json")).status_code == 401
        assert (await anonymous.get(f"/project/share/{tid}")).status_code == 404


async def test_malformed_rating_bodies_get_a_clear_4xx(alice: ChatClient, redis_db: RedisServer) -> None:
    reply = await alice.send("rate me strictly")
    rid, tid = run_id(reply), alice.thread_id
    before = keyspace(redis_db.url)
    async with alice.http() as http:
        r = await http.put("/feedback", content=b'{"feedback": {"forId": "' + rid.encode() + b'", "value": 1, "comment": "\xff\xfe"}}', headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["detail"] == "The request body is not valid UTF-8."
        for value in (True, 1.0, "1", None):
            r = await http.put("/feedback", json={"feedback": {"forId": rid, "threadId": tid, "value": value}})
            assert r.status_code == 422, (value, r.text)
        assert keyspace(redis_db.url) == before
        # The longest valid comment, sent as JSON escapes (what a client may well do), fits the body limit.
        comment = "😀" * 1000  # 12 bytes each as a JSON escape (a surrogate pair)
        body = json.dumps({"feedback": {"forId": rid, "threadId": tid, "value": 1, "comment": comment + "é" * 1000}})
        assert len(body) > 16 * 1024
        r = await http.put("/feedback", content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
    assert redis_db.client.hget(keys.rating(tid or "", rid), "comment") == comment + "é" * 1000


async def test_the_socket_refuses_what_it_cannot_store(app_server: AppServer, alice: ChatClient, redis_db: RedisServer) -> None:
    """Over-long messages are refused before Chainlit stores anything (it used to store them twice)."""
    await alice.send("first")
    before = keyspace(redis_db.url)
    reply = await alice.send("x" * 900_000, retry=False, timeout_s=60)
    assert reply.refused and "the limit is 8000" in reply.refused
    assert keyspace(redis_db.url) == before
    await asyncio.wait_for(alice.send("still here"), 30)

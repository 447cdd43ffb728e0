"""Sessions that really end and limits nobody can walk around (issue 23), through the real
interfaces: HTTP with httpx, socket.io as the browser uses it, the real Chainlit app and a real
Redis. docs/security.md is the model these tests hold the app to.

- No route makes a login token out of another one (Chainlit's /auth/jwt is off), and every route
  of Chainlit's that takes a token goes through the session check: the list comes from Chainlit's
  own router, so a route added by an upgrade fails here until it is looked at.
- A socket opened before a logout is refused on its next message and action.
- The client address is the connection's, unless FORWARDED_ALLOW_IPS names the proxy.
- Failed logins count per (address, user name); one name's failures never refuse another's login.
- Limits hold in any window (a sliding window, not fixed minutes); sockets per user are capped.
- Header mode takes user names in UTF-8; the API schema shows the console's routes to operators only.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import socketio

from feedback import keys
from feedback.connection import connect
from feedback.limiter import Limiter
from launcher.process import ServiceGroup
from sim.client import ChatClient
from support.services import AppServer, RedisServer, app_env, start_app
from support.session import USERS, logged_in, run_id

ENDED = "This session has ended: log in again."
PROXY_SECRET = "proxy-secret-" + "p" * 32


def _own_app(factory: pytest.TempPathFactory, standin: str, redis: RedisServer, name: str, **extra: str) -> Iterator[AppServer]:
    data = factory.mktemp(name)
    group = ServiceGroup(data / "logs")
    with group:
        yield start_app(group, app_env(redis.url, f"{standin}/v1", data, **extra), data)


@pytest.fixture(scope="module")
def edge_app(tmp_path_factory: pytest.TempPathFactory, standin: str, redis_server_: RedisServer) -> Iterator[AppServer]:
    """An app of its own with small login and socket limits, and bob as its operator."""
    yield from _own_app(tmp_path_factory, standin, redis_server_, "edge", LOGINS_PER_MINUTE="5", SOCKETS_PER_USER="3", ADMIN_USERS="bob")


@pytest.fixture(scope="module")
def proxied_app(tmp_path_factory: pytest.TempPathFactory, standin: str, redis_server_: RedisServer) -> Iterator[AppServer]:
    """An app behind a proxy on 127.0.0.1, named as one to trust."""
    yield from _own_app(tmp_path_factory, standin, redis_server_, "proxied", LOGINS_PER_MINUTE="5", FORWARDED_ALLOW_IPS="127.0.0.1")


@pytest.fixture(scope="module")
def header_app(tmp_path_factory: pytest.TempPathFactory, standin: str, redis_server_: RedisServer) -> Iterator[AppServer]:
    """An app in header mode (behind an authenticating proxy)."""
    yield from _own_app(tmp_path_factory, standin, redis_server_, "header", AUTH_MODE="header", AUTH_HEADER="X-Remote-User", AUTH_PROXY_SECRET=PROXY_SECRET, LOGINS_PER_MINUTE="5")


def forget_limits(redis_db: RedisServer) -> None:
    redis_db.client.delete(*redis_db.client.keys("{fb}:limit:*") or ["-"])


async def wait_for(condition: Any, what: str, timeout_s: float = 10) -> None:
    """Poll `condition` (a coroutine function or a function) until it is true, or fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


# --- Routes that take or make a token ---------------------------------------------------------

# Every route of Chainlit's router, and what the app makes of it. A route added by a Chainlit
# upgrade fails the test below until it is added here, after checking what it does with tokens.
#   public: no token needed, none read.    login: makes a token from a password or the proxy's proof.
#   logout: revokes the token it is sent.  session: the session check (logged out, removed user).
#   off: answers 404 (a feature this app does not use, or a route that makes tokens from tokens).
#   removed: taken out of the router (its path reaches the UI's page).
CHAINLIT_ROUTES = {
    ("GET", "/public/{filename:path}"): "public",
    ("GET", "/assets/{filename:path}"): "public",
    ("GET", "/copilot/{filename:path}"): "public",
    ("GET", "/auth/config"): "public",
    ("POST", "/login"): "login",
    ("POST", "/logout"): "logout",
    ("POST", "/auth/jwt"): "off",
    ("POST", "/auth/header"): "login",
    ("GET", "/auth/oauth/{provider_id}"): "off",
    ("GET", "/auth/oauth/{provider_id}/callback"): "off",
    ("POST", "/auth/oauth/azure-ad-hybrid/callback"): "off",
    ("GET", "/user"): "session",
    ("POST", "/set-session-cookie"): "public",
    ("GET", "/project/translations"): "public",
    ("GET", "/project/settings"): "session",
    ("PUT", "/feedback"): "session",
    ("DELETE", "/feedback"): "session",
    ("POST", "/project/threads"): "session",
    ("GET", "/project/thread/{thread_id}"): "session",
    ("GET", "/project/share/{thread_id}"): "off",
    ("GET", "/project/thread/{thread_id}/element/{element_id}"): "session",
    ("PUT", "/project/element"): "off",
    ("DELETE", "/project/element"): "off",
    ("PUT", "/project/thread"): "session",
    ("PUT", "/project/thread/share"): "off",
    ("DELETE", "/project/thread"): "session",
    ("POST", "/project/action"): "session",
    ("POST", "/mcp"): "off",
    ("DELETE", "/mcp"): "off",
    ("POST", "/project/file"): "session",
    ("GET", "/project/file/{file_id}"): "session",
    ("GET", "/favicon"): "public",
    ("GET", "/logo"): "public",
    ("GET", "/avatars/{avatar_id:str}"): "public",
    ("HEAD", "/"): "public",
    ("GET", "/health"): "public",
    ("GET", "/{full_path:path}"): "public",
    # Not in the router: FastAPI's docs (the app serves /openapi.json itself; the others are off)
    # and socket.io (its connect and every event check the session: the tests below).
    ("GET", "/openapi.json"): "session",
    ("GET", "/docs"): "removed",
    ("GET", "/docs/oauth2-redirect"): "removed",
    ("GET", "/redoc"): "removed",
    ("MOUNT", "/ws/socket.io"): "session",
}

LIST_ROUTES = """
import json
from chainlit.server import app
from chainlit.auth import get_current_user

def needs_user(dependant):
    return any(d.call is get_current_user or needs_user(d) for d in dependant.dependencies)

def walk(routes):
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI's included routers
        yield from walk(inner.routes) if inner is not None else [route]

out = []
for route in walk(app.router.routes):
    methods = set(getattr(route, "methods", None) or ["MOUNT"])
    methods -= {"HEAD"} if "GET" in methods else set()  # Starlette adds HEAD to its GET routes
    dependant = getattr(route, "dependant", None)
    out += [[m, route.path, dependant is not None and needs_user(dependant)] for m in sorted(methods)]
print(json.dumps(out))
"""


def chainlit_routes(tmp_path: Path) -> list[tuple[str, str, bool]]:
    """Chainlit's routes as its server module defines them (in a process of its own: importing
    Chainlit writes its config under its app root)."""
    env = {"CHAINLIT_APP_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", LIST_ROUTES], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True)
    return [(m, p, bool(u)) for m, p, u in json.loads(done.stdout.strip().splitlines()[-1])]


def concrete(path: str) -> str:
    """A path template with every parameter filled in."""
    out, depth = "", 0
    for ch in path:
        depth += ch == "{"
        if depth == 0:
            out += ch
        depth -= ch == "}"
        if ch == "}" and depth == 0:
            out += "x"
    return out


async def test_no_route_renews_a_token_and_every_token_route_checks_the_session(app_server: AppServer, redis_db: RedisServer, tmp_path: Path) -> None:
    listed = chainlit_routes(tmp_path)
    found = {(m, p) for m, p, _ in listed}
    assert found == set(CHAINLIT_ROUTES), f"Chainlit's routes changed: new {found - set(CHAINLIT_ROUTES)}, gone {set(CHAINLIT_ROUTES) - found}"
    # A route that asks Chainlit for the current user is one the session check covers (or is off).
    assert {(m, p) for m, p, user in listed if user} <= {r for r, kind in CHAINLIT_ROUTES.items() if kind in ("session", "off")}

    ended = await logged_in(app_server.url, "alice")  # logged out below: its token is revoked
    await ended.close()
    live = await logged_in(app_server.url, "alice")
    await live.close()
    async with httpx.AsyncClient(base_url=app_server.url, headers={"Cookie": ended.cookie or ""}) as http:
        assert (await http.post("/logout")).status_code == 200
        for (method, path), kind in CHAINLIT_ROUTES.items():
            if kind != "session" or method == "MOUNT":
                continue
            r = await http.request(method, concrete(path), json={})
            assert r.status_code == 401 and r.json()["detail"] == ENDED, (method, path, r.status_code, r.text[:200])
    for cookie in (ended.cookie, live.cookie):  # a token logged out, and one still valid
        token = (cookie or "").removeprefix("access_token=")
        async with httpx.AsyncClient(base_url=app_server.url, headers={"Cookie": cookie or "", "Authorization": f"Bearer {token}"}) as http:
            for (method, path), kind in CHAINLIT_ROUTES.items():
                if kind == "off":
                    r = await http.request(method, concrete(path), json={})
                    assert r.status_code == 404 and "access_token" not in r.cookies, (method, path, r.status_code, r.text[:200])
                elif kind == "removed":
                    r = await http.request(method, concrete(path))
                    assert "swagger" not in r.text.lower() and "redoc" not in r.text.lower(), (method, path)
    # The logged-out token opens no socket either; the live one does.
    refused = ChatClient(app_server.url)
    refused.cookie = ended.cookie
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect()
    await refused.close()
    async with httpx.AsyncClient(base_url=app_server.url, headers={"Cookie": live.cookie or ""}) as http:
        assert (await http.get("/user")).json()["identifier"] == "alice"


# --- Logout ends open sockets -------------------------------------------------------------------


async def test_logout_ends_the_sockets_already_open(app_server: AppServer, redis_db: RedisServer) -> None:
    """Two tabs of one login; the user logs out (elsewhere, over HTTP): the next message of one
    and the next click in the other are refused, nothing is answered, and the sockets close."""
    first = await logged_in(app_server.url, "alice")
    second = ChatClient(app_server.url)
    second.cookie = first.cookie
    await second.connect()
    try:
        assert (await first.send("before")).text == "You said: before"
        answered = await second.send("regenerate me")
        [regenerate] = [a for a in answered.actions if a["name"] == "regenerate"]
        threads = [first.thread_id or "", second.thread_id or ""]
        stored = [redis_db.client.zcard(keys.thread_exchanges(t)) for t in threads]

        async with first.http() as http:
            assert (await http.post("/logout")).status_code == 200

        refused = await first.send("after logout", retry=False)
        assert refused.refused == ENDED and refused.messages == [] and refused.tokens == []
        await wait_for(lambda: not first.sio.connected, "the server closes the socket")

        # The other tab's click, sent with a new login's token: the action runs in that socket's
        # session, which was opened with the token logged out.
        again = await logged_in(app_server.url, "alice")
        await again.close()
        async with again.http() as http:
            action = {"name": "regenerate", "payload": regenerate["payload"], "forId": regenerate["forId"], "id": regenerate["id"]}
            r = await http.post("/project/action", json={"sessionId": second.session_id, "action": action})
        assert r.status_code == 401 and r.json()["detail"] == ENDED
        await wait_for(lambda: not second.sio.connected, "the server closes the other socket")
        assert [redis_db.client.zcard(keys.thread_exchanges(t)) for t in threads] == stored  # nothing answered
        # With the logged-out cookie itself, the click is refused at the door.
        async with second.http() as http:
            r = await http.post("/project/action", json={"sessionId": second.session_id, "action": action})
        assert r.status_code == 401
    finally:
        await first.close()
        await second.close()


async def test_a_socket_does_not_outlive_its_logins_expiry(app_server: AppServer, redis_db: RedisServer) -> None:
    """A login about to expire (a token as the app signs them, 3 s left): its socket is served
    until then, and refused from then on, though it was opened in time."""
    now = int(time.time())
    claims = {"identifier": "alice", "display_name": None, "metadata": {"provider": "password", "session": "short"}, "iat": now, "exp": now + 3}
    secret = app_env("", "", Path())["CHAINLIT_AUTH_SECRET"]
    client = ChatClient(app_server.url)
    client.cookie = f"access_token={jwt.encode(claims, secret, algorithm='HS256')}"
    await client.connect()
    try:
        assert (await client.send("in time")).text == "You said: in time"
        stored = redis_db.client.zcard(keys.thread_exchanges(client.thread_id or ""))
        await wait_for(lambda: time.time() > now + 4, "the login's expiry")
        late = await client.send("too late", retry=False)
        assert late.refused == ENDED and late.tokens == []
        assert redis_db.client.zcard(keys.thread_exchanges(client.thread_id or "")) == stored
    finally:
        await client.close()


# --- Client addresses and login limits ------------------------------------------------------------


async def test_x_forwarded_for_is_believed_only_from_a_named_proxy(edge_app: AppServer, proxied_app: AppServer, redis_db: RedisServer) -> None:
    wrong = {"username": "alice", "password": "wrong"}
    # Rotating the header does not escape the limit: the address is the connection's.
    async with httpx.AsyncClient(base_url=edge_app.url) as http:
        rotated = [await http.post("/login", data=wrong, headers={"X-Forwarded-For": f"10.0.0.{i}"}) for i in range(7)]
    assert [r.status_code for r in rotated] == [401] * 5 + [429] * 2

    # Naming a victim's address (127.0.0.2, a real address of this host) does not lock them out.
    forget_limits(redis_db)
    async with httpx.AsyncClient(base_url=edge_app.url) as attacker:
        framed = [await attacker.post("/login", data=wrong, headers={"X-Forwarded-For": "127.0.0.2"}) for _ in range(7)]
    assert [r.status_code for r in framed][-1] == 429
    async with httpx.AsyncClient(base_url=edge_app.url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")) as victim:
        r = await victim.post("/login", data={"username": "alice", "password": USERS["alice"]})
        assert r.status_code == 200, r.text

    # Behind a proxy named in FORWARDED_ALLOW_IPS, its header is the client's address.
    forget_limits(redis_db)
    async with httpx.AsyncClient(base_url=proxied_app.url) as proxy:
        one = [await proxy.post("/login", data=wrong, headers={"X-Forwarded-For": "10.1.1.1"}) for _ in range(6)]
        assert [r.status_code for r in one] == [401] * 5 + [429]
        assert (await proxy.post("/login", data=wrong, headers={"X-Forwarded-For": "10.1.1.2"})).status_code == 401
        assert (await proxy.post("/login", data=wrong)).status_code == 401  # the proxy's own address


async def test_one_accounts_failures_never_refuse_another_accounts_login(edge_app: AppServer, redis_db: RedisServer) -> None:
    forget_limits(redis_db)
    async with httpx.AsyncClient(base_url=edge_app.url) as http:
        guesses = [await http.post("/login", data={"username": "bob", "password": f"guess-{i}"}) for i in range(7)]
        assert [r.status_code for r in guesses] == [401] * 5 + [429] * 2
        assert "Too many login attempts" in guesses[-1].json()["detail"] and 1 <= int(guesses[-1].headers["retry-after"]) <= 60
        assert (await http.post("/login", data={"username": "bob", "password": USERS["bob"]})).status_code == 429  # bob, from here
        # alice, from the same address: her correct password works, however often (successes
        # are not counted), and her own mistakes have their own count.
        for _ in range(7):
            assert (await http.post("/login", data={"username": "alice", "password": USERS["alice"]})).status_code == 200
        assert (await http.post("/login", data={"username": "alice", "password": "typo"})).status_code == 401


# --- Limits hold in any window -------------------------------------------------------------------


async def test_at_most_the_limit_passes_in_any_window(redis_db: RedisServer) -> None:
    """A limit of 3 per 2 s, hit at the end of one clock window and the start of the next (where a
    fixed window lets 6 through), then continuously: no 2 s span ever holds more than 3 hits."""
    limit, window = 3, 2.0
    redis = connect(redis_db.url)
    limiter = Limiter(redis, "test", limit, window_s=2)
    passed: list[tuple[float, float]] = []  # (sent, answered) of each hit that passed

    async def hit() -> int | None:
        sent = time.time()
        retry = await limiter.hit("someone")
        if retry is None:
            passed.append((sent, time.time()))
        return retry

    try:
        # Late in a clock window of 2 s (a fixed window's), then early in the next one.
        await wait_for(lambda: 1.4 <= time.time() % window < 1.6, "late in a window", timeout_s=5)
        assert [await hit() for _ in range(limit)] == [None] * limit
        await wait_for(lambda: time.time() % window < 0.3, "the next window", timeout_s=5)
        refused = [await hit() for _ in range(limit)]
        assert all(r is not None and 1 <= r <= 2 for r in refused), refused
        # Hammer for three windows more.
        deadline = time.time() + 3 * window
        while time.time() < deadline:
            await hit()
            await asyncio.sleep(0.01)
    finally:
        await redis.aclose()
    assert len(passed) >= 2 * limit
    for first, later in zip(passed, passed[limit:], strict=False):
        # The hit `limit` places later was allowed a whole window after this one (on Redis's
        # clock, between the sending of one and the answer to the other).
        assert later[1] - first[0] >= window, passed


async def test_sockets_per_user_are_capped(edge_app: AppServer, redis_db: RedisServer) -> None:
    tabs = [await logged_in(edge_app.url, "alice")]
    for _ in range(2):
        tab = ChatClient(edge_app.url)
        tab.cookie = tabs[0].cookie
        await tab.connect()
        tabs.append(tab)
    reasons: list[Any] = []
    extra = socketio.AsyncClient(reconnection=False)
    extra.on("connect_error", lambda data: reasons.append(data))
    auth = {"clientType": "webapp", "sessionId": "tab-4", "threadId": None, "userEnv": "{}", "chatProfile": None}
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await extra.connect(edge_app.url, socketio_path="/ws/socket.io", auth=auth, headers={"Cookie": tabs[0].cookie or ""}, transports=["websocket"])
        assert reasons and "Too many open connections: at most 3 per user" in str(reasons[0]), reasons
        bob = await logged_in(edge_app.url, "bob")  # another user is not affected
        await bob.close()
        assert (await tabs[1].send("still served")).text == "You said: still served"
        await tabs[2].close()  # a tab closed: a new one may open

        async def reopened() -> bool:
            tab = ChatClient(edge_app.url)
            tab.cookie = tabs[0].cookie
            try:
                await tab.connect()
            except socketio.exceptions.ConnectionError:
                return False
            tabs[2] = tab
            return True

        await wait_for(reopened, "a socket after one was closed")
    finally:
        for tab in tabs:
            await tab.close()


# --- Header mode: names in any script, no renewal --------------------------------------------------


async def test_header_mode_takes_utf8_names_and_renews_nothing(header_app: AppServer, redis_db: RedisServer) -> None:
    forget_limits(redis_db)
    for sent, name in [("Zoë", "Zoë"), ("山田", "山田"), ("Zoe\u0308", "Zoë")]:  # the last: decomposed
        headers = {b"X-Remote-User": sent.encode(), b"X-Auth-Proxy-Secret": PROXY_SECRET.encode()}  # UTF-8 bytes
        async with httpx.AsyncClient(base_url=header_app.url) as http:
            r = await http.post("/auth/header", headers=headers)
            assert r.status_code == 200, (sent, r.status_code, r.text)
            cookie = f"access_token={r.cookies['access_token']}"
            assert (await http.get("/user", headers={"Cookie": cookie})).json()["identifier"] == name
            # Renewal without the proxy: off.
            renewed = await http.post("/auth/jwt", headers={"Authorization": f"Bearer {r.cookies['access_token']}"})
            assert renewed.status_code == 404 and "access_token" not in renewed.cookies
        client = ChatClient(header_app.url)
        client.cookie = cookie
        await client.connect()
        try:
            reply = await client.send(f"hello from {name}")
            assert (await client.rate(run_id(reply), 1)).status_code == 200
        finally:
            await client.close()
        assert redis_db.client.hget(keys.rating(client.thread_id or "", run_id(reply)), "value") == "1"
        stored = redis_db.client.hget(keys.exchange(client.thread_id or "", run_id(reply)), "user")
        assert stored == name
    async with httpx.AsyncClient(base_url=header_app.url) as http:
        # Not UTF-8: refused. Without the proxy's secret, guesses count per address whatever the name.
        bad = {b"X-Remote-User": b"Zo\xeb", b"X-Auth-Proxy-Secret": PROXY_SECRET.encode()}
        assert (await http.post("/auth/header", headers=bad)).status_code == 401
        forget_limits(redis_db)
        guesses = [await http.post("/auth/header", headers={"X-Remote-User": f"user{i}", "X-Auth-Proxy-Secret": f"guess-{i}" * 8}) for i in range(6)]
        assert [r.status_code for r in guesses] == [401] * 5 + [429]


# --- The API schema ------------------------------------------------------------------------------


async def test_the_schema_shows_the_console_to_operators_only(edge_app: AppServer, redis_db: RedisServer) -> None:
    alice, bob = await logged_in(edge_app.url, "alice"), await logged_in(edge_app.url, "bob")  # bob: ADMIN_USERS
    await alice.close()
    await bob.close()
    async with alice.http() as http:
        users = (await http.get("/openapi.json")).json()["paths"]
    async with bob.http() as http:
        operators = (await http.get("/openapi.json")).json()["paths"]
    assert "/feedback" in users and "/project/threads" in users
    assert not [p for p in users if p.startswith("/admin")], list(users)
    assert [p for p in operators if p.startswith("/admin")] and set(users) < set(operators)

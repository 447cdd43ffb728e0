"""The edge of the chat app: what a browser sends is checked here before Chainlit, a Redis key or a
file sees it. docs/security.md describes the model; tests/test_security.py attacks it.

- Origins: a state-changing HTTP request from another origin is refused (403) and socket.io
  refuses connections from another origin; the app's own origin and ALLOWED_ORIGINS pass.
- Ids and names: socket.io handshakes and messages with ids that are not ids are refused;
  `feedback.keys` refuses them again when a key is built (answered 400 over HTTP).
- Sessions: a login token is refused after logout (revoked in Redis until it expires) and once
  its user is no longer in AUTH_USERS; tokens live SESSION_TTL_S and are never renewed (Chainlit's
  /auth/jwt is off). An open socket is checked again on every event and action it sends: a
  session logged out, on any process, is refused there and its socket closed.
- Client addresses: the connection's peer, unless it is a proxy named in FORWARDED_ALLOW_IPS.
- Limits: messages and ratings per user, failed logins per client address and user name (429,
  Retry-After), open sockets per user.
- Switched-off or internal routes answer 404: sharing, token renewal, OAuth, the API docs; an
  action for an unknown session is a 404, not a crash. The API schema shows the console's routes to
  operators only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from chainlit.auth import authenticate_user, get_current_user, reuseable_oauth
from chainlit.auth.jwt import decode_jwt
from chainlit.config import config as chainlit_config
from chainlit.session import WebsocketSession
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from redis.asyncio import Redis
from socketio import AsyncServer
from socketio.exceptions import ConnectionRefusedError as Refused  # its message reaches the client
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedback import keys
from feedback.limiter import Limiter
from feedback.settings import Settings
from feedback.store import OUTAGE

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATHS = frozenset({"/login", "/auth/header"})
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
ENDED = "This session has ended: log in again."
MAX_LOGIN_BODY = 16 * 1024  # a login form is a user name and a password
CONSOLE = "/admin"  # the operator console's routes (bot/console)


def own_origin(scope: Scope) -> str:
    """The origin this request was sent to (scheme and Host header)."""
    return f"{scope.get('scheme', 'http')}://{Headers(scope=scope).get('host', '')}"


def token_id(token: str) -> str:
    """A token's name in Redis: never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


class Sessions:
    """Which login tokens still open a session: not logged out, user still configured."""

    def __init__(self, redis: Redis, users: dict[str, str] | None) -> None:
        self.redis = redis
        self.users = users  # None: header mode, the proxy vouches for each login

    async def revoke(self, token: str) -> None:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
            ttl = max(1, int(float(claims.get("exp", 0)) - time.time()))
        except (jwt.InvalidTokenError, TypeError, ValueError):
            return  # not a token we issued: nothing to revoke
        await self.redis.set(keys.revoked_token(token_id(token)), "1", ex=ttl)

    async def refusal(self, token: str, identifier: str) -> str | None:
        """Why this token no longer opens a session, or None."""
        if self.users is not None and identifier not in self.users:
            return "This user no longer exists."
        try:
            revoked = await self.redis.exists(keys.revoked_token(token_id(token)))
        except OUTAGE as exc:
            # Chat goes on during an outage; a token logged out elsewhere may pass until Redis is back.
            log.warning("cannot check token revocation (Redis unreachable): %s", exc)
            return None
        return ENDED if revoked else None

    async def still_open(self, token: str) -> str | None:
        """Why the session a socket was opened with is over (expired, logged out, user removed),
        or None: asked again on every event, since a socket outlives the check at its connect."""
        try:
            user = decode_jwt(token)  # the signature and the expiry
        except jwt.InvalidTokenError:
            return ENDED
        return await self.refusal(token, user.identifier)


def client_address(scope: Scope) -> str:
    """The client's address: the connection's peer. uvicorn has already replaced it with the
    X-Forwarded-For address when the peer is a proxy named in FORWARDED_ALLOW_IPS (`install`)."""
    return str((scope.get("client") or ("unknown", 0))[0])


def header_text(raw: str | None) -> str | None:
    """A header's value as the text a proxy meant: HTTP gives bytes, which Starlette reads as
    latin-1; proxies send user names in UTF-8 (docs/security.md). NFC, so that "Zoë" is one name
    however it was composed. None when absent or not UTF-8."""
    if raw is None:
        return None
    try:
        return unicodedata.normalize("NFC", raw.encode("latin-1").decode("utf-8"))
    except UnicodeError:
        return None


class OriginGuard:
    """ASGI middleware: refuse state-changing requests that a page of another origin made."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            cross = origin is not None and origin != own_origin(scope) and origin not in self.allowed
            # Without an Origin header, browsers still say where a request came from.
            cross = cross or (origin is None and headers.get("sec-fetch-site") in ("cross-site", "same-site"))
            if cross:
                log.warning("refused %s %s from origin %s", scope["method"], scope["path"], origin)
                await JSONResponse({"detail": "Cross-origin request refused."}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


LoginName = Callable[[Scope, bytes], Awaitable[str]]


class LoginLimit:
    """ASGI middleware: at most N failed logins in any minute per client address and user name.

    Each attempt is counted before it runs (a burst of parallel guesses is bounded too) and taken
    out of the count when it succeeded: only failures count, and one name's failures never refuse
    another name's login from the same address (everyone behind one proxy shares an address)."""

    def __init__(self, app: ASGIApp, limiter: Limiter, name: LoginName) -> None:
        self.app = app
        self.limiter = limiter
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in LOGIN_PATHS:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive, MAX_LOGIN_BODY)
        if body is None:
            await JSONResponse({"detail": "This login request is too large."}, status_code=413)(scope, receive, send)
            return
        # The name goes through a digest into the key (feedback/limiter.py): any string is safe.
        subject = f"{client_address(scope)}\n{await self.name(scope, body)}"
        hit = await self.limiter.take(subject)
        if hit.retry is not None:
            await too_many(hit.retry, "Too many login attempts")(scope, receive, send)
            return
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, _replay(body, receive), send_status)
        if 200 <= status < 300:
            await self.limiter.forget(subject, hit.hit_id)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away: what came
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body read already, then what the client sends next (its
    disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def login_name(settings: Settings) -> LoginName:
    """The user name a login attempt is for (what its failures are counted under): the form's
    `username`; in header mode the proxy's user header, and "" when the request does not carry the
    proxy's secret (guessing the secret is counted per address, whatever name comes with it)."""
    proof = settings.auth_proxy_secret.get_secret_value().encode() if settings.auth_proxy_secret else b""

    async def name(scope: Scope, body: bytes) -> str:
        headers = Headers(scope=scope)
        if settings.auth_mode == "header":
            sent = headers.get(settings.auth_proxy_header, "").encode("latin-1")
            if not proof or not hmac.compare_digest(sent, proof):
                return ""
            return header_text(headers.get(settings.auth_header)) or ""

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(scope, receive).form(max_files=0, max_fields=20)
        except (StarletteHTTPException, MultiPartException):
            return ""  # Chainlit refuses it too (a failure, counted under no name)
        username = form.get("username")
        return username if isinstance(username, str) else ""

    return name


def too_many(seconds: int, what: str) -> JSONResponse:
    return JSONResponse({"detail": f"{what}: try again in {seconds} s."}, status_code=429, headers={"Retry-After": str(seconds)})


def check_message(payload: Any, max_chars: int) -> str | None:
    """Why a client_message/edit_message payload is refused, or None."""
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, dict):
        return "Malformed message."
    # (Its threadId is not checked: Chainlit ignores it and uses the session's thread.)
    for field in ("id", "parentId"):
        value = message.get(field)
        if (field == "id" or value is not None) and not keys.valid_id(value):
            return f"Invalid message {field}."
    output = message.get("output")
    if not isinstance(output, str):
        return "Malformed message."
    if len(output) > max_chars:
        return f"Your message has {len(output)} characters; the limit is {max_chars}. Nothing was sent."
    return None


def check_handshake(auth: Any) -> str | None:
    """Why a socket.io handshake's auth payload is refused, or None."""
    if not isinstance(auth, dict) or not keys.valid_id(auth.get("sessionId")):
        return "invalid session id"
    thread_id = auth.get("threadId")
    if thread_id not in (None, "") and not keys.valid_id(thread_id):  # the UI sends "" for a new chat
        return "invalid thread id"
    return None


Handler = Callable[..., Awaitable[Any]]


def _wrap(sio: AsyncServer, event: str, guard: Callable[[Handler], Handler]) -> None:
    handlers = sio.handlers["/"]
    handlers[event] = guard(handlers[event])


@dataclass
class Guards:
    sessions: Sessions
    messages: Limiter  # also counts regenerated answers (an action, not a message)
    sio: AsyncServer

    async def session_over(self, session: WebsocketSession) -> str | None:
        """Why a socket's session is over (logged out, expired, user removed), or None; when over,
        the socket is told why and closed: nothing it sends is answered any more."""
        if session.token is None:
            return None
        refusal = await self.sessions.still_open(session.token)
        if refusal:
            log.warning("socket %s refused: %s", session.socket_id, refusal)
            await self.sio.emit("toast", {"message": refusal, "type": "error"}, to=session.socket_id)
            await self.sio.emit("task_end", {}, to=session.socket_id)
            await self.sio.disconnect(session.socket_id)
        return refusal


def install(app: FastAPI, sio: AsyncServer, redis: Redis, settings: Settings, users: dict[str, str] | None) -> Guards:
    """Guard the HTTP app and the socket.io server; call once, before the app serves."""
    # uvicorn believes X-Forwarded-For and -Proto from the peers this names (by default 127.0.0.1,
    # i.e. anyone on this host): it reads it when Chainlit's CLI builds its config, which is after
    # this app module is loaded. Empty: it believes no one.
    os.environ["FORWARDED_ALLOW_IPS"] = settings.forwarded_allow_ips
    guards = Guards(Sessions(redis, users), Limiter(redis, "messages", settings.messages_per_minute), sio)
    chainlit_config.project.user_session_timeout = settings.session_ttl_s
    logins = Limiter(redis, "logins", settings.logins_per_minute)
    current_user = _guard_http(app, guards.sessions, logins, login_name(settings), settings.origins)
    app.router.routes[0:0] = _front_routes(app, current_user, guards, settings.admins)
    _guard_socket(sio, guards, settings)
    return guards


def _guard_http(app: FastAPI, sessions: Sessions, logins: Limiter, name: LoginName, origins: frozenset[str]) -> Callable[..., Awaitable[Any]]:
    """Origin and login-rate middleware, 400 for ids that may not reach a key, and the session
    check on every route that asks for the current user. Returns that checked dependency."""
    # Chainlit's CORS middleware reads this list when the app first serves: no origin gets
    # credentialed cross-origin reads unless configured.
    chainlit_config.project.allow_origins[:] = sorted(origins)
    app.add_middleware(LoginLimit, limiter=logins, name=name)
    app.add_middleware(OriginGuard, allowed=origins)  # added last: runs first

    async def bad_key(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    app.add_exception_handler(keys.KeyPartError, bad_key)

    async def current_user(token: str = Depends(reuseable_oauth)) -> Any:
        user = await authenticate_user(token)
        refusal = await sessions.refusal(token, user.identifier)
        if refusal:
            raise HTTPException(status_code=401, detail=refusal)
        return user

    app.dependency_overrides[get_current_user] = current_user
    return current_user


async def _not_found() -> JSONResponse:
    return JSONResponse({"detail": "Not found."}, status_code=404)


async def _call_action(request: Request, user: Any, guards: Guards) -> Any:
    """Chainlit's /project/action, after checking what it takes unchecked (500s before), and that
    the socket's own session is not over: an action runs in that socket's session, whatever
    token the request came with."""
    from chainlit.action import Action
    from chainlit.server import call_action as chainlit_call_action
    from chainlit.types import CallActionRequest

    try:
        payload = CallActionRequest.model_validate(await request.json())
        Action(**payload.action)  # what Chainlit builds from it, unchecked
    except (ValueError, TypeError):
        raise HTTPException(status_code=400, detail="Malformed action.") from None
    session = WebsocketSession.get_by_id(payload.sessionId) if keys.valid_id(payload.sessionId) else None
    if session is None:
        raise HTTPException(status_code=404, detail="No such session.")
    refusal = await guards.session_over(session)
    if refusal:
        raise HTTPException(status_code=401, detail=refusal)
    return await chainlit_call_action(payload, user)


async def _session_cookie(request: Request) -> JSONResponse:
    """Chainlit's /set-session-cookie sets whatever it is sent, and fails (500) on a body that is
    not JSON: the same cookie, for a session id only."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    session_id = body.get("session_id") if isinstance(body, dict) else None
    if not keys.valid_id(session_id):
        raise HTTPException(status_code=400, detail="session_id must be a session id.")
    local = request.client is not None and request.client.host in ("127.0.0.1", "localhost")
    response = JSONResponse({"message": "Session cookie set"})
    response.set_cookie("X-Chainlit-Session-id", str(session_id), path="/", httponly=True, secure=not local, samesite="lax" if local else "none")
    return response


# Chainlit's routes that make a login token out of something else, and that this app does not use:
# POST /auth/jwt trades any signed, unexpired token for a new one (it knows nothing of logout,
# the proxy's secret or the login's expiry; the web UI never calls it, only Chainlit's copilot
# widget, which this app does not offer), and OAuth, which is not configured. Logins are /login
# (password mode) and /auth/header (header mode) only; tests/test_sessions.py pins every route.
TOKEN_MINTING_OFF = (
    ("/auth/jwt", "POST"),
    ("/auth/oauth/{provider_id}", "GET"),
    ("/auth/oauth/{provider_id}/callback", "GET"),
    ("/auth/oauth/azure-ad-hybrid/callback", "POST"),
)


def _front_routes(app: FastAPI, current_user: Callable[..., Awaitable[Any]], guards: Guards, admins: frozenset[str]) -> list[APIRoute]:
    """Routes put in front of Chainlit's (the first match wins): the schema for logged-in users,
    404 for what is switched off or unused, checked versions of two that failed on bad input."""
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in DOC_PATHS]

    async def call_action(request: Request, user: Any = Depends(current_user)) -> Any:
        return await _call_action(request, user, guards)

    front = [
        APIRoute("/openapi.json", openapi_for_users(app, current_user, admins), methods=["GET"], include_in_schema=False, dependency_overrides_provider=app),
        APIRoute("/project/action", call_action, methods=["POST"], include_in_schema=False, dependency_overrides_provider=app),
        APIRoute("/set-session-cookie", _session_cookie, methods=["POST"], include_in_schema=False),
        # Chainlit features this app does not use: their routes fail (500) on sessions they
        # don't know rather than refusing.
        APIRoute("/project/element", _not_found, methods=["PUT", "DELETE"], include_in_schema=False),
        *(APIRoute(path, _not_found, methods=[method], include_in_schema=False) for path, method in TOKEN_MINTING_OFF),
    ]
    if not chainlit_config.features.allow_thread_sharing:
        front += [
            APIRoute("/project/share/{thread_id}", _not_found, methods=["GET"], include_in_schema=False),
            APIRoute("/project/thread/share", _not_found, methods=["PUT"], include_in_schema=False),
        ]
    if not chainlit_config.features.mcp.enabled:
        front.append(APIRoute("/mcp", _not_found, methods=["POST", "DELETE"], include_in_schema=False))
    return front


class Sockets:
    """The open sockets of each user in this process, at most `cap` each. Per process: a crashed
    process takes its count with it, and a user's tabs stay on one process (docs/processes.md)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.of_user: dict[str, set[str]] = {}
        self.user_of: dict[str, str] = {}

    def open(self, sid: str, user: str) -> bool:
        held = self.of_user.setdefault(user, set())
        if len(held) >= self.cap:
            return False
        held.add(sid)
        self.user_of[sid] = user
        return True

    def close(self, sid: str) -> None:
        user = self.user_of.pop(sid, None)
        held = self.of_user.get(user or "")
        if held is not None:
            held.discard(sid)
            if not held:
                del self.of_user[user or ""]


# Socket events that are no user's act: a connect has its own checks, a disconnect only cleans up.
UNCHECKED_EVENTS = frozenset({"connect", "disconnect"})


def _guard_socket(sio: AsyncServer, guards: Guards, settings: Settings) -> None:
    """Origin check, handshake and message checks, session check at connect and on every event,
    the message limit, the cap on sockets per user."""
    sockets = Sockets(settings.sockets_per_user)

    def origin_ok(origin: str | None, environ: dict[str, Any]) -> bool:
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
        return origin is None or origin == own or origin in settings.origins

    sio.eio.cors_allowed_origins = origin_ok  # engine.io refuses other origins (400)

    def guard_connect(original: Handler) -> Handler:
        async def connect(sid: str, environ: dict[str, Any], auth: Any) -> Any:
            problem = check_handshake(auth)
            if problem:
                log.warning("refused socket connection: %s", problem)
                raise Refused(problem)
            from chainlit.socket import _get_token

            token = _get_token(environ)
            if not token:
                return await original(sid, environ, auth)  # Chainlit refuses it (login required)
            # Only the token's user is needed here: Chainlit's own handler authenticates it
            # (and reads the user record) right after.
            try:
                user = decode_jwt(token)
            except jwt.InvalidTokenError:
                raise Refused("authentication failed") from None
            refusal = await guards.sessions.refusal(token, user.identifier)
            if refusal:
                raise Refused(refusal)
            if not sockets.open(sid, user.identifier):
                log.warning("refused a socket of %s: %d open already", user.identifier, sockets.cap)
                raise Refused(f"Too many open connections: at most {sockets.cap} per user. Close another tab and reload.")
            try:
                accepted = await original(sid, environ, auth)
            except BaseException:
                sockets.close(sid)
                raise
            if accepted is False:  # refused: no disconnect event will come for it
                sockets.close(sid)
            session = WebsocketSession.get(sid)
            if session is not None:
                # A reconnecting tab gets its earlier session back, which keeps the token it was
                # first opened with: the token checked from now on is this connection's.
                session.token = token
            return accepted

        return connect

    def guard_disconnect(original: Handler) -> Handler:
        async def disconnect(sid: str, reason: Any = None) -> Any:
            sockets.close(sid)
            return await original(sid)  # Chainlit's takes the socket id only

        return disconnect

    def guard_session(original: Handler) -> Handler:
        async def checked(sid: str, *args: Any) -> Any:
            session = WebsocketSession.get(sid)
            if session is not None and await guards.session_over(session):
                return None
            return await original(sid, *args)

        return checked

    def guard_message(original: Handler, new: bool = True) -> Handler:
        """`new`: a client_message (its bubble is on the page only); else an edit of a sent one."""

        async def on_message(sid: str, payload: Any) -> Any:
            problem = check_message(payload, settings.max_message_chars)
            session = WebsocketSession.get(sid)
            if problem is None and session is not None and session.user is not None:
                retry = await guards.messages.hit(session.user.identifier)
                if retry is not None:
                    problem = f"Too many messages: try again in {retry} s."
            if problem:
                log.warning("refused a message from socket %s: %s", sid, problem)
                await sio.emit("toast", {"message": problem, "type": "error"}, to=sid)
                if new:
                    await not_sent(sid, payload)
                await sio.emit("task_end", {}, to=sid)
                return None
            return await original(sid, payload)

        return on_message

    async def not_sent(sid: str, payload: Any) -> None:
        """The page shows a message as sent before the server has it: a refused one must not stay
        so. Its bubble goes, and its text goes back to the composer (bot/ui/public/loop.js gets
        it as a window message; Chainlit posts those to the page's window)."""
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, dict) or not keys.valid_id(message.get("id")):
            return
        await sio.emit("delete_message", {"id": message["id"]}, to=sid)
        if isinstance(message.get("output"), str):
            await sio.emit("window_message", {"loop": "not_sent", "text": message["output"]}, to=sid)

    _wrap(sio, "client_message", guard_message)
    _wrap(sio, "edit_message", lambda original: guard_message(original, new=False))
    for event in [e for e in sio.handlers["/"] if e not in UNCHECKED_EVENTS]:
        _wrap(sio, event, guard_session)  # outermost: an ended session is refused before anything
    _wrap(sio, "connect", guard_connect)
    _wrap(sio, "disconnect", guard_disconnect)


def openapi_for_users(app: FastAPI, current_user: Callable[..., Awaitable[Any]], admins: frozenset[str]) -> Callable[..., Awaitable[JSONResponse]]:
    """The API schema, for logged-in users only (it maps every route); the console's routes in it
    only for operators (ADMIN_USERS), who are the only ones they serve."""

    async def openapi(user: Any = Depends(current_user)) -> JSONResponse:
        if user is None:
            raise HTTPException(status_code=401, detail="Log in to read the API schema.")
        schema = app.openapi()
        if user.identifier in admins:
            return JSONResponse(schema)
        paths = {p: ops for p, ops in schema.get("paths", {}).items() if p != CONSOLE and not p.startswith(CONSOLE + "/")}
        return JSONResponse({**schema, "paths": paths})

    return openapi

"""The edge of the chat app: what a browser sends is checked here before Chainlit, a Redis key or a
file sees it. docs/security.md describes the model; tests/test_security.py attacks it.

- Origins: a state-changing HTTP request from another origin is refused (403) and socket.io
  refuses connections from another origin; the app's own origin and ALLOWED_ORIGINS pass.
- Ids and names: socket.io handshakes and messages with ids that are not ids are refused;
  `feedback.keys` refuses them again when a key is built (answered 400 over HTTP).
- Sessions: a login token is refused after logout (revoked in Redis until it expires) and once
  its user is no longer in AUTH_USERS; tokens live SESSION_TTL_S.
- Limits: messages and ratings per user, login attempts per client address (429, Retry-After).
- Switched-off or internal routes answer 404: sharing, the API docs; an action for an unknown
  session is a 404, not a crash.
"""

from __future__ import annotations

import hashlib
import logging
import time
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
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from feedback import keys
from feedback.limiter import Limiter
from feedback.settings import Settings
from feedback.store import OUTAGE

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATHS = frozenset({"/login", "/auth/header"})
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


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
        return "This session has ended: log in again." if revoked else None


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


class LoginLimit:
    """ASGI middleware: at most N login attempts per minute from one client address."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in LOGIN_PATHS:
            client = (scope.get("client") or ("unknown", 0))[0]
            retry = await self.limiter.hit(client)
            if retry is not None:
                await too_many(retry, "Too many login attempts")(scope, receive, send)
                return
        await self.app(scope, receive, send)


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


def install(app: FastAPI, sio: AsyncServer, redis: Redis, settings: Settings, users: dict[str, str] | None) -> Guards:
    """Guard the HTTP app and the socket.io server; call once, before the app serves."""
    guards = Guards(Sessions(redis, users), Limiter(redis, "messages", settings.messages_per_minute))
    chainlit_config.project.user_session_timeout = settings.session_ttl_s
    current_user = _guard_http(app, guards.sessions, Limiter(redis, "logins", settings.logins_per_minute), settings.origins)
    app.router.routes[0:0] = _front_routes(app, current_user)
    _guard_socket(sio, guards, settings)
    return guards


def _guard_http(app: FastAPI, sessions: Sessions, logins: Limiter, origins: frozenset[str]) -> Callable[..., Awaitable[Any]]:
    """Origin and login-rate middleware, 400 for ids that may not reach a key, and the session
    check on every route that asks for the current user. Returns that checked dependency."""
    # Chainlit's CORS middleware reads this list when the app first serves: no origin gets
    # credentialed cross-origin reads unless configured.
    chainlit_config.project.allow_origins[:] = sorted(origins)
    app.add_middleware(LoginLimit, limiter=logins)
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


async def _call_action(request: Request, user: Any) -> Any:
    """Chainlit's /project/action, after checking what it takes unchecked (500s before)."""
    from chainlit.action import Action
    from chainlit.server import call_action as chainlit_call_action
    from chainlit.types import CallActionRequest

    try:
        payload = CallActionRequest.model_validate(await request.json())
        Action(**payload.action)  # what Chainlit builds from it, unchecked
    except (ValueError, TypeError):
        raise HTTPException(status_code=400, detail="Malformed action.") from None
    if not keys.valid_id(payload.sessionId) or WebsocketSession.get_by_id(payload.sessionId) is None:
        raise HTTPException(status_code=404, detail="No such session.")
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


def _front_routes(app: FastAPI, current_user: Callable[..., Awaitable[Any]]) -> list[APIRoute]:
    """Routes put in front of Chainlit's (the first match wins): the schema for logged-in users,
    404 for what is switched off or unused, checked versions of two that failed on bad input."""
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in DOC_PATHS]

    async def call_action(request: Request, user: Any = Depends(current_user)) -> Any:
        return await _call_action(request, user)

    front = [
        APIRoute("/openapi.json", openapi_for_users(app, current_user), methods=["GET"], include_in_schema=False, dependency_overrides_provider=app),
        APIRoute("/project/action", call_action, methods=["POST"], include_in_schema=False, dependency_overrides_provider=app),
        APIRoute("/set-session-cookie", _session_cookie, methods=["POST"], include_in_schema=False),
        # Chainlit features this app does not use: their routes fail (500) on sessions they
        # don't know rather than refusing.
        APIRoute("/project/element", _not_found, methods=["PUT", "DELETE"], include_in_schema=False),
    ]
    if not chainlit_config.features.allow_thread_sharing:
        front += [
            APIRoute("/project/share/{thread_id}", _not_found, methods=["GET"], include_in_schema=False),
            APIRoute("/project/thread/share", _not_found, methods=["PUT"], include_in_schema=False),
        ]
    if not chainlit_config.features.mcp.enabled:
        front.append(APIRoute("/mcp", _not_found, methods=["POST", "DELETE"], include_in_schema=False))
    return front


def _guard_socket(sio: AsyncServer, guards: Guards, settings: Settings) -> None:
    """Origin check, handshake and message checks, session check and message limit on socket.io."""
    def origin_ok(origin: str | None, environ: dict[str, Any]) -> bool:
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
        return origin is None or origin == own or origin in settings.origins

    sio.eio.cors_allowed_origins = origin_ok  # engine.io refuses other origins (400)

    def guard_connect(original: Handler) -> Handler:
        async def connect(sid: str, environ: dict[str, Any], auth: Any) -> Any:
            problem = check_handshake(auth)
            if problem:
                log.warning("refused socket connection: %s", problem)
                raise ConnectionRefusedError(problem)
            from chainlit.socket import _get_token

            token = _get_token(environ)
            if token:
                # Only the token's user is needed here: Chainlit's own handler authenticates it
                # (and reads the user record) right after.
                try:
                    user = decode_jwt(token)
                except jwt.InvalidTokenError:
                    raise ConnectionRefusedError("authentication failed") from None
                refusal = await guards.sessions.refusal(token, user.identifier)
                if refusal:
                    raise ConnectionRefusedError(refusal)
            return await original(sid, environ, auth)

        return connect

    def guard_message(original: Handler) -> Handler:
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
                await sio.emit("task_end", {}, to=sid)
                return None
            return await original(sid, payload)

        return on_message

    _wrap(sio, "connect", guard_connect)
    _wrap(sio, "client_message", guard_message)
    _wrap(sio, "edit_message", guard_message)


def openapi_for_users(app: FastAPI, current_user: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[JSONResponse]]:
    """The API schema, for logged-in users only (it maps every route)."""

    async def openapi(user: Any = Depends(current_user)) -> JSONResponse:
        if user is None:
            raise HTTPException(status_code=401, detail="Log in to read the API schema.")
        return JSONResponse(app.openapi())

    return openapi

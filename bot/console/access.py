"""Who may use the console, and the proof that a form was sent from it.

- A request without a login token is sent to the login page (303 to /login); a token the edge
  refuses (logged out, user removed, expired) likewise.
- A logged-in user who is not in ADMIN_USERS gets 403 on every console route, before any input is
  read or anything is written.
- Every POST carries a CSRF token in a hidden field: an HMAC of the user's login token with a
  server secret, so it is different per session, needs no server-side state, and cannot be made
  by another site (it never sees the token). A POST without it, or with another session's, is 403.
  bot/edge.py has already refused a POST from another origin before it gets here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chainlit.auth import get_current_user, get_token_from_cookies
from fastapi import FastAPI, HTTPException, Request

from feedback.settings import Settings

CSRF_FIELD = "csrf"
LOGIN = "/login"
MAX_FORM_BYTES = 256 * 1024
FORM_LIMITS = {"max_files": 0, "max_fields": 2000, "max_part_size": 64 * 1024}


@dataclass(frozen=True)
class Admin:
    """A user allowed into the console, with what their forms must carry."""

    name: str
    csrf: str


class Refused(Exception):
    """Ends a console request: a status and a message, a redirect (`location`), and the operator
    when known (their error page keeps the console's navigation)."""

    def __init__(self, status: int, message: str, location: str | None = None, admin: Admin | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.location = location
        self.admin = admin


def _secret(settings: Settings) -> bytes:
    """The CSRF key: derived from the login tokens' secret (the same on every app process), else
    a random one for this process (forms then work on the process that rendered them)."""
    base = settings.chainlit_auth_secret.get_secret_value() if settings.chainlit_auth_secret else os.environ.get("CHAINLIT_AUTH_SECRET", "")
    if not base:
        return secrets.token_bytes(32)
    return hmac.new(base.encode(), b"bot.console csrf v1", hashlib.sha256).digest()


def _token(request: Request) -> str | None:
    token = get_token_from_cookies(dict(request.cookies))
    if token:
        return str(token)
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


class Gate:
    """Resolves the console user of a request (or refuses it) and checks forms."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        self.admins = settings.admins
        self.key = _secret(settings)
        app.state.console_gate = self  # what the route dependencies below use

    def csrf_for(self, token: str) -> str:
        return hmac.new(self.key, token.encode(), hashlib.sha256).hexdigest()

    async def _user(self, token: str) -> Any:
        # The edge's session check (revoked tokens, removed users) when installed, else Chainlit's.
        check: Callable[[str], Awaitable[Any]] = self.app.dependency_overrides.get(get_current_user, get_current_user)
        try:
            return await check(token)
        except HTTPException as exc:
            if exc.status_code == 401:
                return None
            raise

    async def admin(self, request: Request) -> Admin:
        """The operator making this request; Refused otherwise (login redirect, or 403). A
        FastAPI dependency of every console route: it runs before any parameter is validated."""
        token = _token(request)
        user = await self._user(token) if token else None
        if user is None:
            raise Refused(401, "Log in to use the console.", location=LOGIN)
        name = str(user.identifier)
        if name not in self.admins:
            raise Refused(403, f"{name} is not an operator: the console is for the users in ADMIN_USERS.")
        assert token is not None
        who = Admin(name, self.csrf_for(token))
        request.state.console_admin = who  # for a 400 on a parameter: the error page keeps the navigation
        return who

    async def is_operator(self, request: Request) -> bool:
        """Whether the logged-in user of this request may open the console (the chat's user menu
        offers the link then); Refused (401) without a login, like any console route."""
        token = _token(request)
        user = await self._user(token) if token else None
        if user is None:
            raise Refused(401, "Log in first.")
        return str(user.identifier) in self.admins

    async def admin_form(self, request: Request) -> Admin:
        """The operator of a POST whose form carries their CSRF token; Refused otherwise. The form
        was read by the route (FORM_LIMITS, at most MAX_FORM_BYTES): this reads it again from the
        request's cache, before any field is validated."""
        who = await self.admin(request)
        form = await request.form()
        sent = form.get(CSRF_FIELD)
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), who.csrf.encode()):
            raise Refused(403, "This form is missing its security token (or it is from another session): reload the page and try again.")
        return who


async def operator(request: Request) -> Admin:
    """Dependency of every console GET: the operator (Gate.admin)."""
    gate: Gate = request.app.state.console_gate
    return await gate.admin(request)


async def operator_form(request: Request) -> Admin:
    """Dependency of every console POST: the operator whose form carries their CSRF token."""
    gate: Gate = request.app.state.console_gate
    return await gate.admin_form(request)

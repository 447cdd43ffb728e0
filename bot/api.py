"""HTTP routes for ratings, replacing Chainlit's PUT/DELETE /feedback.

Chainlit's own routes pass any feedback to the data layer without checking who sends it. These
take the same requests the UI sends (plus optional `reasons`), validate them strictly, and let the
rating script check that the answer is the caller's: a forged or foreign id changes nothing.

Each request counts against the user's rating limit before its body is read (429 past it). A
rating is answered 200 `"stored": "redis"` once saved, or 202 `"stored": "queued"` while Redis is
down: kept in the spool, applied when Redis is back, unless the rating script refuses it then
(someone else's answer: `chatbot spool` lists it as refused). The UI takes any 2xx as done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from chainlit.auth import get_current_user
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError

from feedback import keys
from feedback import rating as ratings
from feedback.store import OUTAGE, Admission, Store, Stored

# The largest valid body: a comment of MAX_COMMENT_CHARS characters each escaped as JSON's longest
# form (a surrogate pair, 12 bytes), plus room for the ids and reasons.
MAX_BODY_BYTES = ratings.MAX_COMMENT_CHARS * 12 + 4096
_background: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly
STATUS: dict[ratings.Refusal, int] = {"not_found": 404, "forbidden": 403, "unauthenticated": 401, "limited": 429}
Id = Annotated[str, Field(pattern=f"^{keys.ID_PATTERN.pattern}$")]


class FeedbackBody(ratings.RatingInput):
    forId: Id
    threadId: Id
    id: str | None = None  # sent back by the UI on a second click; the answer id is what counts


class UpdateFeedback(BaseModel):
    feedback: FeedbackBody
    sessionId: str | None = Field(None, max_length=128)


class DeleteFeedback(BaseModel):
    feedbackId: Id


def refusal(exc: ratings.RatingError) -> HTTPException:
    """The HTTP answer to a refused rating (past the limit: 429 with Retry-After)."""
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, ratings.RatingLimited) else None
    return HTTPException(status_code=STATUS[exc.kind], detail=str(exc), headers=headers)


def answer(stored: Stored, **fields: Any) -> JSONResponse:
    """200 when the rating is saved; 202 "queued" when it waits in the spool for Redis (it may
    still be refused then: it was not checked)."""
    if stored == "redis":
        return JSONResponse({"success": True, **fields, "stored": "redis"})
    return JSONResponse({"success": True, **fields, "stored": "queued"}, status_code=202)


QUEUED: dict[int | str, dict[str, Any]] = {202: {"description": 'Redis is down: the rating is queued ("stored": "queued") and applied when it is back, unless refused then'}}


def _user_of(current: Any) -> str:
    if current is None:
        raise HTTPException(status_code=401, detail="Log in to rate answers.")
    return str(current.identifier)


_Body = TypeVar("_Body", bound=BaseModel)


async def _body(request: Request, model: type[_Body]) -> _Body:
    """The request body parsed as `model`, read with a size limit: a declared Content-Length over
    it is refused unread, and a chunked body is refused as soon as it passes the limit (FastAPI
    would read a body parameter whole before any check)."""
    too_big = HTTPException(status_code=413, detail=f"Request body over {MAX_BODY_BYTES} bytes.")
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise too_big
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise too_big
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(status_code=400, detail="The request body is not valid UTF-8.") from None
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


async def _thread_of(store: Store, user: str, exchange_id: str) -> str | None:
    """The thread of an answer, for an un-rate (the UI sends only the answer id). While Redis is
    down, or the answer is not replayed yet, it is found in the spool: the answer itself, else the
    caller's own rating of it (the rating script checks the thread again when applying)."""
    spooled = store.spooled_thread(exchange_id, user)
    if spooled:
        return spooled
    try:
        return await ratings.thread_of(store.redis, user, exchange_id)
    except OUTAGE:
        raise HTTPException(status_code=503, detail="Storage is unavailable right now; try again in a moment.") from None


# Called after a rating is stored: (session id, user, thread id, exchange id, rating).
OnRated = Callable[[str | None, str, str, str, ratings.RatingInput], Coroutine[Any, Any, None]]


def install(app: FastAPI, store: Store, on_rated: OnRated | None = None) -> None:
    """Put our routes in front of Chainlit's (the first matching route wins)."""

    async def admitted(user: str) -> Admission:
        # Counted first, before the body is read: a flood of malformed requests counts too.
        try:
            return await store.admit(user)
        except ratings.RatingLimited as exc:
            raise refusal(exc) from None

    async def put_feedback(request: Request, current: Annotated[Any, Depends(get_current_user)]) -> JSONResponse:
        user = _user_of(current)
        admission = await admitted(user)
        body = await _body(request, UpdateFeedback)
        fb = body.feedback
        try:
            stored = await store.rate(user=user, thread_id=fb.threadId, exchange_id=fb.forId, rating=fb, admission=admission)
        except ratings.RatingError as exc:
            raise refusal(exc) from None
        if on_rated is not None:
            # In the background: the click is acknowledged as soon as the rating is stored.
            task = asyncio.create_task(on_rated(body.sessionId, user, fb.threadId, fb.forId, fb))
            _background.add(task)
            task.add_done_callback(_background.discard)
        return answer(stored, feedbackId=fb.forId)

    async def delete_feedback(request: Request, current: Annotated[Any, Depends(get_current_user)]) -> JSONResponse:
        user = _user_of(current)
        admission = await admitted(user)
        body = await _body(request, DeleteFeedback)
        thread_id = await _thread_of(store, user, body.feedbackId)
        if thread_id is None:
            raise HTTPException(status_code=404, detail="No answer with this id.")
        try:
            stored = await store.rate(user=user, thread_id=thread_id, exchange_id=body.feedbackId, rating=None, admission=admission)
        except ratings.RatingError as exc:
            raise refusal(exc) from None
        return answer(stored)

    routes = [
        # dependency_overrides_provider: the app's overrides (bot/edge.py's session checks) apply.
        APIRoute("/feedback", put_feedback, methods=["PUT"], responses=QUEUED, dependency_overrides_provider=app),
        APIRoute("/feedback", delete_feedback, methods=["DELETE"], responses=QUEUED, dependency_overrides_provider=app),
    ]
    app.router.routes[0:0] = routes

"""The Chainlit app: a prompt-engineered assistant whose answers are streamed, stored and rated.

Run it with `chatbot up` (which starts Redis and a model server when none is configured), or
directly with `chainlit run bot/app.py` when REDIS_URL and LLM_BASE_URL point at running servers.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Collection
from typing import Any, Literal, cast
from weakref import WeakValueDictionary

import chainlit as cl
from chainlit.auth import get_token_from_cookies
from chainlit.context import init_ws_context
from chainlit.server import app as http_app
from chainlit.server import sio
from chainlit.session import WebsocketSession
from chainlit.step import StepDict
from fastapi import Request, Response
from langchain_core.messages import UsageMetadata, convert_to_openai_messages
from starlette.datastructures import Headers

from bot import answer_info as answer_infos
from bot import api, branding, console, edge
from bot import model as chat
from bot.datalayer import RedisDataLayer
from bot.history import Turn, as_messages, drop_from, refs
from bot.pace import Pace
from bot.prompt import prefix, render
from feedback import exchange as exchanges
from feedback import experiment as experiments
from feedback import keys, registry
from feedback import prompt as prompts
from feedback import rating as ratings
from feedback.connection import connect
from feedback.limiter import Limiter
from feedback.replication import ReplicaWait
from feedback.settings import SettingsError, load_settings, unknown_variables
from feedback.spool import Spool
from feedback.store import OUTAGE, Store, Stored

log = logging.getLogger("bot")

try:
    settings = load_settings()
    # The shipped version PROMPT_VERSION names (else the newest), checked before serving anything;
    # also what is served while Redis cannot say which version is (prompts.publish_shipped).
    shipped = prompts.load_spec(settings.prompts_dir, settings.prompt_id, settings.prompt_version)
except (SettingsError, prompts.PromptSpecError) as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)

for warning in unknown_variables():  # a misspelled setting would otherwise be ignored silently
    log.warning("%s", warning)

if settings.chainlit_auth_secret:
    # Chainlit reads its JWT secret from the process environment only.
    os.environ.setdefault("CHAINLIT_AUTH_SECRET", settings.chainlit_auth_secret.get_secret_value())

redis = connect(settings.effective_redis_url, cluster=settings.redis_cluster)
# Every rating write passes store.rate, which counts it against RATINGS_PER_MINUTE: each door (the
# HTTP routes, the reason toggles, the data layer) is limited, and a new one cannot forget to be.
store = Store(
    redis, Spool(settings.spool_path), settings.unrated_exchange_ttl_s, ReplicaWait.from_settings(settings),
    rating_limit=Limiter(redis, "ratings", settings.ratings_per_minute),
)  # fmt: skip
USERS = settings.users()
SPOOLED = "⚠️ Storage is unavailable right now: this answer is kept on the server and will be saved when it is back."


STOPPED = "\n\n_Stopped: this partial answer is not kept, so it can't be rated or regenerated._"
CUT_OFF = "\n\n_Cut off by the error below: this partial answer is not kept._"
Toast = Literal["info", "success", "warning", "error"]


async def toast(message: str, kind: Toast = "error") -> None:
    """A short notice in the corner of the page: for refusals of a click, nothing to keep."""
    await cl.context.emitter.send_toast(message, kind)


async def notice(content: str, *, error: bool = False) -> None:
    """A message from the app that is not an answer (an error, a note). Sent as a system message:
    Chainlit puts the thumbs on the last *assistant* message of a run, and a thumb on something
    that is not a stored answer could only fail."""
    message = cl.ErrorMessage(content=content) if error else cl.Message(content=content)
    message.type = "system_message"
    await message.send()


def answers() -> dict[str, str]:
    """The answers of this conversation on the page: exchange id -> message id. What the reason
    toggles may act on (another user's exchange id is not in it)."""
    shown: dict[str, str] | None = cl.user_session.get("answers")
    if shown is None:
        shown = {}
        cl.user_session.set("answers", shown)
    return shown


# --- reasons for a thumbs down ---------------------------------------------------------------------
# After a 👎 the answer gets one toggle per reason (✓ when picked); each click sends the full list
# with the rating. Chainlit's thumbs know value and comment only: the page is told the reasons too
# (show_rating), so the thumbs send them back with their next click instead of dropping them.

DOWN_REASONS = {reason.value: label for reason, label in ratings.DOWN_REASONS.items()}
REASON_TIP = "What was wrong? Pick all that apply; click again to unpick."
_reason_locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()


def reason_lock(exchange_id: str) -> asyncio.Lock:
    """One change at a time to an answer's reasons (two quick clicks must not lose one)."""
    lock = _reason_locks.get(exchange_id)
    if lock is None:
        lock = _reason_locks[exchange_id] = asyncio.Lock()
    return lock


def reason_buttons(exchange_id: str, picked: Collection[str]) -> list[cl.Action]:
    """The toggles of one answer; ids fixed per (reason, answer), so a page can drop old ones."""
    payloads = {key: {"exchange_id": exchange_id, "reason": key} for key in DOWN_REASONS}
    return [
        cl.Action(name="reason", id=f"reason-{key}-{exchange_id}", payload=payloads[key], label=f"✓ {label}" if key in picked else label, tooltip=REASON_TIP)
        for key, label in DOWN_REASONS.items()
    ]


async def show_reasons(exchange_id: str, message_id: str, picked: Collection[str] | None) -> None:
    """The reason toggles on the answer, ✓ on `picked`; none when `picked` is None (not rated down)."""
    for old in reason_buttons(exchange_id, ()):
        await old.remove()  # by id; the page appends an action sent twice
    for action in reason_buttons(exchange_id, picked) if picked is not None else []:
        await action.send(for_id=message_id)


async def show_rating(exchange_id: str, value: int, comment: str | None, reasons: list[str]) -> None:
    """The rating as the page's thumbs hold it (on the run step): what they send back next time."""
    feedback = {"id": exchange_id, "forId": exchange_id, "value": value, "comment": comment, "reasons": reasons}
    await cl.context.emitter.update_step(cast(StepDict, {"id": exchange_id, "feedback": feedback}))


async def ask_reasons(session_id: str | None, user: str, thread_id: str, exchange_id: str, rating: ratings.RatingInput) -> None:
    """After a thumb from the page, in the rater's own session: the reason toggles on an answer
    rated down (✓ on its reasons), none on one rated up."""
    session = WebsocketSession.get_by_id(session_id) if session_id else None
    if session is None or session.user is None or session.user.identifier != user or session.thread_id != thread_id:
        return
    init_ws_context(session)
    message_id = answers().get(exchange_id)
    if message_id is None:
        return
    async with reason_lock(exchange_id):
        if rating.value == 0:
            await show_reasons(exchange_id, message_id, await reasons_now(thread_id, exchange_id, [r.value for r in rating.reasons]))
            return
        await show_reasons(exchange_id, message_id, None)
        kept = [r for r in rating.reasons if r.value not in DOWN_REASONS]
        if len(kept) < len(rating.reasons):
            # The thumbs sent back the reasons of the 👎 this 👍 replaces: they don't go with it.
            await drop_down_reasons(user, thread_id, exchange_id, rating, kept)


async def reasons_now(thread_id: str, exchange_id: str, sent: list[str]) -> list[str] | None:
    """The reasons of the answer's 👎 as stored now (a later click wins over the one that called);
    None when it is no longer rated down. What was `sent` while Redis can't tell."""
    if store.spool.has_pending():
        return sent
    try:
        current = await ratings.get(redis, thread_id, exchange_id)
    except OUTAGE:
        return sent
    return current["reasons"] if current is not None and current["value"] == 0 else None


async def drop_down_reasons(user: str, thread_id: str, exchange_id: str, sent: ratings.RatingInput, kept: list[ratings.Reason]) -> None:
    """A second write, so it counts against the rating limit like any other (store.rate)."""
    try:
        current = await ratings.get(redis, thread_id, exchange_id)
        if store.spool.has_pending() or current is None or (current["value"], current["reasons"]) != (1, [r.value for r in sent.reasons]):
            return  # changed since (or not readable now): leave it to the next click
        fixed = ratings.RatingInput(value=1, comment=sent.comment, reasons=kept)
        await store.rate(user=user, thread_id=thread_id, exchange_id=exchange_id, rating=fixed)
    except ratings.RatingLimited as exc:
        await toast(f"{exc} Your 👍 is saved, but still with the reasons of the 👎 it replaced.", "warning")
        return
    except (ratings.RatingError, *OUTAGE) as exc:
        log.warning("reasons of a 👎 left on the 👍 of %s: %s", exchange_id, exc)
        return
    await show_rating(exchange_id, 1, sent.comment, [r.value for r in kept])


branding.install(http_app)
guards = edge.install(http_app, sio, redis, settings, USERS if settings.auth_mode == "password" else None)
api.install(http_app, store, on_rated=ask_reasons)
console.install(http_app, settings)


@cl.on_logout
async def logout(request: Request, response: Response) -> dict[str, bool]:
    """End the session server-side too: the token is refused from now on, wherever it is kept."""
    token = get_token_from_cookies(dict(request.cookies)) or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if token:
        try:
            await guards.sessions.revoke(token)
        except OUTAGE:
            log.warning("logout while Redis is unreachable: the token stays valid until it expires")
    return {"success": True}


@cl.action_callback("reason")
async def toggle_reason(action: cl.Action) -> None:
    """Pick or unpick a reason of the user's 👎; the rating is stored with the full list."""
    user = cl.user_session.get("user")
    exchange_id = str(action.payload.get("exchange_id", ""))
    reason = str(action.payload.get("reason", ""))
    message_id = answers().get(exchange_id)
    if user is None or message_id is None or reason not in DOWN_REASONS:
        await toast("This answer is not in this conversation: its reasons can't be changed here.")
        return
    try:
        admission = await store.admit(user.identifier)  # a toggle is a rating: counted like a thumb
    except ratings.RatingLimited as exc:
        await toast(f"{exc} The reason was not saved.")
        return
    if store.spool.has_pending():
        # The rating may still be in the spool: changing what Redis holds could undo a click.
        await toast("Storage is catching up right now: please pick the reason again in a moment.")
        return
    async with reason_lock(exchange_id):
        try:
            current = await ratings.get(redis, cl.context.session.thread_id, exchange_id)
        except OUTAGE:
            await toast("Storage is unavailable right now: the reason was not saved.")
            return
        if current is None or current["value"] != 0:
            await show_reasons(exchange_id, message_id, None)
            await toast("Reasons go with a thumbs down: rate the answer 👎 first.", "info")
            return
        had = current["reasons"]
        picked = [r for r in had if r != reason] if reason in had else [*had, reason]
        rating = ratings.RatingInput(value=0, comment=current["comment"] or None, reasons=[ratings.Reason(r) for r in picked])
        try:
            await store.rate(user=user.identifier, thread_id=cl.context.session.thread_id, exchange_id=exchange_id, rating=rating, admission=admission)
        except ratings.RatingError as exc:
            await toast(str(exc))
            return
        await show_reasons(exchange_id, message_id, picked)
        await show_rating(exchange_id, 0, rating.comment, picked)


@cl.data_layer
def data_layer() -> RedisDataLayer:
    return RedisDataLayer(redis, store)


@cl.on_app_startup
async def on_startup() -> None:
    """Chainlit keeps one startup hook: every startup step is called from here."""
    # Keep a reference: the loop holds tasks weakly.
    http_app.state.spool_replay = asyncio.create_task(store.replay_forever())
    await publish_prompts()


async def publish_prompts() -> None:
    """Publish the shipped prompt versions and choose the served one (PROMPT_VERSION, else keep
    what `chatbot prompt serve` chose, else the newest shipped)."""
    try:
        version = await prompts.publish_shipped(redis, settings.prompts_dir, settings.prompt_id, settings.prompt_version)
    except OUTAGE as exc:
        log.warning("prompt versions not published (Redis unreachable: %s); serving the shipped %s", exc, shipped.ref)
    except prompts.PromptSpecError as exc:
        log.error("%s", exc)
    else:
        log.info("prompt %s@%s served to new conversations", settings.prompt_id, version)


def new_session() -> str:
    """Goes into the login token: two logins in the same second get different tokens, so logging
    one out (revoking it) leaves the other alone."""
    return secrets.token_urlsafe(12)


if settings.auth_mode == "password":

    @cl.password_auth_callback
    async def password_login(username: str, password: str) -> cl.User | None:
        expected = USERS.get(username)
        if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
            return cl.User(identifier=username, metadata={"provider": "password", "session": new_session()})
        return None

else:

    PROXY_SECRET = settings.auth_proxy_secret.get_secret_value().encode() if settings.auth_proxy_secret else b""

    @cl.header_auth_callback
    async def header_login(headers: Headers) -> cl.User | None:
        # Behind a proxy that authenticates users, sets the user header and proves itself with the
        # shared secret (stripping both from what clients send): reaching this port is not enough.
        proof = headers.get(settings.auth_proxy_header, "").encode("latin-1")  # the bytes sent
        if not PROXY_SECRET or not hmac.compare_digest(proof, PROXY_SECRET):
            log.warning("header login refused: the proxy secret is missing or wrong")
            return None
        name = edge.header_text(headers.get(settings.auth_header))  # UTF-8, any script
        if not name or not keys.valid_user(name):
            log.warning("header login refused: invalid user name %r", (headers.get(settings.auth_header) or "")[:80])
            return None
        return cl.User(identifier=name, metadata={"provider": "header", "session": new_session()})


def turns() -> list[Turn]:
    return cl.user_session.get("turns") or []


async def model_in_service() -> tuple[str, str]:
    """(model name, registry version) in service; the configured model when none was promoted or
    Redis can't tell."""
    try:
        name, version = await registry.in_service(redis)
    except OUTAGE as exc:
        log.warning("active model lookup failed, using %s: %s", settings.effective_llm_model, exc)
        return settings.effective_llm_model, registry.BASE
    return name or settings.effective_llm_model, version


def regenerate_button(exchange_id: str) -> cl.Action:
    return cl.Action(name="regenerate", payload={"exchange_id": exchange_id}, label="Regenerate", icon="refresh-cw", tooltip="Answer this question again")


async def offer_regenerate(exchange_id: str, message_id: str) -> None:
    """Regenerate on this answer, taken off the answer that had it: only the latest answer can be
    regenerated, so only the latest shows the button."""
    before: cl.Action | None = cl.user_session.get("regenerate")
    if before is not None:
        await before.remove()
    button = regenerate_button(exchange_id)
    await button.send(for_id=message_id)
    cl.user_session.set("regenerate", button)


async def base_models(versions: Collection[str]) -> dict[str, str]:
    """The base model of each registered version among `versions` (what an answer's line names);
    none while Redis can't tell (the line then names the version alone)."""
    try:
        return await registry.base_models(redis, versions)
    except OUTAGE as exc:
        log.warning("base models of %s not read (Redis unreachable: %s)", sorted(versions), exc)
        return {}


async def answer_info(record: exchanges.Exchange, earlier: list[dict[str, Any]]) -> cl.CustomElement:
    """Shown under an answer (bot/answer_info.py): which model and prompt version wrote it, and the
    earlier answers to the same question, collapsed."""
    props = answer_infos.props(record, earlier, await base_models([record.model_version]))
    return cl.CustomElement(name=answer_infos.NAME, props=props, display="inline")


async def earlier_answers(old: exchanges.Exchange) -> list[dict[str, Any]]:
    """The answers given so far to exactly this prompt (the one in view included), oldest first,
    each with its rating: what a regenerated answer shows as its earlier answers."""
    try:
        stored = await exchanges.for_thread(redis, old.thread_id)
        same = [*answer_infos.same_prompt(old, stored), old]
        async with redis.pipeline(transaction=False) as pipe:
            for e in same:
                pipe.hget(keys.rating(old.thread_id, e.id), "value")
            values = await pipe.execute()
    except OUTAGE as exc:
        log.warning("earlier answers of %s not shown (Redis unreachable: %s)", old.id, exc)
        return []
    bases = await base_models({e.model_version for e in same})
    return answer_infos.earlier_props(same, {e.id: None if v is None else int(v) for e, v in zip(same, values, strict=True)}, bases)


_finishing: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly
FINISH_WAIT_S = 5.0  # the longest a stream's end waits for the turn (a turn is a task of its own)


def finish_after_turn(rest: AsyncIterator[Any]) -> None:
    """Consume the rest of a model stream whose answer is complete once the turn is over: the
    end of the HTTP response, and LangChain merging the chunks and closing its run (0.6-0.8 ms of
    CPU in bench.ttft, that would otherwise come before Chainlit reports the turn done)."""
    turn = asyncio.current_task()  # Chainlit runs each message, edit or action in a task of its own

    async def drain() -> None:
        if turn is not None:
            await asyncio.wait([turn], timeout=FINISH_WAIT_S)
        try:
            async for _ in rest:
                pass
        except Exception as exc:  # the answer is complete and stored: only worth a line in the log
            log.warning("model stream failed after its answer was complete: %r", exc)

    task = asyncio.create_task(drain())
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)


_streaming: dict[str, asyncio.Task[Any]] = {}  # session id -> its turn, while an answer streams
RECONNECT_GRACE_S = 10.0  # a page whose socket dropped is back within seconds (socket.io reconnects)


@cl.on_chat_end
async def left() -> None:
    """The page is gone (closed, reloaded, or its socket dropped): an answer streaming to it is
    stopped unless the page is back within RECONNECT_GRACE_S, so that an answer nobody reads
    doesn't hold the model server (on a CPU it writes one answer at a time) or run up a bill."""
    session = cl.context.session
    turn, socket_id = _streaming.get(session.id), getattr(session, "socket_id", None)
    if turn is None:
        return

    async def unless_back() -> None:
        await asyncio.sleep(RECONNECT_GRACE_S)
        if getattr(session, "socket_id", None) == socket_id and _streaming.get(session.id) is turn:
            log.info("the page of session %s left during an answer: the answer is stopped", session.id)
            turn.cancel()  # as the stop button does: the request is closed

    task = asyncio.create_task(unless_back())
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)


LIMITS = chat.Limits(settings.llm_first_token_timeout_s, settings.llm_idle_timeout_s, settings.llm_timeout_s)
PACE = Pace()  # this process's measure of the model's speed, for the wait note
WAIT_NOTE_S = 1.0  # a shorter wait needs no words: the note would only flicker
_writing: set[WaitNote] = set()  # the answers of this process not complete yet


class WaitNote:
    """While an answer has no token yet, past WAIT_NOTE_S: a note saying why the user waits (the
    model is starting, or how long answers take here), taken away at the first token. Sent to the
    page only, never stored: a thread read back later doesn't show it."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.shown: StepDict | None = None
        _writing.add(self)
        self.timer: asyncio.Task[None] | None = asyncio.create_task(self._show_later())

    async def _show_later(self) -> None:
        await asyncio.sleep(WAIT_NOTE_S)
        note = cl.Message(content=PACE.note(self.model, len(_writing) - 1), author="Status")
        note.type = "system_message"
        note.metadata = {"wait_note": True}
        self.shown = note.to_dict()
        await cl.context.emitter.send_step(self.shown)

    async def close(self) -> None:
        """Stop the timer, take the note away if it is on the page; idempotent."""
        _writing.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            await asyncio.gather(self.timer, return_exceptions=True)  # its send, if begun, is done
            self.timer = None
        if self.shown is not None:
            shown, self.shown = self.shown, None
            await cl.context.emitter.delete_step(shown)


async def keep_partial(reply: cl.Message | None, note: str) -> None:
    """What was streamed before a stop or a failure stays in view, as a system message: it is not
    a stored answer, so it gets no thumbs (Chainlit puts them on a run's last assistant message)."""
    if reply is None or not reply.streaming:
        return  # nothing was streamed: no message on the page
    if not reply.content.strip():
        await reply.remove()
        return
    reply.type = "system_message"
    reply.content += note
    reply.metadata = {"partial": True}
    await reply.send()


async def send_info(reply: cl.Message, info: cl.CustomElement) -> None:
    """The answer's info element, shown with it and not stored: a thread read back gets it from
    the stored answers (bot/answer_info.py, the data layer's get_thread).

    Sent as its dict, not with `Element.send`: that would first write the props to a file of the
    session (three thread-pool hops per answer) that nothing reads; the page renders a custom
    element from the props the event carries."""
    info.for_id = reply.id
    await cl.context.emitter.send_element(info.to_dict())


async def keep_exchange(record: exchanges.Exchange, reply: cl.Message) -> Stored:
    """Store the exchange, then offer Regenerate on it: the button must not come before the
    exchange it regenerates is stored."""
    stored = await store.save_exchange(record)
    answers()[record.id] = reply.id
    await offer_regenerate(record.id, reply.id)
    return stored


async def answer(
    run_id: str,
    prompt_message_id: str,
    prompt: list[dict[str, str]],
    stored_as: tuple[int, list[Turn]],
    prompt_ref: tuple[str, str],
    experiment: str | None,
    earlier: list[dict[str, Any]] | None = None,
) -> exchanges.Exchange | None:
    """Stream the model's answer to `prompt` into a new message and store the exchange; `earlier`:
    the answers it replaces (Regenerate), shown collapsed under it. `stored_as`: how many of the
    prompt's messages are its fixed part, and the earlier turns it may repeat (stored once).

    Returns None when the model failed (the user sees why) or the user pressed stop.
    """
    # Chainlit's Message() blocks its thread for a millisecond (a time.sleep in its constructor):
    # the answer's message is built in a worker thread (with this context: its thread and run)
    # while the model lookup and the request go on, not on the event loop before them.
    making_reply = asyncio.ensure_future(asyncio.to_thread(cl.Message, content=""))
    model_name, model_version = await model_in_service()
    llm = chat.for_settings(settings, model_name)
    reply: cl.Message | None = None  # from the first token on
    started = time.perf_counter()
    first_token_ms: float | None = None
    usage: UsageMetadata | None = None
    error: chat.ModelError | None = None
    extra: dict[str, Any] = {} if settings.llm_seed is None else {"seed": chat.sampling_seed(settings.llm_seed, prompt_message_id, len(earlier or []))}
    stream = chat.within(llm.astream(prompt, **extra), LIMITS, lambda chunk: bool(chunk.text))
    waiting = WaitNote(model_name)
    finished = False
    session_id, this = cl.context.session.id, asyncio.current_task()
    if this is not None:
        _streaming[session_id] = this

    def streamed() -> None:
        """Before any await once the stream is over: `left` cancels only while it streams."""
        if _streaming.get(session_id) is this:
            del _streaming[session_id]

    try:
        async for chunk in stream:
            if chunk.usage_metadata:  # the last chunk, when the server reports usage
                usage = chunk.usage_metadata
            if chunk.text:
                if reply is None:
                    first_token_ms = (time.perf_counter() - started) * 1000
                    await waiting.close()
                    reply = await making_reply
                await reply.stream_token(chunk.text)
            finished = finished or bool(chunk.response_metadata.get("finish_reason"))
            if finished and usage is not None:
                finish_after_turn(stream)  # the answer is complete: the rest is bookkeeping
                break
        if reply is None or not reply.content.strip():
            error = chat.EMPTY_ANSWER
    except asyncio.CancelledError:
        # The stop button: keep what was streamed so far and let Chainlit finish the cancel.
        streamed()
        await waiting.close()
        await keep_partial(reply, STOPPED)
        raise
    except chat.ModelError as exc:  # a limit on silence (bot/model.py's `within`)
        log.warning("model call stopped: %s", exc)
        error = exc
    except Exception as exc:  # openai raises many types; explain() maps the known ones
        log.warning("model call failed: %r", exc)
        error = chat.explain(exc)
    finally:
        streamed()
        await waiting.close()
    if error is not None or reply is None:
        await keep_partial(reply, CUT_OFF)
        await notice(str(error or chat.EMPTY_ANSWER), error=True)
        return None
    if first_token_ms is not None:
        PACE.record(model_name, first_token_ms / 1000, time.perf_counter() - started)

    user = cl.user_session.get("user")
    record = exchanges.Exchange(
        id=run_id,
        thread_id=cl.context.session.thread_id,
        user=user.identifier if user else "anonymous",
        message_id=reply.id,
        prompt_message_id=prompt_message_id,
        messages=[exchanges.PromptMessage(**m) for m in prompt],
        prefix_size=stored_as[0],
        turns=refs(stored_as[1]),
        completion=reply.content,
        prompt_id=prompt_ref[0],
        prompt_version=prompt_ref[1],
        experiment=experiment,
        model=model_name,
        model_version=model_version,
        first_token_ms=first_token_ms,
        input_tokens=usage["input_tokens"] if usage else None,
        output_tokens=usage["output_tokens"] if usage else None,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    reply.metadata = {"exchange_id": record.id, "prompt_version": "@".join(prompt_ref), "model": model_name, "model_version": model_version}
    await reply.send()
    # Chainlit reports the turn done when this handler returns: it waits for the two independent
    # writes together, not one after the other (the exchange then Regenerate, and the info element).
    stored, _ = await asyncio.gather(keep_exchange(record, reply), send_info(reply, await answer_info(record, earlier or [])))
    if stored == "spool":
        note = cl.Message(content=SPOOLED, author="Storage")
        note.parent_id = None  # outside the run: the thumbs stay on the answer (a run's last assistant message)
        await note.send()
    return record


@cl.on_chat_start
async def start() -> None:
    cl.user_session.set("turns", [])
    cl.user_session.set("prompt_version", None)  # chosen at the first message: the version served then
    cl.user_session.set("experiment", None)


@cl.set_chat_profiles
async def chat_profiles(user: cl.User | None, language: str | None = None) -> list[cl.ChatProfile]:
    """One profile, never offered as a choice (Chainlit shows the picker from two on): it puts the
    product's icon and welcome on the welcome screen of a new conversation."""
    return [cl.ChatProfile(name=branding.NAME, markdown_description=branding.WELCOME, icon=branding.ICON, default=True)]


@cl.set_starters
async def starters(user: cl.User | None, language: str | None = None) -> list[cl.Starter]:
    """The starter questions of the prompt version a new conversation gets now (the one served;
    in a prompt experiment each conversation draws its arm at its first message)."""
    try:
        spec = await spec_of(await prompts.served_version(redis, settings.prompt_id) or shipped.version)
    except OUTAGE:
        spec = shipped
    return [cl.Starter(label=s.label, message=s.message) for s in spec.starters]


async def conversation_spec() -> prompts.PromptSpec:
    """The prompt version of this conversation: kept once chosen (a resumed thread keeps the
    version of its answers); a new one gets the version served now. The shipped spec while Redis
    cannot say."""
    version = cl.user_session.get("prompt_version")
    try:
        if version is None:  # a new conversation: an experiment's arm, else the version served
            assigned = await experiments.assign(redis, settings.prompt_id, cl.context.session.thread_id)
            if assigned is not None:
                cl.user_session.set("experiment", assigned[0])
            version = assigned[1] if assigned else await prompts.served_version(redis, settings.prompt_id) or shipped.version
            cl.user_session.set("prompt_version", version)
        return await spec_of(version)
    except OUTAGE as exc:
        log.warning("prompt version lookup failed, using the shipped %s: %s", shipped.ref, exc)
        return shipped


_specs: dict[str, prompts.PromptSpec] = {shipped.version: shipped}


async def spec_of(version: str) -> prompts.PromptSpec:
    """A published version (immutable: cached for good once read)."""
    if version not in _specs:
        spec = await prompts.get(redis, settings.prompt_id, version)
        if spec is None:
            log.error("prompt %s@%s is not published: serving %s", settings.prompt_id, version, shipped.ref)
            return shipped
        _specs[version] = spec
    return _specs[version]


@cl.on_chat_resume
async def resume(thread: cl.types.ThreadDict) -> None:
    """Rebuild the history from the answers stored for this thread (hidden alternatives skipped)."""
    try:
        stored = await exchanges.for_thread(redis, thread["id"])
    except OUTAGE:
        stored = []
    shown = [e for e in stored if not e.deleted]
    own = [e for e in shown if e.prompt_id == settings.prompt_id]
    cl.user_session.set("prompt_version", own[-1].prompt_version if own else None)  # its arm, in an experiment
    cl.user_session.set("experiment", own[-1].experiment if own else None)
    cl.user_session.set("turns", [Turn(e.prompt_message_id, e.messages[-1].content, e.completion, e.id) for e in shown])
    on_page = {e.id: e.message_id for e in shown if e.message_id}
    cl.user_session.set("answers", on_page)
    # Chainlit doesn't store action buttons: Regenerate on the latest answer, the reason toggles on
    # the answers rated down.
    if shown and shown[-1].message_id:
        await offer_regenerate(shown[-1].id, shown[-1].message_id)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for exchange_id in on_page:
                pipe.hmget(keys.rating(thread["id"], exchange_id), "value", "reasons")
            rated = await pipe.execute()
    except OUTAGE:
        return
    for (exchange_id, message_id), (value, reasons) in zip(on_page.items(), rated, strict=True):
        if value == "0":
            await show_reasons(exchange_id, message_id, json.loads(reasons or "[]"))


@cl.on_message
async def on_message(message: cl.Message) -> None:
    if len(message.content) > settings.max_message_chars:
        await notice(f"Your message has {len(message.content)} characters; the limit is {settings.max_message_chars}.", error=True)
        return
    history = drop_from(turns(), message.id)
    spec = await conversation_spec()
    prompt = render(spec, as_messages(history), message.content, settings.history_max_tokens)
    run = cl.context.current_step
    stored_as = (len(prefix(spec)), history)
    record = await answer(run.id if run else uuid.uuid4().hex, message.id, convert_to_openai_messages(prompt), stored_as, (spec.id, spec.version), cl.user_session.get("experiment"))
    if record is not None:
        history.append(Turn(message.id, message.content, record.completion, record.id))
    cl.user_session.set("turns", history)


@cl.action_callback("regenerate")
async def regenerate(action: cl.Action) -> None:
    """Answer the same prompt again; the earlier answer is hidden but kept as an alternative."""
    history = turns()
    exchange_id = str(action.payload.get("exchange_id", ""))
    old = await exchanges.load(redis, cl.context.session.thread_id, exchange_id) if keys.valid_id(exchange_id) else None
    user = cl.user_session.get("user")
    if old is None or user is None or old.user != user.identifier or old.thread_id != cl.context.session.thread_id:
        await toast("This answer can't be regenerated here.")
        return
    if not history or history[-1].message_id != old.prompt_message_id:
        await toast("Only the latest answer can be regenerated.")
        return
    retry = await guards.messages.hit(user.identifier)
    if retry is not None:
        await toast(f"Too many messages: try again in {retry} s.")
        return
    earlier = await earlier_answers(old)
    async with cl.Step(name="regenerate", type="run", parent_id=old.prompt_message_id) as run:
        stored_as = (old.prefix_size, history[:-1])
        record = await answer(run.id, old.prompt_message_id, [m.model_dump() for m in old.messages], stored_as, (old.prompt_id, old.prompt_version), old.experiment, earlier)
    if record is not None:
        await cl.Message(content="", id=old.message_id).remove()  # soft delete: see the data layer
        answers().pop(old.id, None)
        history[-1] = Turn(old.prompt_message_id, history[-1].question, record.completion, record.id)
        cl.user_session.set("turns", history)

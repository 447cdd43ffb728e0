"""The Chainlit app: a prompt-engineered assistant whose answers are streamed, stored and rated.

Run it with `chatbot up` (which starts Redis and a model server when none is configured), or
directly with `chainlit run bot/app.py` when REDIS_URL and LLM_BASE_URL point at running servers.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import sys
import time
import uuid

import chainlit as cl
from chainlit.auth import get_token_from_cookies
from chainlit.context import init_ws_context
from chainlit.server import app as http_app
from chainlit.server import sio
from chainlit.session import WebsocketSession
from fastapi import Request, Response
from langchain_core.messages import UsageMetadata, convert_to_openai_messages
from starlette.datastructures import Headers

from bot import api, edge
from bot import model as chat
from bot.datalayer import RedisDataLayer
from bot.history import Turn, as_messages, drop_from
from bot.prompt import render
from feedback import exchange as exchanges
from feedback import experiment as experiments
from feedback import keys, registry
from feedback import prompt as prompts
from feedback import rating as ratings
from feedback.connection import connect
from feedback.limiter import Limiter
from feedback.settings import SettingsError, load_settings
from feedback.spool import Spool
from feedback.store import OUTAGE, Store

log = logging.getLogger("bot")

try:
    settings = load_settings()
    # The shipped version PROMPT_VERSION names (else the newest), checked before serving anything;
    # also what is served while Redis cannot say which version is (prompts.publish_shipped).
    shipped = prompts.load_spec(settings.prompts_dir, settings.prompt_id, settings.prompt_version)
except (SettingsError, prompts.PromptSpecError) as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)

if settings.chainlit_auth_secret:
    # Chainlit reads its JWT secret from the process environment only.
    os.environ.setdefault("CHAINLIT_AUTH_SECRET", settings.chainlit_auth_secret.get_secret_value())

redis = connect(settings.effective_redis_url)
store = Store(redis, Spool(settings.spool_path))
USERS = settings.users()
SPOOLED = "⚠️ Storage is unavailable right now: this answer is kept on the server and will be saved when it is back."


# Offered after a thumbs down given in the UI (which has no field for them).
DOWN_REASONS = {reason.value: label for reason, label in ratings.DOWN_REASONS.items()}


async def ask_reasons(session_id: str | None, user: str, thread_id: str, exchange_id: str, rating: ratings.RatingInput) -> None:
    """After a thumbs down without reasons, offer reason buttons in the rater's own session."""
    session = WebsocketSession.get_by_id(session_id) if session_id and rating.value == 0 and not rating.reasons else None
    if session is None or session.user is None or session.user.identifier != user or session.thread_id != thread_id:
        return
    init_ws_context(session)
    actions = [cl.Action(name="reason", payload={"exchange_id": exchange_id, "reason": k}, label=v) for k, v in DOWN_REASONS.items()]
    # Transient: a question left unanswered is not part of the conversation when it is resumed.
    await cl.Message(content="Thanks! What was wrong with that answer?", actions=actions, author="Feedback", metadata={"transient": True}).send()


guards = edge.install(http_app, sio, redis, settings, USERS if settings.auth_mode == "password" else None)
api.install(http_app, store, Limiter(redis, "ratings", settings.ratings_per_minute), on_rated=ask_reasons)


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
async def add_reason(action: cl.Action) -> None:
    """Add the clicked reason to the rating (the user's own, checked by the rating script)."""
    user = cl.user_session.get("user")
    exchange_id = str(action.payload.get("exchange_id", ""))
    if not keys.valid_id(exchange_id):
        return
    if store.spool.has_pending():
        # The rating may still be in the spool: adding to what Redis holds could undo the click.
        await cl.ErrorMessage(content="Storage is catching up right now: please pick the reason again in a moment.").send()
        return
    try:
        current = await ratings.get(redis, exchange_id)
    except OUTAGE:
        await cl.ErrorMessage(content="Storage is unavailable right now: the reason was not saved.").send()
        return
    if user is None or current is None or action.payload.get("reason") not in DOWN_REASONS:
        return
    rating = ratings.RatingInput(value=current["value"], comment=current["comment"] or None, reasons=[*current["reasons"], action.payload["reason"]])
    try:
        await store.rate(user=user.identifier, thread_id=cl.context.session.thread_id, exchange_id=exchange_id, rating=rating)
    except ratings.RatingError as exc:
        await cl.ErrorMessage(content=str(exc)).send()
        return
    await cl.Message(content="", id=action.forId).remove()


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
        proof = headers.get(settings.auth_proxy_header.lower()) or headers.get(settings.auth_proxy_header) or ""
        if not PROXY_SECRET or not hmac.compare_digest(proof.encode(), PROXY_SECRET):
            log.warning("header login refused: the proxy secret is missing or wrong")
            return None
        name = headers.get(settings.auth_header.lower()) or headers.get(settings.auth_header)
        if not name or not keys.valid_user(name):
            log.warning("header login refused: invalid user name %r", (name or "")[:80])
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
    return cl.Action(name="regenerate", payload={"exchange_id": exchange_id}, label="Regenerate", icon="refresh-cw")


async def answer(run_id: str, prompt_message_id: str, prompt: list[dict[str, str]], prompt_ref: tuple[str, str], experiment: str | None) -> exchanges.Exchange | None:
    """Stream the model's answer to `prompt` into a new message and store the exchange.

    Returns None when the model failed (the user sees why) or the user pressed stop.
    """
    model_name, model_version = await model_in_service()
    llm = chat.chat_model(
        settings.effective_llm_base_url,
        settings.llm_api_key.get_secret_value(),
        model_name,
        settings.llm_timeout_s,
        settings.llm_max_tokens,
        settings.llm_temperature,
    )
    reply = cl.Message(content="")
    started = time.perf_counter()
    first_token_ms: float | None = None
    usage: UsageMetadata | None = None
    error: chat.ModelError | None = None
    try:
        async for chunk in llm.astream(prompt):
            if chunk.usage_metadata:  # the last chunk, when the server reports usage
                usage = chunk.usage_metadata
            if chunk.text:
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - started) * 1000
                await reply.stream_token(chunk.text)
        if not reply.content.strip():
            error = chat.EMPTY_ANSWER
    except asyncio.CancelledError:
        # The stop button: keep what was streamed so far and let Chainlit finish the cancel.
        await reply.send()
        raise
    except Exception as exc:  # openai raises many types; explain() maps the known ones
        log.warning("model call failed: %r", exc)
        error = chat.explain(exc)
    if error is not None:
        await cl.ErrorMessage(content=str(error)).send()
        return None

    user = cl.user_session.get("user")
    record = exchanges.Exchange(
        id=run_id,
        thread_id=cl.context.session.thread_id,
        user=user.identifier if user else "anonymous",
        message_id=reply.id,
        prompt_message_id=prompt_message_id,
        messages=[exchanges.PromptMessage(**m) for m in prompt],
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
    reply.actions = [regenerate_button(record.id)]
    await reply.send()
    if await store.save_exchange(record) == "spool":
        await cl.Message(content=SPOOLED, author="Storage").send()
    return record


@cl.on_chat_start
async def start() -> None:
    cl.user_session.set("turns", [])
    cl.user_session.set("prompt_version", None)  # chosen at the first message: the version served then
    cl.user_session.set("experiment", None)


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
    cl.user_session.set("turns", [Turn(e.prompt_message_id, e.messages[-1].content, e.completion) for e in shown])
    if shown and shown[-1].message_id:
        # Chainlit doesn't store action buttons: offer Regenerate on the latest answer again.
        await regenerate_button(shown[-1].id).send(for_id=shown[-1].message_id)


@cl.on_message
async def on_message(message: cl.Message) -> None:
    if len(message.content) > settings.max_message_chars:
        await cl.ErrorMessage(content=f"Your message has {len(message.content)} characters; the limit is {settings.max_message_chars}.").send()
        return
    history = drop_from(turns(), message.id)
    spec = await conversation_spec()
    prompt = render(spec, as_messages(history), message.content, settings.history_max_tokens)
    run = cl.context.current_step
    record = await answer(run.id if run else uuid.uuid4().hex, message.id, convert_to_openai_messages(prompt), (spec.id, spec.version), cl.user_session.get("experiment"))
    if record is not None:
        history.append(Turn(message.id, message.content, record.completion))
    cl.user_session.set("turns", history)


@cl.action_callback("regenerate")
async def regenerate(action: cl.Action) -> None:
    """Answer the same prompt again; the earlier answer is hidden but kept as an alternative."""
    history = turns()
    exchange_id = str(action.payload.get("exchange_id", ""))
    old = await exchanges.load(redis, exchange_id) if keys.valid_id(exchange_id) else None
    user = cl.user_session.get("user")
    if old is None or user is None or old.user != user.identifier or old.thread_id != cl.context.session.thread_id:
        await cl.ErrorMessage(content="This answer can't be regenerated here.").send()
        return
    if not history or history[-1].message_id != old.prompt_message_id:
        await cl.ErrorMessage(content="Only the latest answer can be regenerated.").send()
        return
    retry = await guards.messages.hit(user.identifier)
    if retry is not None:
        await cl.ErrorMessage(content=f"Too many messages: try again in {retry} s.").send()
        return
    async with cl.Step(name="regenerate", type="run", parent_id=old.prompt_message_id) as run:
        record = await answer(run.id, old.prompt_message_id, [m.model_dump() for m in old.messages], (old.prompt_id, old.prompt_version), old.experiment)
    if record is not None:
        await cl.Message(content="", id=old.message_id).remove()  # soft delete: see the data layer
        history[-1] = Turn(old.prompt_message_id, history[-1].question, record.completion)
        cl.user_session.set("turns", history)

"""The Chainlit app: a prompt-engineered assistant whose answers are streamed and recorded.

Run it with `chatbot up` (which starts Redis and a model server when none is configured), or
directly with `chainlit run bot/app.py` when REDIS_URL and LLM_BASE_URL point at running servers.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import sys
import time

import chainlit as cl
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_openai_messages
from redis.exceptions import RedisError

from bot import model as chat
from bot.prompt import PromptSpecError, load_spec, render
from feedback import exchange as exchanges
from feedback import registry
from feedback.connection import connect
from feedback.settings import SettingsError, load_settings

log = logging.getLogger("bot")

try:
    settings = load_settings()
    spec = load_spec(settings.prompts_dir, settings.prompt_id, settings.prompt_version)
except (SettingsError, PromptSpecError) as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)

if settings.chainlit_auth_secret:
    # Chainlit reads its JWT secret from the process environment only.
    os.environ.setdefault("CHAINLIT_AUTH_SECRET", settings.chainlit_auth_secret.get_secret_value())

redis = connect(settings.effective_redis_url)
USERS = settings.users()
REDIS_DOWN = "Ratings storage is unavailable right now: this answer was not saved."


if settings.auth_mode == "password":

    @cl.password_auth_callback
    def password_login(username: str, password: str) -> cl.User | None:
        expected = USERS.get(username)
        if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
            return cl.User(identifier=username, metadata={"provider": "password"})
        return None

else:

    @cl.header_auth_callback
    def header_login(headers: dict[str, str]) -> cl.User | None:
        # Behind a proxy that authenticates users and sets this header; never expose this port directly.
        name = headers.get(settings.auth_header.lower()) or headers.get(settings.auth_header)
        return cl.User(identifier=name, metadata={"provider": "header"}) if name else None


async def model_in_service() -> str:
    """The promoted model when there is one, else the configured model; Redis trouble falls back."""
    try:
        return await registry.active_model(redis) or settings.llm_model
    except RedisError as exc:
        log.warning("active model lookup failed, using %s: %s", settings.llm_model, exc)
        return settings.llm_model


@cl.on_chat_start
async def start() -> None:
    cl.user_session.set("history", [])


@cl.on_message
async def answer(message: cl.Message) -> None:
    history: list[BaseMessage] = cl.user_session.get("history") or []
    user = cl.user_session.get("user")
    model_name = await model_in_service()
    prompt = render(spec, history, message.content, settings.history_max_tokens)
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
    error: chat.ModelError | None = None
    try:
        async for chunk in llm.astream(prompt):
            token = chunk.text
            if token:
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - started) * 1000
                await reply.stream_token(token)
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
        return

    record = exchanges.Exchange(
        thread_id=message.thread_id,
        user=user.identifier if user else "anonymous",
        step_id=cl.context.current_step.id if cl.context.current_step else None,
        message_id=reply.id,
        messages=[exchanges.PromptMessage(**m) for m in convert_to_openai_messages(prompt)],
        completion=reply.content,
        prompt_id=spec.id,
        prompt_version=spec.version,
        model=model_name,
        first_token_ms=first_token_ms,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    reply.metadata = {"exchange_id": record.id, "prompt_version": f"{spec.id}@{spec.version}", "model": model_name}
    await reply.send()
    history.extend([HumanMessage(message.content), AIMessage(reply.content)])
    cl.user_session.set("history", history)
    try:
        await exchanges.save(redis, record)
    except RedisError as exc:
        log.warning("could not save exchange %s: %s", record.id, exc)
        await cl.Message(content=REDIS_DOWN, author="system").send()

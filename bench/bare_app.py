"""The baseline for the time-to-first-token benchmark: the Chainlit cookbook chat app.

It only streams the model's answer (OpenAI client, `stream_token`, `send`), with the same
password login as ours so a client takes the same path (login, then socket.io). No Redis, no
prompt templates, no recording. `on_chat_start` keeps the cookbook's message history; it also
makes Chainlit emit the task_start/task_end pair that `ChatClient.connect` waits for.

Env: LLM_BASE_URL, LLM_MODEL (default "echo"), BENCH_USER, BENCH_PASSWORD, CHAINLIT_AUTH_SECRET.
Started by `python -m bench.ttft`; by hand: `chainlit run bench/bare_app.py --headless`.
"""

from __future__ import annotations

import hmac
import os

import chainlit as cl
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

client = AsyncOpenAI(base_url=os.environ["LLM_BASE_URL"], api_key="x")
MODEL = os.environ.get("LLM_MODEL", "echo")


@cl.password_auth_callback
async def password_login(username: str, password: str) -> cl.User | None:
    user, expected = os.environ["BENCH_USER"], os.environ["BENCH_PASSWORD"]
    if username == user and hmac.compare_digest(expected.encode(), password.encode()):
        return cl.User(identifier=username, metadata={"provider": "password"})
    return None


@cl.on_chat_start
async def start() -> None:
    cl.user_session.set("history", [{"role": "system", "content": "You are a helpful assistant."}])


@cl.on_message
async def answer(message: cl.Message) -> None:
    history: list[ChatCompletionMessageParam] = cl.user_session.get("history")
    history.append({"role": "user", "content": message.content})
    reply = cl.Message(content="")
    stream = await client.chat.completions.create(model=MODEL, messages=history, stream=True)
    async for part in stream:
        if part.choices and (token := part.choices[0].delta.content):
            await reply.stream_token(token)
    history.append({"role": "assistant", "content": reply.content})
    await reply.send()

"""The chat model client (bot/model.py) against the stand-in OpenAI-compatible server, over HTTP."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from bot.model import ChatModel, sampling_seed
from launcher.process import ServiceGroup
from sim.client import ChatClient
from support.services import AppServer, RedisServer, app_env, start_app
from support.session import USERS

PROMPT: list[BaseMessage] = [
    SystemMessage("You are {careful} with braces."),
    HumanMessage("first"),
    AIMessage("You said: first"),
    HumanMessage("naïve question with “quotes” and \n newlines"),
]


def options(standin: str, model: str) -> dict[str, Any]:
    # A client of this test's event loop (LangChain's default one is shared, bound to the first loop).
    return {
        "base_url": f"{standin}/v1", "api_key": "test", "model": model, "max_tokens": 64, "temperature": 0.2,
        "stream_usage": True, "max_retries": 0, "http_async_client": httpx.AsyncClient(),
    }


async def last_body(standin: str, model: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        bodies = (await http.get(f"{standin}/requests")).json()
    body: dict[str, Any] = next(b for b in reversed(bodies) if b.get("model") == model)
    return body


async def test_the_request_body_is_the_one_langchain_sends_with_the_openai_client(standin: str) -> None:
    """Messages go as `extra_body` (no per-message type walk in openai): the server gets the same
    JSON body, field for field, and the answer streams the same."""
    plain = ChatOpenAI(**options(standin, "echo-plain"))
    ours = ChatModel(**options(standin, "echo-ours"))

    theirs_text = "".join([c.text async for c in plain.astream(PROMPT)])
    ours_text = "".join([c.text async for c in ours.astream(PROMPT)])

    assert ours_text == theirs_text == "You said: naïve question with “quotes” and \n newlines"
    sent, expected = await last_body(standin, "echo-ours"), await last_body(standin, "echo-plain")
    assert sent["messages"] == expected["messages"] == [
        {"role": "system", "content": "You are {careful} with braces."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "You said: first"},
        {"role": "user", "content": "naïve question with “quotes” and \n newlines"},
    ]
    assert {k: v for k, v in sent.items() if k != "model"} == {k: v for k, v in expected.items() if k != "model"}


async def test_an_extra_body_of_the_deployment_is_still_sent(standin: str) -> None:
    """Settings for a server (vLLM's top_k, say) given as extra_body travel beside the messages."""
    ours = ChatModel(**options(standin, "echo-extra"), extra_body={"top_k": 5})
    reply = await ours.ainvoke(PROMPT[-1:])
    sent = await last_body(standin, "echo-extra")
    assert reply.text == "You said: naïve question with “quotes” and \n newlines"
    assert sent["top_k"] == 5 and sent["messages"] == [{"role": "user", "content": PROMPT[-1].content}]


# --- LLM_SEED through the app ----------------------------------------------------------------------


async def test_with_llm_seed_each_answer_asks_for_a_seed_fixed_by_its_message_and_attempt(
    redis_db: RedisServer, standin: str, own_services: ServiceGroup, tmp_path: Path
) -> None:
    """What makes a simulated run repeat itself: the same user message gets the same seed (so a
    server that honours it, transformers serve, gives the same answer), Regenerate the next one."""
    app = start_app(own_services, app_env(redis_db.url, f"{standin}/v1", tmp_path, LLM_MODEL="echo-seeded", LLM_SEED="7"), tmp_path)
    client = ChatClient(app.url)
    await client.login("alice", USERS["alice"])
    await client.connect()
    message_id = str(uuid.uuid4())
    try:
        first = await client.send("seeded", message_id=message_id)
        seeds = [(await last_body(standin, "echo-seeded")).get("seed")]
        [offered] = [a for a in first.actions if a["name"] == "regenerate"]
        await client.action("regenerate", offered["payload"], for_id=str(offered["forId"]))
        seeds.append((await last_body(standin, "echo-seeded")).get("seed"))
    finally:
        await client.close()
    assert seeds == [sampling_seed(7, message_id, 0), sampling_seed(7, message_id, 1)]
    assert seeds[0] != seeds[1]


async def test_without_llm_seed_no_seed_is_sent(app_server: AppServer, standin: str) -> None:
    client = ChatClient(app_server.url)
    await client.login("alice", USERS["alice"])
    await client.connect()
    try:
        await client.send("unseeded")
    finally:
        await client.close()
    assert "seed" not in await last_body(standin, "echo")

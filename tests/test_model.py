"""The chat model client (bot/model.py) against the stand-in OpenAI-compatible server, over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from bot.model import ChatModel

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

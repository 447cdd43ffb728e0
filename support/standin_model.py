"""A stand-in for a remote OpenAI-compatible model server: it streams known tokens.

The requested model name picks the behaviour, so a test switches it through the same Redis key
the product uses for the model in service:

    echo (any name)  streams "You said: <last user message>" word by word
    fail-500         answers HTTP 500
    fail-404         answers HTTP 404
    empty            streams no content
    slow             streams 400 tokens, 50 ms apart (for the stop button)
    paced            the echo, 20 ms between words: a turn as long as a small real model's
    steady           the echo, then 13 more words, 300 ms apart: slow, but never silent for long
    late*            the echo after 2.5 s of silence (a model reading a long prompt)
    silent           starts the response, then never a token (a model stuck or queued)
    stall            three words, then silence
    judge-shorter    a judge (training/judge.py's question format) that prefers the shorter
                     answer: replies A, B, or TIE for equal lengths
    judge-garbled    a judge that replies something else than A, B or TIE

A system prompt that contains "stand-in: ramble" makes the echo ramble on (~40 more words): two
prompt versions then get answers a rater can tell apart (bench/prompt_experiment.py).

With `--load-s N` it behaves like a server that loads each model on the first request naming it
(`transformers serve`): that request, and any naming the same model meanwhile, wait N seconds
first (the load goes on if the client gives up); `/loads` tells when each load ended. The fail-*
names are refused at once, as a server refuses a model it can't load.

With `--serial` it generates one answer at a time, as `transformers serve` does on a CPU: a
request waits until the answers before it are done, or their clients left.

`/streams` tells, for each streamed answer: its model, the tokens it had to send and those it sent,
and how it ended: "complete", "disconnected" (the client closed the response first; the generation
stopped there), or null while it runs.

Run: python -m support.standin_model --port 8011 [--load-s 5] [--serial]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

REQUESTS: list[dict] = []


def judge_reply(model: str, messages: list[dict]) -> str:
    if model == "judge-garbled":
        return "Both have merits."
    found = re.search(r"\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*)\n\n\[Your verdict", messages[-1]["content"], re.S)
    if found is None:
        return "?"
    a, b = (len(x) for x in found.groups())
    return "A" if a < b else "B" if b < a else "TIE"


PACE_S = {"slow": 0.05, "paced": 0.02, "steady": 0.3}  # seconds between tokens
FIRST_TOKEN_S = {"late": 2.5}  # seconds of silence before the first token (by name prefix)
SILENT_AFTER = {"silent": 0, "stall": 3}  # tokens sent before a silence that never ends
STEADY_MORE = " and then some more words to show a slow answer that keeps coming".split(" ")
RAMBLE = " ".join(["and, to be thorough, there is more to say about it"] * 4) + "."


def answer_tokens(model: str, messages: list[dict]) -> list[str]:
    if model.startswith("judge-"):
        return [judge_reply(model, messages)]
    if model == "empty":
        return []
    if model == "slow":
        return [f"tok{i} " for i in range(400)]
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    ramble = any(m["role"] == "system" and "stand-in: ramble" in m["content"] for m in messages)
    words = (f"You said: {last}" + (" " + RAMBLE if ramble else "")).split(" ")
    if model == "steady":
        words += STEADY_MORE[1:]
    return [w if i == 0 else f" {w}" for i, w in enumerate(words)]


def chunk(cid: str, model: str, delta: dict, finish: str | None = None) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


LOAD_S = 0.0  # --load-s: seconds to "load" each model name the first time it is asked for
LOADED: dict[str, float] = {}  # model name -> when its load ended (time.time())
LOADING: dict[str, asyncio.Task[None]] = {}


async def load(model: str) -> None:
    """Wait until `model` is loaded: the first request starts the load, later ones wait for it."""
    if LOAD_S <= 0 or model in LOADED:
        return

    async def loading() -> None:
        await asyncio.sleep(LOAD_S)
        LOADED[model] = time.time()

    task = LOADING.get(model) or LOADING.setdefault(model, asyncio.create_task(loading()))
    await asyncio.shield(task)  # a client that times out doesn't stop the load


STREAMS: list[dict[str, Any]] = []  # one per streamed answer: what `/streams` returns
SERIAL = False  # --serial: one answer generated at a time
GENERATING = asyncio.Lock()


class Watched(StreamingResponse):
    """A streamed answer that notes when its client leaves before the end: the generator is
    cancelled then (as a real server aborts the generation), and its record says so."""

    def __init__(self, content: AsyncGenerator[str, None], record: dict[str, Any]) -> None:
        super().__init__(content, media_type="text/event-stream")
        self.events, self.record = content, record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Always listen for the disconnect (Starlette skips it from ASGI 2.4 on, noticing only
        # at the next write: too late for a silent model).
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                if self.record["end"] is None:
                    self.record.update(end="disconnected", ended=time.time())
                group.cancel_scope.cancel()
        finally:
            # A generator cancelled while waiting at a `yield` would hold --serial's lock until
            # it is garbage-collected: close it now.
            await self.events.aclose()


async def completions(request: Request) -> Response:
    body = await request.json()
    REQUESTS.append(body)
    model = body.get("model", "")
    if model.startswith("fail-"):
        code = int(model.removeprefix("fail-"))
        return JSONResponse({"error": {"message": f"stand-in failure {code}", "type": "server_error"}}, status_code=code)
    await load(model)
    tokens = answer_tokens(model, body.get("messages", []))
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    if not body.get("stream"):
        return JSONResponse(
            {
                "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)}, "finish_reason": "stop"}],
            }
        )

    record: dict[str, Any] = {"id": cid, "model": model, "tokens": len(tokens), "sent": 0, "end": None, "started": time.time(), "ended": None}
    STREAMS.append(record)
    silent_after = SILENT_AFTER.get(model)
    first_wait = next((s for prefix, s in FIRST_TOKEN_S.items() if model.startswith(prefix)), 0.0)

    async def events() -> AsyncGenerator[str, None]:
        yield chunk(cid, model, {"role": "assistant", "content": ""})
        async with GENERATING if SERIAL else contextlib.nullcontext():
            await asyncio.sleep(first_wait)
            for i, token in enumerate(tokens):
                if i == silent_after:
                    await asyncio.sleep(3600)
                if model in PACE_S:
                    await asyncio.sleep(PACE_S[model])
                record["sent"] += 1
                yield chunk(cid, model, {"content": token})
            if silent_after is not None:
                await asyncio.sleep(3600)
        record.update(end="complete", ended=time.time())
        yield chunk(cid, model, {}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            n_prompt = sum(len(m["content"].split()) for m in body.get("messages", []))
            usage = {"prompt_tokens": n_prompt, "completion_tokens": len(tokens), "total_tokens": n_prompt + len(tokens)}
            yield f"data: {json.dumps({'id': cid, 'object': 'chat.completion.chunk', 'model': model, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return Watched(events(), record)


LORA_LOADS: list[dict] = []


async def load_lora_adapter(request: Request) -> Response:
    """vLLM's runtime LoRA loading (VLLM_ALLOW_RUNTIME_LORA_UPDATING): recorded, then accepted."""
    body = await request.json()
    LORA_LOADS.append(body)
    return Response(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")


async def lora_loads(request: Request) -> Response:
    return JSONResponse(LORA_LOADS)


async def loads(request: Request) -> Response:
    return JSONResponse(LOADED)


async def streams(request: Request) -> Response:
    return JSONResponse(STREAMS[-50:])


async def recorded(request: Request) -> Response:
    return JSONResponse(REQUESTS[-50:])


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/requests", recorded),
        Route("/streams", streams),
        Route("/v1/load_lora_adapter", load_lora_adapter, methods=["POST"]),
        Route("/lora_loads", lora_loads),
        Route("/loads", loads),
        Route("/health", health),
    ]
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--load-s", type=float, default=0.0, help="seconds the first request naming each model waits (its load)")
    parser.add_argument("--serial", action="store_true", help="generate one answer at a time (a CPU server)")
    args = parser.parse_args()
    LOAD_S = args.load_s
    SERIAL = args.serial
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")

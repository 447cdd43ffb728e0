"""A stand-in for a remote OpenAI-compatible model server: it streams known tokens.

The requested model name picks the behaviour, so a test switches it through the same Redis key
the product uses for the model in service:

    echo (any name)  streams "You said: <last user message>" word by word
    fail-500         answers HTTP 500
    fail-404         answers HTTP 404
    empty            streams no content
    slow             streams 400 tokens, 50 ms apart (for the stop button)
    paced            the echo, 20 ms between words: a turn as long as a small real model's
    judge-shorter    a judge (training/judge.py's question format) that prefers the shorter
                     answer: replies A, B, or TIE for equal lengths
    judge-garbled    a judge that replies something else than A, B or TIE

A system prompt that contains "stand-in: ramble" makes the echo ramble on (~40 more words): two
prompt versions then get answers a rater can tell apart (bench/prompt_experiment.py).

With `--load-s N` it behaves like a server that loads each model on the first request naming it
(`transformers serve`): that request, and any naming the same model meanwhile, wait N seconds
first (the load goes on if the client gives up); `/loads` tells when each load ended. The fail-*
names are refused at once, as a server refuses a model it can't load.

Run: python -m support.standin_model --port 8011 [--load-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REQUESTS: list[dict] = []


def judge_reply(model: str, messages: list[dict]) -> str:
    if model == "judge-garbled":
        return "Both have merits."
    found = re.search(r"\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*)\n\n\[Your verdict", messages[-1]["content"], re.S)
    if found is None:
        return "?"
    a, b = (len(x) for x in found.groups())
    return "A" if a < b else "B" if b < a else "TIE"


PACE_S = {"slow": 0.05, "paced": 0.02}  # seconds between tokens
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

    async def events() -> AsyncIterator[str]:
        yield chunk(cid, model, {"role": "assistant", "content": ""})
        for token in tokens:
            if model in PACE_S:
                await asyncio.sleep(PACE_S[model])
            yield chunk(cid, model, {"content": token})
        yield chunk(cid, model, {}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            n_prompt = sum(len(m["content"].split()) for m in body.get("messages", []))
            usage = {"prompt_tokens": n_prompt, "completion_tokens": len(tokens), "total_tokens": n_prompt + len(tokens)}
            yield f"data: {json.dumps({'id': cid, 'object': 'chat.completion.chunk', 'model': model, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


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


async def recorded(request: Request) -> Response:
    return JSONResponse(REQUESTS[-50:])


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/requests", recorded),
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
    args = parser.parse_args()
    LOAD_S = args.load_s
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")

"""The chat model behind the assistant, reached through the OpenAI-compatible API."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

import openai
from langchain_core.language_models import LanguageModelInput
from langchain_openai import ChatOpenAI

from feedback.errors import ServiceError

if TYPE_CHECKING:
    from feedback.settings import Settings


class ModelError(ServiceError):
    """The model could not answer; the message is short and fit to show in the chat."""


class ChatModel(ChatOpenAI):
    """LangChain's ChatOpenAI, with the prompt's messages sent as `extra_body`.

    openai's `chat.completions.create` first walks every message against each of the seven
    message types of its union (openai._utils._transform), in coroutines, to rename keys and
    format dates that chat messages don't have: a body byte for byte the same, for CPU that grows
    with the prompt (system prompt, few-shot examples, history: 14% of the app's CPU in bench.ttft,
    before the first token). LangChain has already made them plain dicts; `extra_body` is merged
    into the request as it is, over the empty list the walk sees.
    """

    def _get_request_payload(self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        if isinstance(payload.get("messages"), list) and "response_format" not in payload:
            payload["extra_body"] = {**(payload.get("extra_body") or {}), "messages": payload["messages"]}
            payload["messages"] = []
        return payload


def sampling_request(temperature: float) -> dict[str, str]:
    """What a request to `transformers serve` adds so that it samples at the request's temperature
    (LLM_TRANSFORMERS_SERVE): its `generation_config` field, JSON laid over the model's own.
    Without it the server samples only when the model's generation_config.json says do_sample,
    and the default model's doesn't: every temperature was greedy, Regenerate gave the same answer.
    Temperature 0 asks for greedy decoding."""
    return {"generation_config": json.dumps({"do_sample": temperature > 0})}


@lru_cache(maxsize=16)
def chat_model(base_url: str, api_key: str, model: str, timeout_s: float, max_tokens: int, temperature: float, sample_at_server: bool = False) -> ChatModel:
    """One client per (endpoint, model): the active model can change between two requests.
    `sample_at_server`: the endpoint is a `transformers serve` (see `sampling_request`)."""
    return ChatModel(
        base_url=base_url,
        api_key=api_key,
        model=model,
        timeout=timeout_s,
        max_tokens=max_tokens,
        temperature=temperature,
        extra_body=sampling_request(temperature) if sample_at_server else None,
        # One retry, for a refused connection or an HTTP 429/5xx: nothing generates then. The
        # client's timeout (per read) is the ceiling, which `within` reaches first: a timed-out
        # request is never retried, which would queue a second generation behind the abandoned one.
        max_retries=1,
        streaming=True,
        stream_usage=True,
        # `within` bounds the silences; LangChain's extra per-chunk timeout would wrap every token
        # in asyncio.wait_for once more (measured: ~0.8 ms per answer).
        stream_chunk_timeout=None,
    )


def for_settings(settings: Settings, model: str) -> ChatModel:
    """The client the app answers with: `model` at the configured endpoint, with the product's
    sampling settings (LLM_TIMEOUT_S, LLM_MAX_TOKENS, LLM_TEMPERATURE, LLM_TRANSFORMERS_SERVE)."""
    return chat_model(
        settings.effective_llm_base_url,
        settings.llm_api_key.get_secret_value(),
        model,
        settings.llm_timeout_s,
        settings.llm_max_tokens,
        settings.llm_temperature,
        settings.sample_at_server,
    )


class ModelTimeout(ModelError):
    """The model went silent for longer than a limit (or the answer passed the ceiling)."""


@dataclass(frozen=True)
class Limits:
    """LLM_FIRST_TOKEN_TIMEOUT_S, LLM_IDLE_TIMEOUT_S, LLM_TIMEOUT_S: limits on silence, and a
    ceiling on the whole answer that caps both."""

    first_token_s: float
    idle_s: float
    total_s: float


T = TypeVar("T")


async def within(stream: AsyncIterator[T], limits: Limits, has_token: Callable[[T], bool]) -> AsyncGenerator[T, None]:
    """`stream`'s chunks, until a silence or the whole answer passes its limit (ModelTimeout).

    A limit cancels the pending read inside the stream, and the stream is closed in any case
    (limit, error, the stop button's cancel, a consumer that stops early): closing the HTTP
    response is what tells the server to stop generating (transformers serve, vLLM and OpenAI
    abort a request whose client left), so the next request doesn't queue behind an abandoned one.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    ceiling = started + limits.total_s
    silent_until, first = started + limits.first_token_s, True
    try:
        while True:
            deadline = asyncio.timeout_at(min(silent_until, ceiling))
            try:
                async with deadline:
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not deadline.expired():
                    raise  # not ours
                raise timed_out(limits, first, loop.time() >= ceiling) from None
            if has_token(chunk):
                first = False
                silent_until = loop.time() + limits.idle_s
            yield chunk
    finally:
        close = getattr(stream, "aclose", None)  # LangChain's astream: an async generator
        if close is not None:
            await close()


def timed_out(limits: Limits, first: bool, ceiling: bool) -> ModelTimeout:
    if first:
        return ModelTimeout(f"The model did not start answering within {min(limits.first_token_s, limits.total_s):g} s: it may be busy. Please try again in a moment.")
    if ceiling:
        return ModelTimeout(f"The answer took longer than {limits.total_s:g} s in all and was stopped. Please try again or ask for a shorter answer.")
    return ModelTimeout(f"The model stopped writing for {limits.idle_s:g} s and its answer was cut off. Please try again.")


def sampling_seed(seed: int, message_id: str, attempt: int) -> int:
    """The request's seed under LLM_SEED: fixed by the user message and the attempt (0 for the
    first answer, n for the n-th Regenerate), so answers repeat run after run whatever order
    concurrent requests reach the server in, and a regenerated answer is a new draw."""
    digest = hashlib.blake2b(f"{seed}:{message_id}:{attempt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest) & 0x7FFFFFFF


def explain(exc: Exception) -> ModelError:
    """Turn an openai error into a message a user can act on (no traceback, no secrets)."""
    if isinstance(exc, openai.APITimeoutError):
        return ModelError("The model took too long to answer. Please try again.")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError("The model server can't be reached right now. Please try again in a moment.")
    if isinstance(exc, openai.AuthenticationError):
        return ModelError("The model server refused our credentials (HTTP 401). An administrator must check LLM_API_KEY.")
    if isinstance(exc, openai.NotFoundError):
        return ModelError("The model server doesn't know the configured model (HTTP 404). An administrator must check LLM_MODEL.")
    if isinstance(exc, openai.RateLimitError):
        return ModelError("The model server is busy (HTTP 429). Please try again in a moment.")
    if isinstance(exc, openai.APIStatusError):
        return ModelError(f"The model server failed to answer (HTTP {exc.status_code}). Please try again.")
    return ModelError(f"The model failed to answer ({type(exc).__name__}). Please try again.")


EMPTY_ANSWER = ModelError("The model returned an empty answer. Please rephrase or try again.")

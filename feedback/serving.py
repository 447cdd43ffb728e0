"""The model server as the registry sees it: load a model version into it before it goes in service.

A model server (`transformers serve`, vLLM, any OpenAI-compatible endpoint) loads a model on the
first request that names it, which can take longer than a user's answer may wait for its first
token (LLM_FIRST_TOKEN_TIMEOUT_S). So every change of the model in service - the retraining
job's promotion, `chatbot model promote` and `rollback`, the console's buttons - first sends the
new served name a one-token chat completion (`warm`) and moves the active pointer only once that
came back: no user's answer pays for the load. If the server can't load it, the pointer stays
where it was and the caller says why.

Plain HTTP with httpx, nothing of torch: the chat process (the console) calls it too, in a worker
thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from feedback.errors import ServiceError

if TYPE_CHECKING:
    from feedback.settings import Settings


class WarmUpError(ServiceError):
    """The model server could not load (or answer with) a model version; nothing was switched."""


def warm(base_url: str, api_key: str, model: str, timeout_s: float) -> float:
    """Ask the server at `base_url` (OpenAI-compatible, ending in /v1) for one token from `model`,
    so it loads the model now; returns the seconds it took."""
    started = time.monotonic()
    try:
        r = httpx.post(
            f"{base_url.rstrip('/')}/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )
    except httpx.TimeoutException:
        raise WarmUpError(f"the model server at {base_url} did not load {model!r} within {timeout_s:g} s (MODEL_LOAD_TIMEOUT_S)") from None
    except httpx.HTTPError as exc:
        raise WarmUpError(f"the model server at {base_url} failed while loading {model!r}: {exc}") from None
    if r.status_code != 200:
        raise WarmUpError(f"the model server at {base_url} could not load {model!r} (HTTP {r.status_code}): {r.text[:300]}")
    return time.monotonic() - started


@dataclass(frozen=True)
class ModelServer:
    """The endpoint the chat answers come from, and the configured model (what serves when no
    promoted version does)."""

    base_url: str
    api_key: str
    base_model: str
    timeout_s: float

    @classmethod
    def of(cls, settings: Settings) -> ModelServer:
        return cls(settings.effective_llm_base_url, settings.llm_api_key.get_secret_value(), settings.effective_llm_model, settings.model_load_timeout_s)

    def warm(self, served_name: str | None) -> float:
        """Load `served_name` (None: the configured model) and answer one token; raises WarmUpError."""
        return warm(self.base_url, self.api_key, served_name or self.base_model, self.timeout_s)

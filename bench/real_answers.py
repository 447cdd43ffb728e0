"""Answers of a real chat model to the pool's questions, as the app serves them.

Each question goes where a user's first message goes: the newest prompt spec and the question,
rendered by the app (bot/prompt.py `render`), sent by the app's client (`bot.model.for_settings`:
LLM_TEMPERATURE, LLM_MAX_TOKENS, sampling asked of the server, LLM_TRANSFORMERS_SERVE) with a seed
made as LLM_SEED makes it, to the product's local model server (`transformers serve`, started as
`chatbot up` starts it) serving the model directory. The raters are calibrated, and recipes tried,
on the answers users get.

Before 2026-12-07 this sampled in process (`generate(do_sample=True)`) while the app, through a
server that dropped its temperature for the default model, decoded greedily: the calibration then
measured answers the app never served (docs/experiment-real/NOTES.md).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.model import ChatModel
    from feedback.prompt import PromptSpec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "data" / "default-model"
PROMPTS = ROOT / "bot" / "prompts"


def prefix_messages(prompts_dir: Path = PROMPTS, prompt_id: str = "assistant") -> list[dict[str, str]]:
    """The newest prompt spec's fixed part, rendered by the app's template, as chat dicts."""
    from bot.prompt import prefix
    from feedback.prompt import load_spec

    roles = {"system": "system", "human": "user", "ai": "assistant"}
    return [{"role": roles[m.type], "content": str(m.content)} for m in prefix(load_spec(prompts_dir, prompt_id))]


def conversation(question: str, prefix: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    return [*prefix, {"role": "user", "content": question}]


def answer_all(model_dir: Path | str, questions: Sequence[str], max_new_tokens: int, seed: int = 0, threads: int | None = 1, concurrency: int = 2) -> list[str]:
    """One answer per question, in the order given, from `model_dir` served by a local model
    server of its own (`threads` torch threads; 1: on 2 cores shared with other work, 2 ran 2x
    slower), asked as the app asks (LLM_MAX_TOKENS = `max_new_tokens`; LLM_TEMPERATURE from the
    environment or .env, 0.7 by default). Question i's seed is the app's for a user message of id
    `question-i` (LLM_SEED = `seed`): the same call gives the same answers."""
    from bot import model as chat
    from feedback.prompt import load_spec
    from feedback.settings import load_settings
    from launcher import model_server
    from launcher.process import ServiceGroup, free_port

    served = str(Path(model_dir).resolve()) if Path(model_dir).is_dir() else str(model_dir)
    spec = load_spec(PROMPTS, "assistant")
    with tempfile.TemporaryDirectory(prefix="real-answers-") as logs, ServiceGroup(Path(logs)) as group:
        port = free_port()
        model_server.start(group, port, threads=threads)
        model_server.warm_up(port, served)
        # The settings `chatbot up` gives the app for its local server; a slow machine's answer
        # may take minutes, so no LLM_TIMEOUT_S cuts one off here.
        settings = load_settings(
            llm_base_url=None, local_model_port=port, llm_transformers_serve=True, llm_model=served, llm_max_tokens=max_new_tokens, llm_timeout_s=3600, llm_seed=seed
        )
        return asyncio.run(_ask_all(chat.for_settings(settings, served), spec, questions, seed, settings.history_max_tokens, concurrency))


async def _ask_all(llm: ChatModel, spec: PromptSpec, questions: Sequence[str], seed: int, history_max_tokens: int, concurrency: int) -> list[str]:
    from bot.model import sampling_seed
    from bot.prompt import render

    gate = asyncio.Semaphore(concurrency)  # the server generates one at a time: 2 keeps it busy

    async def ask(i: int, question: str) -> str:
        async with gate:
            reply = await llm.ainvoke(render(spec, [], question, history_max_tokens), seed=sampling_seed(seed, f"question-{i}", 0))
        return str(reply.content).strip()

    return list(await asyncio.gather(*(ask(i, q) for i, q in enumerate(questions))))

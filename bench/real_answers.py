"""Answers of a real chat model to the pool's questions, generated offline the way the app asks.

The app sends the prompt spec's fixed part (system prompt with guidelines, few-shot examples) and
the user's message (bot/prompt.py `render`), samples at LLM_TEMPERATURE and stops at
LLM_MAX_TOKENS. `conversation` builds the same messages as chat-template dicts, and `answer_all`
samples them in batches with `training.evaluate.generate`: what the model in service would
answer, without the app, for calibrating the raters and for quick recipe trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "data" / "default-model"
TEMPERATURE = 0.7  # the app's LLM_TEMPERATURE default


def prefix_messages(prompts_dir: Path = ROOT / "bot" / "prompts", prompt_id: str = "assistant") -> list[dict[str, str]]:
    """The newest prompt spec's fixed part, rendered by the app's template, as chat dicts."""
    from bot.prompt import prefix
    from feedback.prompt import load_spec

    roles = {"system": "system", "human": "user", "ai": "assistant"}
    return [{"role": roles[m.type], "content": str(m.content)} for m in prefix(load_spec(prompts_dir, prompt_id))]


def conversation(question: str, prefix: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    return [*prefix, {"role": "user", "content": question}]


def answer_all(model_dir: Path | str, questions: Sequence[str], max_new_tokens: int, seed: int = 0, batch_size: int = 16, model: Any = None) -> list[str]:
    """One sampled answer per question (temperature 0.7, as the app), in the order given."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.evaluate import generate

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = model or AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    torch.manual_seed(seed)
    prefix = prefix_messages()
    # Longest first: a batch of similar prompt lengths pads less.
    order = sorted(range(len(questions)), key=lambda i: -len(questions[i]))
    convs = [conversation(questions[i], prefix) for i in order]
    texts = generate(model, tokenizer, convs, batch_size=batch_size, do_sample=True, temperature=TEMPERATURE, max_new_tokens=max_new_tokens)
    out = [""] * len(questions)
    for i, text in zip(order, texts, strict=True):
        out[i] = text.strip()
    return out

"""The line under an answer (bot/ui/public/elements/AnswerInfo.jsx): which model and prompt version
wrote it, and, after Regenerate, the earlier answers to the same prompt with their ratings.

Derived from the stored answers, never stored itself: the app sends it with a new answer, and the
data layer adds it to a thread read back (a reload, a resumed conversation) from the thread's
answers and their current ratings. Threads stored before kept it as an element: those are shown
as they were.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from bot.stored_form import ELEMENT_DEFAULTS
from feedback import registry
from feedback.exchange import Exchange

NAME = "AnswerInfo"
_IDS = uuid.UUID("5b0c6f0e-2f5d-4c57-9a39-7d1f0e3b8a21")  # namespace of the derived elements' ids


def model_label(model: str, version: str, bases: Mapping[str, str]) -> str:
    """A model as the page names it, never a server path: the configured model's name, or the
    registry version with the model it was trained from (`bases`: registry.base_models)."""
    if version == registry.BASE:
        return f"{registry.display_name(model)} (base model)"
    base = bases.get(version)
    return f"{version} (from {registry.display_name(base)})" if base else version


def same_prompt(record: Exchange, thread: list[Exchange]) -> list[Exchange]:
    """The answers of `thread` to exactly the prompt `record` answered, written before it."""
    return [e for e in thread if e.id != record.id and e.prompt_message_id == record.prompt_message_id and e.messages == record.messages and e.created_at < record.created_at]


def earlier_props(earlier: list[Exchange], ratings: Mapping[str, int | None], bases: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        {"text": e.completion, "model": model_label(e.model, e.model_version, bases), "prompt": f"{e.prompt_id}@{e.prompt_version}", "rating": ratings.get(e.id)}
        for e in earlier
    ]


def written(model: str, prompt: str) -> str:
    """The line's tooltip."""
    return f"Written by model {model} with prompt {prompt}"


def props(record: Exchange, earlier: list[dict[str, Any]], bases: Mapping[str, str]) -> dict[str, Any]:
    model = model_label(record.model, record.model_version, bases)
    prompt = f"{record.prompt_id}@{record.prompt_version}"
    return {"model": model, "prompt": prompt, "written": written(model, prompt), "earlier": earlier}


def element(record: Exchange, thread: list[Exchange], ratings: Mapping[str, int | None], bases: Mapping[str, str]) -> dict[str, Any]:
    """The element as Chainlit's page reads it with a thread (an ElementDict), for the answer's
    message (`record.message_id`); `bases`: the base model of each registered version
    (registry.base_models)."""
    return {
        **ELEMENT_DEFAULTS,
        "id": str(uuid.uuid5(_IDS, record.id)),
        "threadId": record.thread_id,
        "type": "custom",
        "name": NAME,
        "display": "inline",
        "props": props(record, earlier_props(same_prompt(record, thread), ratings, bases), bases),
        "forId": record.message_id,
        "mime": "application/json",
        "chainlitKey": None,
    }

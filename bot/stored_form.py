"""Chainlit's step and element dicts as the data layer stores them: JSON without the fields that
hold their default (most of a step: null, false, {}), restored on reading; a step's id and thread
are its key's and its hash's own fields (keys.step), not repeated in the JSON.

A stored step is a third of what a rated answer costs in Redis, and half of each was these
defaults. A run step's input is not kept either: run steps are never shown (`cot = "hidden"` in
bot/ui/config.toml) and the question they were given is the user message step's text.
"""

from __future__ import annotations

import json
from typing import Any

STEP_DEFAULTS: dict[str, Any] = {
    "parentId": None,
    "command": None,
    "modes": None,
    "language": None,
    "streaming": False,
    "isError": False,
    "waitForAnswer": False,
    "metadata": {},
    "tags": None,
    "input": "",
    "output": "",
    "defaultOpen": False,
    "autoCollapse": False,
    "showInput": "json",
    "generation": None,
}
# Stored only when they differ from createdAt (a message's three times are one).
SAME_AS_CREATED = ("start", "end")

ELEMENT_DEFAULTS: dict[str, Any] = {
    "url": None,
    "objectKey": None,
    "size": None,
    "page": None,
    "autoPlay": None,
    "playerConfig": None,
    "language": None,
    "forId": None,
    "mime": None,
}


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":"))


# Stored beside the JSON: the id in the key, the thread in the hash's threadId field.
BESIDE = ("id", "threadId")


def pack_step(step: dict[str, Any]) -> str:
    created = step.get("createdAt")
    kept = {
        k: v
        for k, v in step.items()
        if k not in BESIDE
        and not (k in STEP_DEFAULTS and v == STEP_DEFAULTS[k])
        and not (k in SAME_AS_CREATED and v == created and created is not None)
    }
    if kept.get("type") == "run":
        kept.pop("input", None)
    return _dumps(kept)


def unpack_step(raw: str, step_id: str, thread_id: str | None) -> dict[str, Any]:
    """The step dict from its stored JSON, its id and its thread (the hash's threadId field)."""
    step = json.loads(raw)
    for k in SAME_AS_CREATED:
        step.setdefault(k, step.get("createdAt"))
    step.setdefault("id", step_id)  # (steps stored before kept both in the JSON)
    step.setdefault("threadId", thread_id)
    return {**{k: _fresh(v) for k, v in STEP_DEFAULTS.items()}, **step}


def pack_element(element: dict[str, Any]) -> str:
    return _dumps({k: v for k, v in element.items() if not (k in ELEMENT_DEFAULTS and v == ELEMENT_DEFAULTS[k])})


def unpack_element(raw: str) -> dict[str, Any]:
    return {**ELEMENT_DEFAULTS, **json.loads(raw)}


def _fresh(value: Any) -> Any:
    """A default nobody else holds (a step's metadata dict may be changed by its reader)."""
    return {} if isinstance(value, dict) else value

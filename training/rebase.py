"""The gate's held-out rows under the prompt in service.

Rated answers come from every prompt version (and from every arm of a prompt experiment), and the
dataset keeps them all. But a candidate will answer under the version served now: the gate (and
its judge) score the held-out rows with their prompt's fixed part - system prompt and few-shot
examples - replaced by the served version's, keeping each row's own history and question. A row
whose recorded prompt does not start with its version's fixed part (edited by hand, or a version
no longer published) keeps its prompt as recorded, and is counted.
"""

from __future__ import annotations

from typing import Any

import redis
from datasets import DatasetDict

from feedback import prompt as prompts

SPLITS = ("kto_test", "dpo_test")


def with_served_prompt(data: DatasetDict, r: redis.Redis, prompt_id: str) -> tuple[DatasetDict, dict[str, Any]]:
    """(the data with its held-out splits re-prefixed, what was done: served ref, rows rebased, kept)."""
    version = prompts.served(r, prompt_id)
    served = prompts.published(r, prompt_id, version) if version else None
    if served is None:
        return data, {"prompt": "as recorded (no version served)"}
    head = served.prefix_messages()
    specs: dict[str, prompts.PromptSpec | None] = {}
    counts = {"rebased": 0, "kept": 0}

    def rebase(row: dict[str, Any]) -> dict[str, Any]:
        v = row["prompt_version"]
        if v not in specs:
            specs[v] = prompts.published(r, prompt_id, v)
        spec = specs[v]
        old = spec.prefix_messages() if spec else None
        prompt = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
        if old is None or prompt[: len(old)] != old:
            counts["kept"] += 1
            return {"prompt": prompt}
        counts["rebased"] += 1
        return {"prompt": head + prompt[len(old) :]}

    out = DatasetDict(dict(data))
    for split in SPLITS:
        if split in data and len(data[split]):
            out[split] = data[split].map(rebase, keep_in_memory=True, load_from_cache_file=False)
    return out, {"prompt": served.ref, **counts}

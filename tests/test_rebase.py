"""The gate scores held-out rows under the prompt in service: each row's fixed part (system prompt,
few-shot examples of its own version) replaced by the served version's, its history and question
kept; rows whose prompt does not start with their version's fixed part stay as recorded."""

from __future__ import annotations

from typing import Any

from datasets import Dataset, DatasetDict

from feedback import prompt as prompts
from support.services import RedisServer
from training.rebase import with_served_prompt

OLD = prompts.parse({"id": "assistant", "version": "1.0.0", "system": "Old.", "examples": [{"user": "q0", "assistant": "a0"}]}, "test")
NEW = prompts.parse({"id": "assistant", "version": "2.0.0", "system": "New.", "guidelines": ["Be brief."]}, "test")


def rows(*prompts_and_versions: tuple[list[dict[str, str]], str]) -> Dataset:
    return Dataset.from_list(
        [{"prompt": p, "completion": [{"role": "assistant", "content": "x"}], "label": True, "prompt_version": v} for p, v in prompts_and_versions]
    )


def test_held_out_rows_get_the_served_prefix_and_keep_their_conversation(redis_db: RedisServer) -> None:
    c = redis_db.client
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "reply"}, {"role": "user", "content": "question?"}]
    recorded = OLD.prefix_messages() + history
    edited = [{"role": "system", "content": "hand-edited"}, *history]
    data = DatasetDict({"kto_train": rows((recorded, "1.0.0")), "kto_test": rows((recorded, "1.0.0"), (edited, "1.0.0"), (recorded, "7.7.7"))})

    same, info = with_served_prompt(data, c, "assistant")
    assert info["prompt"].startswith("as recorded") and same["kto_test"]["prompt"] == data["kto_test"]["prompt"]

    for spec in (OLD, NEW):
        prompts.publish(c, spec)
    prompts.serve(c, "assistant", "2.0.0")
    out, info = with_served_prompt(data, c, "assistant")

    assert info == {"prompt": "assistant@2.0.0", "rebased": 1, "kept": 2}
    got: list[Any] = out["kto_test"]["prompt"]
    assert got[0] == [{"role": "system", "content": "New.\n\nGuidelines:\n- Be brief."}, *history]
    assert got[1:] == data["kto_test"]["prompt"][1:]  # not its version's prefix / unknown version: as recorded
    assert out["kto_train"]["prompt"] == data["kto_train"]["prompt"]  # training rows are never touched

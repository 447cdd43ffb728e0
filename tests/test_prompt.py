"""Prompt specs: versions on disk, few-shot examples, and the history budget."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from bot.prompt import render, template, trim_history
from feedback.prompt import PromptSpecError, available_versions, load_spec
from feedback.settings import Settings

PROMPTS = Settings().prompts_dir


def write_spec(root: Path, version: str, body: str | None = None) -> None:
    (root / "demo").mkdir(parents=True, exist_ok=True)
    text = body or f"id: demo\nversion: {version}\nsystem: Be {{brief}}.\nguidelines: [One, Two]\nexamples:\n  - user: Q{version}\n    assistant: A{version}\n"
    (root / "demo" / f"{version}.yaml").write_text(text)


def test_newest_version_is_the_default_and_versions_sort_numerically(tmp_path: Path) -> None:
    for v in ("1.2.0", "1.10.0", "1.9.1"):
        write_spec(tmp_path, v)
    assert available_versions(tmp_path, "demo") == ["1.2.0", "1.9.1", "1.10.0"]
    assert load_spec(tmp_path, "demo").version == "1.10.0"
    assert load_spec(tmp_path, "demo", "1.2.0").version == "1.2.0"


def test_shipped_prompts_load() -> None:
    versions = available_versions(PROMPTS, "assistant")
    assert len(versions) >= 2
    for v in versions:
        spec = load_spec(PROMPTS, "assistant", v)
        assert spec.examples, "every shipped version has few-shot examples"


def test_render_order_and_literal_braces(tmp_path: Path) -> None:
    write_spec(tmp_path, "1.0.0")
    spec = load_spec(tmp_path, "demo")
    history = [HumanMessage("earlier q"), AIMessage("earlier a")]
    messages = render(spec, history, "now {literally}", history_max_tokens=1000)
    assert isinstance(messages[0], SystemMessage)
    assert messages[0].content == "Be {brief}.\n\nGuidelines:\n- One\n- Two"  # braces untouched
    assert [m.content for m in messages[1:]] == ["Q1.0.0", "A1.0.0", "earlier q", "earlier a", "now {literally}"]
    assert [m.type for m in messages[1:]] == ["human", "ai", "human", "ai", "human"]


def test_history_budget_drops_oldest_turns_first_and_keeps_system_and_examples(tmp_path: Path) -> None:
    write_spec(tmp_path, "1.0.0")
    spec = load_spec(tmp_path, "demo")
    history = []
    for i in range(20):
        history += [HumanMessage(f"question {i} " + "x" * 200), AIMessage(f"answer {i} " + "y" * 200)]
    messages = render(spec, history, "last", history_max_tokens=300)
    kept = [cast(str, m.content).split(" ")[1] for m in messages[3:-1]]
    assert kept and kept == [str(i) for i in range(20 - len(kept) // 2, 20) for _ in (0, 1)]  # newest turns, whole
    assert messages[3].type == "human"  # never starts on an orphan answer
    assert messages[0].type == "system" and messages[1].content == "Q1.0.0"
    assert messages[-1].content == "last"
    assert render(spec, history, "last", history_max_tokens=0)[3].content == "last"


def test_trim_keeps_everything_under_budget() -> None:
    history = [HumanMessage("a"), AIMessage("b")]
    assert trim_history(history, 10_000) == history


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("id: demo\nversion: 1.0.0\n", "system"),
        ("id: other\nversion: 1.0.0\nsystem: x\n", "declares other@1.0.0"),
        ("id: demo\nversion: 1.0.0\nsystem: [unclosed\n", "1.0.0.yaml"),
    ],
)
def test_malformed_specs_are_reported(tmp_path: Path, body: str, error: str) -> None:
    write_spec(tmp_path, "1.0.0", body)
    with pytest.raises(PromptSpecError, match=error.replace(".", r"\.").replace("[", r"\[")):
        load_spec(tmp_path, "demo")


def test_unknown_prompt_or_version(tmp_path: Path) -> None:
    write_spec(tmp_path, "1.0.0")
    with pytest.raises(PromptSpecError, match=re.escape("no version '9.9.9'; available: 1.0.0")):
        load_spec(tmp_path, "demo", "9.9.9")
    with pytest.raises(PromptSpecError, match="no prompt 'nope'"):
        load_spec(tmp_path, "nope")


def test_render_equals_the_full_template(tmp_path: Path) -> None:
    """The fixed part is rendered once per spec; the result must be what the template renders."""
    write_spec(tmp_path, "1.0.0")
    spec = load_spec(tmp_path, "demo")
    history = [HumanMessage("q1"), AIMessage("a1")]
    full = template(spec).invoke({"history": history, "input": "q2"}).to_messages()
    assert render(spec, history, "q2", 1000) == full
    assert render(spec, history, "q3", 1000)[-1].content == "q3"  # the cached part is not mutated


def test_the_prefix_as_chat_messages_is_what_the_app_renders() -> None:
    """feedback.prompt's prefix_messages (what the gate re-prefixes held-out rows with) and the
    app's LangChain rendering must not drift apart."""
    from langchain_core.messages import convert_to_openai_messages

    from bot.prompt import prefix

    for v in available_versions(PROMPTS, "assistant"):
        spec = load_spec(PROMPTS, "assistant", v)
        assert convert_to_openai_messages(list(prefix(spec))) == spec.prefix_messages()

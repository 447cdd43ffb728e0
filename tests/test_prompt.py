"""Prompt specs: versions on disk, few-shot examples, and the history budget."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import cast

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from bot.prompt import render, template, trim_history
from feedback.prompt import PromptSpec, PromptSpecError, asks_an_example, available_versions, load_spec, parse
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


STARTER = {"label": "Try me", "message": "What can you do?"}


@pytest.mark.parametrize(
    ("starters", "error"),
    [
        ([{"label": "Only a label"}], "starters.0.message: Field required"),
        ([{**STARTER, "icon": "x.png"}], "starters.0.icon: Extra inputs are not permitted"),
        ([{**STARTER, "label": "   "}], "starters.0.label: Value error, must not be blank"),
        ([{**STARTER, "label": "x" * 81}], "starters.0.label: String should have at most 80"),
        ([STARTER, {**STARTER, "label": "try ME"}], "each starter needs its own label"),
        ([{**STARTER, "label": f"s{i}"} for i in range(7)], "starters: Tuple should have at most 6"),
        ("What can you do?", "starters: Input should be a valid tuple"),
    ],
)
def test_malformed_starters_are_reported(starters: object, error: str) -> None:
    with pytest.raises(PromptSpecError, match=re.escape(error)):
        parse({"id": "demo", "version": "1.0.0", "system": "x", "starters": starters}, "demo.yaml")


EXAMPLES = [
    {"user": "What is a system prompt?", "assistant": "The instructions a model sees first."},
    {"user": "Should I fine-tune my model or improve the prompt first?", "assistant": "Improve the prompt first."},
    {"user": "Hi", "assistant": "Hello!"},
]


@pytest.mark.parametrize(
    ("message", "example"),
    [
        ("What is a system prompt?", 1),  # the example's question
        ("what is a SYSTEM prompt", 1),  # case and punctuation aside
        ("What is a system prompt, and what belongs in one?", 1),  # 1.1.1's first starter: the question and more
        ("Should I improve my prompt or fine-tune my model first?", 2),  # 1.1.1's second: its words, reordered
        ("Hi!", 3),  # the same words, however few
    ],
)
def test_a_starter_that_asks_a_few_shot_question_is_refused(message: str, example: int) -> None:
    """The model has that question's answer in its prompt and gives it back word for word, so
    Regenerate would too: 1.1.1's first starter did exactly that."""
    data = {"id": "demo", "version": "1.0.0", "system": "x", "examples": EXAMPLES, "starters": [STARTER, {"label": "Ask", "message": message}]}
    with pytest.raises(PromptSpecError, match=re.escape(f"demo.yaml: starters.1.message: {message!r} asks what few-shot example {example} asks")):
        parse(data, "demo.yaml")


def test_starters_near_an_example_but_asking_something_else_are_accepted() -> None:
    starters = [
        {"label": "What is a system prompt?", "message": "How long should a system prompt be?"},  # the label isn't sent
        {"label": "Greet", "message": "Hi, what can you help me with?"},  # "Hi" is too short to forbid greetings
        {"label": "Fine-tune", "message": "How much data do I need to fine-tune a model?"},
    ]
    spec = parse({"id": "demo", "version": "1.0.0", "system": "x", "examples": EXAMPLES, "starters": starters}, "demo.yaml")
    assert len(spec.starters) == 3


def test_no_shipped_starter_asks_a_few_shot_question() -> None:
    """Every shipped version loads (the loader refuses such starters): the newest offers starters,
    none of which the examples answer, so a user's first Regenerate samples a new answer."""
    for v in available_versions(PROMPTS, "assistant"):
        spec = load_spec(PROMPTS, "assistant", v)
        assert not [s for s in spec.starters for e in spec.examples if asks_an_example(s.message, e.user)]
    assert load_spec(PROMPTS, "assistant").starters


def test_starters_are_optional_and_leave_published_content_as_it_was() -> None:
    """A spec without starters serializes exactly as before starters existed: versions published
    then are not 'other content' now (publishing refuses a changed version)."""
    plain = parse({"id": "demo", "version": "1.0.0", "system": "x"}, "demo.yaml")
    assert plain.starters == () and "starters" not in json.loads(plain.to_json())
    assert PromptSpec.model_validate_json(plain.to_json()) == plain
    offered = parse({"id": "demo", "version": "1.0.1", "system": "x", "starters": [STARTER]}, "demo.yaml")
    assert PromptSpec.model_validate_json(offered.to_json()) == offered and offered.starters[0].message == "What can you do?"
    assert offered.prefix_messages() == plain.prefix_messages()  # never sent to the model
    newest = load_spec(PROMPTS, "assistant")
    assert newest.starters, "the newest shipped version offers starters on the welcome screen"
    released = load_spec(PROMPTS, "assistant", "1.1.0")
    assert json.loads(released.to_json()).keys() == {"id", "version", "description", "system", "guidelines", "examples"}

"""The prompt spec: versioned files rendered into chat messages with LangChain.

A spec lives in ``<prompts_dir>/<id>/<version>.yaml`` (system prompt, guidelines, few-shot
examples). Released versions are never edited: a change is a new file, so every recorded answer
points at the exact text that produced it.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import yaml
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately, trim_messages
from langchain_core.prompts import (
    ChatPromptTemplate,
    FewShotChatMessagePromptTemplate,
    MessagesPlaceholder,
)
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, Field, ValidationError

from feedback.errors import InvalidInput


class PromptSpecError(InvalidInput):
    """A prompt spec is missing or malformed."""


class Example(BaseModel):
    user: str = Field(min_length=1)
    assistant: str = Field(min_length=1)


class PromptSpec(BaseModel):
    id: str
    version: str
    description: str = ""
    system: str = Field(min_length=1)
    guidelines: list[str] = []
    examples: list[Example] = []

    @property
    def system_text(self) -> str:
        if not self.guidelines:
            return self.system.strip()
        rules = "\n".join(f"- {g}" for g in self.guidelines)
        return f"{self.system.strip()}\n\nGuidelines:\n{rules}"

    @cached_property
    def prefix(self) -> list[BaseMessage]:
        """System prompt and few-shot examples, rendered by the template once per spec: they are
        the same for every message (rendering them per message cost ~0.8 ms)."""
        return self.template().invoke({"history": [], "input": ""}).to_messages()[:-1]

    def template(self) -> ChatPromptTemplate:
        """System prompt and few-shot examples, then the kept history, then the user's message."""
        few_shot = FewShotChatMessagePromptTemplate(
            examples=[{"input": e.user, "output": e.assistant} for e in self.examples],
            example_prompt=ChatPromptTemplate.from_messages([("human", "{input}"), ("ai", "{output}")]),
        )
        return ChatPromptTemplate.from_messages(
            [
                # A literal message, not a template: braces in the prompt text stay as written.
                SystemMessage(content=self.system_text),
                few_shot,
                MessagesPlaceholder("history", optional=True),
                ("human", "{input}"),
            ]
        )


def available_versions(prompts_dir: Path, prompt_id: str) -> list[str]:
    """Versions of a prompt on disk, oldest first."""
    found = []
    for path in (prompts_dir / prompt_id).glob("*.yaml"):
        try:
            found.append(Version(path.stem))
        except InvalidVersion:
            continue
    return [str(v) for v in sorted(found)]


def load_spec(prompts_dir: Path, prompt_id: str, version: str | None = None) -> PromptSpec:
    """Load one version of a prompt; the newest when no version is given."""
    versions = available_versions(prompts_dir, prompt_id)
    if not versions:
        raise PromptSpecError(f"no prompt {prompt_id!r} under {prompts_dir} (expected {prompt_id}/<version>.yaml)")
    chosen = version or versions[-1]
    if chosen not in versions:
        raise PromptSpecError(f"prompt {prompt_id!r} has no version {chosen!r}; available: {', '.join(versions)}")
    path = prompts_dir / prompt_id / f"{chosen}.yaml"
    try:
        spec = PromptSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError) as exc:
        raise PromptSpecError(f"{path}: {exc}") from None
    if (spec.id, spec.version) != (prompt_id, chosen):
        raise PromptSpecError(f"{path} declares {spec.id}@{spec.version}; the file name says {prompt_id}@{chosen}")
    return spec


def trim_history(history: list[BaseMessage], max_tokens: int) -> list[BaseMessage]:
    """Keep the newest turns that fit in max_tokens, starting on a user turn."""
    if max_tokens <= 0 or not history:
        return []
    return trim_messages(
        history,
        max_tokens=max_tokens,
        token_counter=count_tokens_approximately,
        strategy="last",
        start_on="human",
    )


def render(spec: PromptSpec, history: list[BaseMessage], user_input: str, history_max_tokens: int) -> list[BaseMessage]:
    """The exact messages sent to the model: the spec's fixed part (rendered once), the kept
    history, the user's message."""
    kept = trim_history(history, history_max_tokens)
    return [*spec.prefix, *kept, HumanMessage(user_input)]

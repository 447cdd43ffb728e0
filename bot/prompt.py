"""Rendering a prompt spec (feedback/prompt.py) into the chat messages sent to the model, with
LangChain: system prompt and guidelines, few-shot examples, the kept history, the user's message.
"""

from __future__ import annotations

from functools import lru_cache

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately, trim_messages
from langchain_core.prompts import (
    ChatPromptTemplate,
    FewShotChatMessagePromptTemplate,
    MessagesPlaceholder,
)

from feedback.prompt import PromptSpec


def template(spec: PromptSpec) -> ChatPromptTemplate:
    """System prompt and few-shot examples, then the kept history, then the user's message."""
    few_shot = FewShotChatMessagePromptTemplate(
        examples=[{"input": e.user, "output": e.assistant} for e in spec.examples],
        example_prompt=ChatPromptTemplate.from_messages([("human", "{input}"), ("ai", "{output}")]),
    )
    return ChatPromptTemplate.from_messages(
        [
            # A literal message, not a template: braces in the prompt text stay as written.
            SystemMessage(content=spec.system_text),
            few_shot,
            MessagesPlaceholder("history", optional=True),
            ("human", "{input}"),
        ]
    )


@lru_cache(maxsize=64)
def prefix(spec: PromptSpec) -> tuple[BaseMessage, ...]:
    """System prompt and few-shot examples, rendered by the template once per spec (specs are
    immutable): the same for every message (rendering them per message cost ~0.8 ms)."""
    return tuple(template(spec).invoke({"history": [], "input": ""}).to_messages()[:-1])


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
    return [*prefix(spec), *kept, HumanMessage(user_input)]

"""The conversation so far: one turn per user message, with the answer in service for it."""

from __future__ import annotations

from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from feedback.exchange import TurnRef


@dataclass
class Turn:
    message_id: str
    question: str
    answer: str
    exchange_id: str  # the stored answer: a later prompt repeating this turn refers to it


def refs(turns: list[Turn]) -> list[TurnRef]:
    """The turns as a stored exchange may refer to them (feedback.exchange)."""
    return [TurnRef(exchange_id=t.exchange_id, question=t.question, answer=t.answer) for t in turns]


def as_messages(turns: list[Turn]) -> list[BaseMessage]:
    return [m for t in turns for m in (HumanMessage(t.question), AIMessage(t.answer))]


def drop_from(turns: list[Turn], message_id: str) -> list[Turn]:
    """The turns before `message_id` (an edited message is answered again, so it and all later
    turns leave the history); all turns when it is not there."""
    for i, t in enumerate(turns):
        if t.message_id == message_id:
            return turns[:i]
    return turns

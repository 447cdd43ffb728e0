"""bot/model.py's `within`: limits on silence and a ceiling on the whole answer, and the stream
closed whichever way it ends (tests/test_slow_model.py checks the same through the app)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from bot.model import Limits, ModelTimeout, within


class Source:
    """A model stream: `gaps[i]` seconds of silence before token i; then it ends, or stays silent."""

    def __init__(self, gaps: list[float], then_silent: bool = False) -> None:
        self.gaps, self.then_silent = gaps, then_silent
        self.sent = 0
        self.closed = False
        self.started = asyncio.Event()  # the first token was sent

    async def stream(self) -> AsyncGenerator[str, None]:
        try:
            for gap in self.gaps:
                await asyncio.sleep(gap)
                self.sent += 1
                self.started.set()
                yield "tok"
            if self.then_silent:
                await asyncio.sleep(3600)
        finally:
            self.closed = True


async def drain(source: Source, limits: Limits) -> list[str]:
    return [chunk async for chunk in within(source.stream(), limits, bool)]


async def test_a_slow_answer_that_keeps_coming_finishes() -> None:
    source = Source([0.05] * 20)  # 1 s in all, never silent for 0.3 s
    assert len(await drain(source, Limits(first_token_s=0.3, idle_s=0.3, total_s=30))) == 20
    assert source.closed


@pytest.mark.parametrize(
    ("source", "limits", "says", "sent"),
    [
        (Source([], then_silent=True), Limits(0.2, 5, 30), "did not start answering within 0.2 s", 0),
        (Source([0.01, 0.01], then_silent=True), Limits(5, 0.2, 30), "stopped writing for 0.2 s", 2),
        (Source([0.05] * 100), Limits(5, 5, 0.5), "took longer than 0.5 s in all", None),
        (Source([], then_silent=True), Limits(120, 30, 0.2), "did not start answering within 0.2 s", 0),  # capped by the ceiling
    ],
)
async def test_a_silence_or_the_ceiling_ends_the_answer_and_closes_the_stream(source: Source, limits: Limits, says: str, sent: int | None) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(ModelTimeout, match=says.replace("(", r"\(")):
        await drain(source, limits)
    assert asyncio.get_running_loop().time() - started < 3
    assert source.closed  # the HTTP response is closed: the server stops generating
    if sent is not None:
        assert source.sent == sent


async def test_a_consumer_that_stops_early_closes_the_stream() -> None:
    source = Source([0.01] * 10, then_silent=True)
    limited = within(source.stream(), Limits(5, 5, 30), bool)
    async for _ in limited:
        break
    await limited.aclose()  # what the app's drain or the garbage collector does
    assert source.closed and source.sent == 1


async def test_the_stop_button_closes_the_stream() -> None:
    source = Source([0.01], then_silent=True)

    async def consume() -> None:
        async for _ in within(source.stream(), Limits(5, 5, 30), bool):
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(source.started.wait(), 5)
    task.cancel()  # Chainlit's stop button cancels the turn's task
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.closed

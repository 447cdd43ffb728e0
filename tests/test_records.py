"""The stored formats' homes: the Lua scripts load by name and compile in a real Redis; the rating
event and the spooled writes read back as they were written."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from feedback.event import RatingEvent
from feedback.exchange import Exchange, PromptMessage
from feedback.rating import RatingInput
from feedback.scripts import lua
from feedback.write import Rate, SaveExchange, parse, thread_of
from support.services import ROOT, RedisServer


def test_every_lua_script_loads_and_compiles(redis_db: RedisServer) -> None:
    names = sorted(p.stem for p in (ROOT / "feedback" / "lua").glob("*.lua"))
    assert {"rate", "save_exchange", "packed_rows", "list_rated", "ensure_thread"} <= set(names)
    for name in names:
        source = lua(name, EXCHANGE_FIELDS="'thread_id'", RATING_FIELDS="'value'")
        assert "{EXCHANGE_FIELDS}" not in source
        redis_db.client.script_load(source)  # a syntax error raises ResponseError
    assert lua("save_exchange").startswith(lua("ensure_thread"))  # the include is in front


def test_rating_events_round_trip_and_refuse_strangers() -> None:
    event = RatingEvent("rate", "ex1", "th1", "zoë", 1700000000.5, 1)
    fields = {str(k): str(v) for k, v in event.to_fields().items()}
    assert RatingEvent.from_fields(fields) == event
    assert "value" not in RatingEvent("unrate", "ex1", "th1", "u", 1.0).to_fields()
    for bad in ({**fields, "action": "hack"}, {k: v for k, v in fields.items() if k != "exchange"}):
        with pytest.raises(ValueError):
            RatingEvent.from_fields(bad)


def test_spooled_writes_read_back_and_find_their_thread() -> None:
    exchange = Exchange(
        id="ex1", thread_id="th1", user="alice", prompt_message_id="m1", messages=[PromptMessage(role="user", content="hi")],
        completion="hello", prompt_id="assistant", prompt_version="1.1.0", model="m",
    )  # fmt: skip
    writes: list[SaveExchange | Rate] = [
        SaveExchange(id="op1", exchange=exchange),
        Rate(id="op2", user="bob", thread_id="th9", exchange_id="ex2", rating=RatingInput(value=1), ts=2.0),
    ]
    lines = [w.model_dump(mode="json") for w in writes]
    assert [parse(line) for line in lines] == writes
    assert thread_of(writes, "ex1", "anyone") == "th1"
    assert thread_of(writes, "ex2", "bob") == "th9" and thread_of(writes, "ex2", "alice") is None
    with pytest.raises(ValidationError):
        parse({"op": "drop_everything", "id": "x"})

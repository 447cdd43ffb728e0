"""collect -> build -> load against a real Redis, with exchanges and ratings written by the app's
own write paths (support/seed.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import DatasetDict
from redis.asyncio import Redis

from feedback import event as events
from support.seed import SYSTEM, delete_thread, rate, seed_exchange, unrate
from support.services import RedisServer
from training import pii
from training.collect import Collected, collect
from training.config import RetrainConfig
from training.dataset import DatasetError, build, class_weights, load, user_cap

# No cap and a tiny minimum unless a test is about them.
OPEN = RetrainConfig(min_ratings=2, max_user_share=1.0)



def built(redis_db: RedisServer, root: Path, config: RetrainConfig = OPEN, since: str | None = None, previous: str | None = None) -> tuple[Collected, str, DatasetDict]:
    collected = collect(redis_db.client, since, full=since is None)
    version = build(collected, config, root, previous, progress=False)
    return collected, version.version, load(root, version.version)


def kto_rows(data: DatasetDict) -> list[dict]:
    return [*data["kto_train"], *data["kto_test"]]


def dpo_rows(data: DatasetDict) -> list[dict]:
    return [*data["dpo_train"], *data["dpo_test"]]


def prompt(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def answer(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# --- PII ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail jane.roe+x@mail.example.org now", "Mail [EMAIL] now"),
        ("Call +1 415-555-0132 or (415) 555-0199.", "Call [PHONE] or [PHONE]."),
        ("Ring +44 20 7946 0958, UK 020 7946 0958", "Ring [PHONE], UK [PHONE]"),
        ("card 4111 1111 1111 1111 and 5500-0000-0000-0004", "card [CARD] and [CARD]"),
        ("I live at 221B Baker Street, London NW1 6XE.", "I live at [ADDRESS]."),
        ("HQ: 1600 Amphitheatre Pkwy, Mountain View, CA 94043", "HQ: [ADDRESS]"),
        ("from 8.8.4.4 and 2001:4860:4860::8888", "from [IP] and [IP]"),
        # left alone: not personal, or not what it looks like
        ("1234 5678 9012 3456 fails the Luhn check", "1234 5678 9012 3456 fails the Luhn check"),
        ("ssh to 192.168.1.10 or 127.0.0.1; xs[1::2] at 12:30:45", "ssh to 192.168.1.10 or 127.0.0.1; xs[1::2] at 12:30:45"),
        ("In 2024 we sold 1,234,567 units; walk 2 blocks down the road", "In 2024 we sold 1,234,567 units; walk 2 blocks down the road"),
        ("std::vector<int> v{1, 2, 3}; x @ y", "std::vector<int> v{1, 2, 3}; x @ y"),
    ],
)
def test_pii_placeholders(text: str, expected: str) -> None:
    assert pii.scrub(text).text == expected


async def test_pii_is_scrubbed_before_anything_is_written(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    # The system prompt is the operator's text, kept as served: only user and assistant turns are scrubbed.
    system = "You are Loop. Users can write to help@loop.example."
    ex = await seed_exchange(
        r, thread="t1", user="alice", system=system, question="Mail me at alice@example.com or call +1 415-555-0132.",
        answer="Your card 4111 1111 1111 1111 is noted.", value=1, rated_at=1000.0,
    )
    await seed_exchange(r, thread="t2", user="alice", question="Hello", answer="Hi!", value=0)
    _, version, data = built(redis_db, tmp_path)

    row = next(x for x in kto_rows(data) if x["exchange_id"] == ex)
    assert row == {
        "prompt": [{"role": "system", "content": system}, {"role": "user", "content": "Mail me at [EMAIL] or call [PHONE]."}],
        "completion": answer("Your card [CARD] is noted."),
        "label": True,
        "exchange_id": ex,
        "thread_id": "t1",
        "user": "alice",
        "prompt_version": "1.0.0",
        "model_version": "base",
        "rated_at": 1000.0,
    }
    card = json.loads((tmp_path / version / "card.json").read_text())
    assert card["pii"]["replaced"] == {"[EMAIL]": 1, "[PHONE]": 1, "[CARD]": 1}
    stored = json.dumps([pq.read_table(p).to_pylist() for p in tmp_path.rglob("*.parquet")])
    for secret in ("alice@example.com", "555-0132", "4111"):
        assert secret not in stored


# --- what goes in ---------------------------------------------------------------------------------


async def test_duplicates_become_one_row(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    first = await seed_exchange(r, thread="t1", user="alice", question="2+2?", answer="4", value=1, rated_at=100.0)
    newest = await seed_exchange(r, thread="t2", user="bob", question="2+2?", answer="4", value=1, rated_at=200.0)
    other = await seed_exchange(r, thread="t3", user="bob", question="2+2?", answer="5", value=0, rated_at=300.0)
    _, version, data = built(redis_db, tmp_path)

    assert sorted(x["exchange_id"] for x in kto_rows(data)) == sorted([newest, other])
    assert first not in {x["exchange_id"] for x in kto_rows(data)}
    assert json.loads((tmp_path / version / "card.json").read_text())["dropped"]["duplicates"] == 1


async def test_progress_bar_only_when_asked(r: Redis, redis_db: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(4):
        await seed_exchange(r, thread=f"t{i}", user="alice", question=f"q{i}", answer="a", value=i % 2)
    build(collect(redis_db.client, None, full=True), OPEN, tmp_path / "quiet", None, progress=False)
    assert "dataset rows" not in capsys.readouterr().err
    build(collect(redis_db.client, None, full=True), OPEN, tmp_path / "shown", None, progress=True)
    assert "dataset rows" in capsys.readouterr().err


async def test_one_user_flooding_is_capped_to_their_newest_ratings(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    flood = [await seed_exchange(r, thread=f"f{i}", user="flood", question=f"q{i}", answer="a", value=i % 2, rated_at=1000.0 + i) for i in range(50)]
    for u in range(5):
        for i in range(10):
            await seed_exchange(r, thread=f"u{u}-{i}", user=f"user{u}", question=f"q{u}-{i}", answer="a", value=i % 2)
    _, version, data = built(redis_db, tmp_path, RetrainConfig(min_ratings=2, max_user_share=0.2))

    rows = kto_rows(data)
    # Largest c with c <= 0.2 * (c + 50): 12, so the flooder has 12 of 62 rows (19%).
    assert len(rows) == 62
    assert {x["exchange_id"] for x in rows if x["user"] == "flood"} == set(flood[-12:])
    assert all(sum(x["user"] == f"user{u}" for x in rows) == 10 for u in range(5))
    card = json.loads((tmp_path / version / "card.json").read_text())
    assert card["user_cap"]["cap_rows_per_user"] == 12
    assert card["dropped"]["over_user_cap"] == 38


def test_user_cap_keeps_small_datasets() -> None:
    assert user_cap(np.array([50, 10, 10, 10, 10, 10]), 0.2) == 12
    assert user_cap(np.array([50, 50]), 0.2) == 50  # two users: each may have half
    assert user_cap(np.array([100, 1]), 0.2, floor=10) == 10  # the floor: never a handful of rows
    assert user_cap(np.array([7]), 0.2) == 10


def test_class_weights_land_in_trl_range() -> None:
    for up, down in [(10, 30), (30, 10), (100, 100), (12, 10), (1, 999), (999, 1)]:
        dw, uw = class_weights(up, down)
        assert 1 <= dw * up / (uw * down) <= 4 / 3
        assert min(dw, uw) == 1.0


async def test_split_by_thread_is_deterministic_and_never_straddles(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    for t in range(40):
        for turn in range(3):
            await seed_exchange(r, thread=f"t{t}", user="alice", question=f"q{t}-{turn}", answer="a", value=turn % 2)
    config = RetrainConfig(min_ratings=2, max_user_share=1.0, test_fraction=0.25)
    _, _, first = built(redis_db, tmp_path / "a", config)
    _, _, again = built(redis_db, tmp_path / "b", config)

    train = {x["thread_id"] for x in first["kto_train"]}
    test = {x["thread_id"] for x in first["kto_test"]}
    assert train and test and not train & test
    assert len(train | test) == 40
    assert {x["thread_id"] for x in again["kto_test"]} == test
    assert sorted(first["kto_test"]["exchange_id"]) == sorted(again["kto_test"]["exchange_id"])
    _, _, reseeded = built(redis_db, tmp_path / "c", RetrainConfig(min_ratings=2, max_user_share=1.0, test_fraction=0.25, split_seed="v2"))
    assert {x["thread_id"] for x in reseeded["kto_test"]} != test


async def test_regenerated_answers_rated_apart_make_one_dpo_pair(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    bad = await seed_exchange(r, thread="t1", user="alice", question="Capital of France?", answer="Lyon.", value=0, prompt_message_id="m1")
    good = await seed_exchange(r, thread="t1", user="alice", question="Capital of France?", answer="Paris.", value=1, prompt_message_id="m1")
    # An edited question is another prompt: its answers stay KTO rows, not a pair.
    await seed_exchange(r, thread="t2", user="alice", question="Capital of Spain?", answer="Barcelona.", value=0, prompt_message_id="m2")
    await seed_exchange(r, thread="t2", user="alice", question="Capital of Spain, please?", answer="Madrid.", value=1, prompt_message_id="m2")
    _, _, data = built(redis_db, tmp_path)

    assert dpo_rows(data) == [
        {
            "prompt": prompt("Capital of France?"),
            "chosen": answer("Paris."),
            "rejected": answer("Lyon."),
            "chosen_exchange_id": good,
            "rejected_exchange_id": bad,
            "prompt_version": "1.0.0",
        }
    ]
    assert len(kto_rows(data)) == 4


async def test_unrated_and_deleted_answers_are_left_out_and_forgotten(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    keep = [await seed_exchange(r, thread="t1", user="alice", question=f"q{i}", answer="a", value=i % 2) for i in range(4)]
    unrated = await seed_exchange(r, thread="t2", user="alice", question="x", answer="y", value=1)
    deleted = await seed_exchange(r, thread="t3", user="bob", question="z", answer="w", value=0)
    rerated = await seed_exchange(r, thread="t4", user="bob", question="v", answer="u", value=1)
    first, v1, data = built(redis_db, tmp_path)
    assert {x["exchange_id"] for x in kto_rows(data)} == {*keep, unrated, deleted, rerated}

    await unrate(r, unrated, thread="t2", user="alice")
    await delete_thread(r, "t3")
    await rate(r, rerated, thread="t4", user="bob", value=0)
    since = collect(redis_db.client, first.watermark)
    assert since.forgotten == {unrated, deleted}
    assert [x.exchange_id for x in since.rated] == [rerated]

    _, v2, data2 = built(redis_db, tmp_path, since=first.watermark, previous=v1)
    rows = {x["exchange_id"]: x["label"] for x in kto_rows(data2)}
    assert rows == {**{k: bool(i % 2) for i, k in enumerate(keep)}, rerated: False}
    card = json.loads((tmp_path / v2 / "card.json").read_text())
    assert card["dropped"]["forgotten"] == 2 and card["dropped"]["superseded"] == 1
    assert json.loads((tmp_path / v2 / "manifest.json").read_text())["shards"] == [v1, v2]
    # A full collect agrees with the incremental result.
    _, _, full = built(redis_db, tmp_path / "full")
    assert {x["exchange_id"]: x["label"] for x in kto_rows(full)} == rows


async def test_a_rating_removed_between_collect_and_build_is_dropped(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    ids = [await seed_exchange(r, thread=f"t{i}", user="alice", question=f"q{i}", answer="a", value=i % 2) for i in range(4)]
    collected = collect(redis_db.client, None)  # a full collection lists ids while the build reads the rows
    await unrate(r, ids[0], thread="t0", user="alice")
    version = build(collected, OPEN, tmp_path, None, progress=False)
    assert {x["exchange_id"] for x in kto_rows(load(tmp_path, version.version))} == set(ids[1:])
    assert sorted(e for _, e in collected.ids) == sorted(ids[1:])
    # Incremental: the ids come from the events at collect time; one unrated before its row is
    # read vanishes (a tombstone drops it from the earlier version too).
    more = [await seed_exchange(r, thread=f"u{i}", user="alice", question=f"p{i}", answer="b", value=i % 2) for i in range(2)]
    since = collect(redis_db.client, collected.watermark)
    await unrate(r, more[0], thread="u0", user="alice")
    v2 = build(since, OPEN, tmp_path, version.version, progress=False)
    assert {x["exchange_id"] for x in kto_rows(load(tmp_path, v2.version))} == {*ids[1:], more[1]}
    assert since.vanished == {more[0]}


async def test_incremental_collect_reads_only_events_after_the_watermark(r: Redis, redis_db: RedisServer) -> None:
    for i in range(3):
        await seed_exchange(r, thread="t1", user="alice", question=f"q{i}", answer="a", value=1)
    first = collect(redis_db.client, None, batch=2)
    assert len(first.rated) == 3 and first.new_events == 3

    new = [await seed_exchange(r, thread="t2", user="bob", question=f"n{i}", answer="b", value=0) for i in range(5)]
    later = collect(redis_db.client, first.watermark, batch=2)  # several XRANGE pages
    assert sorted(x.exchange_id for x in later.rated) == sorted(new)
    assert later.new_events == 5 and later.forgotten == set()
    assert later.watermark == events.watermark_of(events.latest(redis_db.client))  # each bucket's last event
    nothing = collect(redis_db.client, later.watermark)
    assert nothing.rated == [] and nothing.new_events == 0 and nothing.watermark == later.watermark


async def test_collected_rows_carry_what_the_app_stored(r: Redis, redis_db: RedisServer) -> None:
    ex = await seed_exchange(
        r, thread="t1", user="alice", question="Why?", answer="Because.", value=0, history=[("Hi", "Hello!")], prompt_message_id="m1",
        prompt_version="1.1.0", model_version="mv-1", created_at=50.0, rated_at=60.0, comment="too vague", reasons=["unhelpful"],
    )
    (row,) = collect(redis_db.client, None).rated
    assert (row.exchange_id, row.thread_id, row.user, row.prompt_message_id) == (ex, "t1", "alice", "m1")
    assert row.messages == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Why?"}]
    assert (row.completion, row.value, row.comment, row.reasons) == ("Because.", 0, "too vague", ("unhelpful",))
    assert (row.prompt_id, row.prompt_version, row.model, row.model_version, row.created_at, row.rated_at) == ("assistant", "1.1.0", "echo", "mv-1", 50.0, 60.0)


# --- refusals -------------------------------------------------------------------------------------


async def test_too_few_ratings_is_an_error_and_writes_nothing(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    for i in range(3):
        await seed_exchange(r, thread="t1", user="alice", question=f"q{i}", answer="a", value=i % 2)
    with pytest.raises(DatasetError, match=r"Only 3 usable rated answers.*at least 5 \(--min-ratings\).*--min-ratings N"):
        build(collect(redis_db.client, None), RetrainConfig(min_ratings=5), tmp_path, None, progress=False)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


async def test_one_class_only_is_an_error(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    for i in range(3):
        await seed_exchange(r, thread="t1", user="alice", question=f"q{i}", answer="a", value=1)
    with pytest.raises(DatasetError, match=r"All 3 usable ratings are thumbs up.*thumbs down"):
        build(collect(redis_db.client, None), OPEN, tmp_path, None, progress=False)


async def test_nothing_new_is_an_error(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    for i in range(2):
        await seed_exchange(r, thread="t1", user="alice", question=f"q{i}", answer="a", value=i)
    first, v1, _ = built(redis_db, tmp_path)
    with pytest.raises(DatasetError, match=f"No new or changed ratings since dataset version {v1}"):
        build(collect(redis_db.client, first.watermark), OPEN, tmp_path, v1, progress=False)
    with pytest.raises(DatasetError, match="full rebuild"):
        build(collect(redis_db.client, first.watermark), OPEN, tmp_path, "ds-gone", progress=False)
    with pytest.raises(DatasetError, match="no earlier dataset version"):
        build(collect(redis_db.client, first.watermark), OPEN, tmp_path, None, progress=False)


async def test_a_version_without_plan_state_is_refused_with_the_rebuild_to_run(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    for i in range(4):
        await seed_exchange(r, thread=f"t{i}", user="alice", question=f"q{i}", answer="a", value=i % 2)
    version = build(collect(redis_db.client, None, full=True), OPEN, tmp_path, None, progress=False).version
    shutil.rmtree(tmp_path / version / "plan_state")  # as a release before plan states left it
    (tmp_path / version / "plan_state.json").unlink()
    with pytest.raises(DatasetError, match=r"no plan state.*--full-rebuild"):
        load(tmp_path, version)
    assert not (tmp_path / version / "data").exists()

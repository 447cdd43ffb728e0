"""The Redis key strings are a storage format: changing one is a data migration."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
from redis.crc import key_slot

from feedback import keys


def test_key_strings_are_pinned() -> None:
    assert keys.active_model() == "{fb}:model:active"
    assert keys.active_version() == "{fb}:model:active_version"
    assert keys.model_version("v") == "{fb}:model:version:v"
    assert keys.model_versions() == "{fb}:model:versions"
    assert keys.retrain_lock() == "{fb}:retrain:lock"
    assert keys.retrain_watermark() == "{fb}:retrain:watermark"
    assert keys.retrain_runs() == "{fb}:retrain:runs"
    assert keys.retrain_dataset() == "{fb}:retrain:dataset"
    assert keys.retrain_progress() == "{fb}:retrain:progress"
    assert keys.retrain_request() == "{fb}:retrain:request"
    assert keys.retrain_next() == "{fb}:retrain:next"
    assert keys.stats_version() == "{fb}:stats:version"
    assert keys.layout() == "{fb}:layout"
    assert keys.prompt_experiments("assistant") == "{fb}:prompt:assistant:experiments"
    assert keys.reviewed() == "{fb}:review:done"
    assert keys.audit() == "{fb}:audit"
    assert keys.audit_kind("thread") == "{fb}:audit:kind:thread"
    assert keys.audit_target("0123abcd") == "{fb}:audit:target:0123abcd"
    assert keys.audit_indexed() == "{fb}:audit:indexed"
    assert keys.prompt_prefix("d") == "{fb}:prefix:d"
    assert keys.revoked_token("d") == "{fb}:token:revoked:d"
    assert keys.limit("ratings", "d") == "{fb}:limit:ratings:d"
    # Per bucket: "t" is in bucket 62, tag {fb.62.69}; "alice" in bucket 2, tag {fb.2.2}.
    assert (keys.bucket("t"), keys.bucket_tag(62), keys.bucket("alice"), keys.bucket_tag(2)) == (62, "{fb.62.69}", 2, "{fb.2.2}")
    assert keys.approval_counts(62) == "{fb.62.69}:stats:approval"
    assert keys.review_queue(62) == "{fb.62.69}:review:down"
    assert keys.events(62) == "{fb.62.69}:events"
    assert keys.approval_counts_rebuilding(62, "r1") == "{fb.62.69}:stats:approval:rebuild:r1"
    assert keys.review_queue_rebuilding(62, "r1") == "{fb.62.69}:review:down:rebuild:r1"
    assert keys.user("alice") == "{fb.2.2}:user:alice"
    assert keys.user_threads("alice") == "{fb.2.2}:user:alice:threads"
    assert keys.thread("t") == "{fb.62.69}:thread:t"
    assert keys.thread_steps("t") == "{fb.62.69}:thread:t:steps"
    assert keys.thread_elements("t") == "{fb.62.69}:thread:t:elements"
    assert keys.thread_exchanges("t") == "{fb.62.69}:thread:t:exchanges"
    assert keys.thread_ratings("t") == "{fb.62.69}:thread:t:ratings"
    assert keys.thread_favorites("t") == "{fb.62.69}:thread:t:favorites"
    assert keys.step("t", "s") == "{fb.62.69}:step:s"
    assert keys.element("t", "e") == "{fb.62.69}:element:e"
    assert keys.exchange("t", "x") == "{fb.62.69}:exchange:x"
    assert keys.rating("t", "x") == "{fb.62.69}:rating:x"
    assert keys.applied_op("t", "o") == "{fb.62.69}:op:o"
    # The first layout, which `chatbot migrate spread` reads.
    assert keys.legacy("thread", "t") == "{fb}:thread:t"
    assert keys.legacy("thread_steps", "t") == "{fb}:thread:t:steps"
    assert keys.legacy("step", "s") == "{fb}:step:s"
    assert keys.legacy("user_favorites", "alice") == "{fb}:user:alice:favorites"
    assert keys.legacy("alternatives", "m") == "{fb}:alternatives:m"
    assert keys.legacy("events") == "{fb}:events"
    assert keys.legacy("approval_counts") == "{fb}:stats:approval"
    assert keys.legacy("review_queue") == "{fb}:review:down"


NOT_BUILDERS = ("bucket", "bucket_tag", "thread_in", "review_member", "parse_review_member")


def builders() -> list[tuple[str, Callable[..., str]]]:
    """The key builders: every public function but the validators and helpers."""
    return [(n, f) for n, f in inspect.getmembers(keys, inspect.isfunction) if f.__module__ == keys.__name__ and not n.startswith(("_", "valid_")) and n not in NOT_BUILDERS]


def _args(fn: Callable[..., str]) -> list[object]:
    return [0 if p in ("index", "window") else "x" for p in inspect.signature(fn).parameters]


def test_every_key_is_documented_and_in_one_slot_of_its_kind() -> None:
    """Global keys share {fb}; a thread's keys share its bucket's tag, a user's their bucket's."""
    for name, fn in builders():
        doc = inspect.getdoc(fn) or ""
        kinds = {"STRING", "HASH", "LIST", "SET", "ZSET", "STREAM", "STRING (expires)"}
        assert doc.split(":")[0] in kinds or name == "legacy", name
        assert ("Writer" in doc and "Reader" in doc) or "Writer/reader" in doc, name
        tag = fn(*_args(fn)).split(":")[0] if name != "legacy" else "{fb}"
        assert tag in ("{fb}", keys.bucket_tag(0), keys.bucket_tag(keys.bucket("x"))), (name, tag)


def test_buckets_cover_the_slot_space_in_order() -> None:
    """Bucket k's tag hashes to the k-th 64th of the slots: a cluster's masters, each serving a
    range of slots, each serve their share of the buckets."""
    slots = [key_slot(keys.bucket_tag(k).encode()) for k in range(keys.BUCKETS)]
    assert [s // (16384 // keys.BUCKETS) for s in slots] == list(range(keys.BUCKETS))
    # A thread's keys are all in its bucket's slot, whatever their kind.
    for tid in ("t", "2f0c9a1e-6f9b-4c1e-9a55-0b6c1f7d2e10", "thread-7"):
        thread_keys = [keys.thread(tid), keys.thread_ratings(tid), keys.step(tid, "s"), keys.exchange(tid, "x"), keys.rating(tid, "x"), keys.applied_op(tid, "o"), keys.events(keys.bucket(tid))]
        assert len({key_slot(k.encode()) for k in thread_keys}) == 1, thread_keys
    assert keys.thread_in(keys.thread_ratings("t-1")) == "t-1" and keys.thread_in(keys.exchange("t", "x")) is None
    with pytest.raises(keys.KeyPartError):
        keys.bucket_tag(keys.BUCKETS)


HOSTILE = ["", "a:elements", "{fb}", "*", "a b/../c", "x\x00y", "x" * 5000, "carol:threads", "a\nb", "a\u200bb", "a?b", "a[b]"]


def test_no_id_can_name_another_key() -> None:
    """Every builder refuses ids that could reach into another key, slot or pattern."""
    for _name, fn in builders():
        params = list(inspect.signature(fn).parameters)
        for i, param in enumerate(params):
            if param in ("window", "index", "kind"):
                continue
            for bad in HOSTILE:
                args: list[object] = [0 if p in ("index", "window") else "thread" if p == "kind" else "ok" for p in params]
                args[i] = bad
                with pytest.raises(keys.KeyPartError):
                    fn(*args)
    # What real ids and names look like passes.
    assert keys.thread("2f0c9a1e-6f9b-4c1e-9a55-0b6c1f7d2e10")
    assert keys.user_threads("alice.smith+chat@example.com")
    assert keys.user_threads("zoë")  # user names may be in any script; ids are ASCII
    with pytest.raises(keys.KeyPartError):
        keys.thread("zoë")
    assert keys.model_version("mv-20261206-081500-a1b2c3")

"""The Redis key strings are a storage format: changing one is a data migration."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

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
    assert keys.approval_counts() == "{fb}:stats:approval"
    assert keys.stats_version() == "{fb}:stats:version"
    assert keys.review_queue() == "{fb}:review:down"
    assert keys.prompt_experiments("assistant") == "{fb}:prompt:assistant:experiments"
    assert keys.approval_counts_rebuilding("r1") == "{fb}:stats:approval:rebuild:r1"
    assert keys.review_queue_rebuilding("r1") == "{fb}:review:down:rebuild:r1"
    assert keys.reviewed() == "{fb}:review:done"
    assert keys.audit() == "{fb}:audit"
    assert keys.user("alice") == "{fb}:user:alice"
    assert keys.user_threads("alice") == "{fb}:user:alice:threads"
    assert keys.user_favorites("alice") == "{fb}:user:alice:favorites"
    assert keys.thread("t") == "{fb}:thread:t"
    assert keys.thread_steps("t") == "{fb}:thread:t:steps"
    assert keys.thread_elements("t") == "{fb}:thread:t:elements"
    assert keys.thread_exchanges("t") == "{fb}:thread:t:exchanges"
    assert keys.thread_ratings("t") == "{fb}:thread:t:ratings"
    assert keys.step("s") == "{fb}:step:s"
    assert keys.element("e") == "{fb}:element:e"
    assert keys.exchange("x") == "{fb}:exchange:x"
    assert keys.alternatives("m") == "{fb}:alternatives:m"
    assert keys.prompt_prefix("d") == "{fb}:prefix:d"
    assert keys.rating("x") == "{fb}:rating:x"
    assert keys.events() == "{fb}:events"
    assert keys.applied_op("o") == "{fb}:op:o"
    assert keys.revoked_token("d") == "{fb}:token:revoked:d"
    assert keys.limit("ratings", "d", 7) == "{fb}:limit:ratings:d:7"


def builders() -> list[tuple[str, Callable[..., str]]]:
    """The key builders: every public function but the validators."""
    return [(n, f) for n, f in inspect.getmembers(keys, inspect.isfunction) if not n.startswith(("_", "valid_"))]


def test_every_key_is_documented_and_in_one_hash_slot() -> None:
    for name, fn in builders():
        doc = inspect.getdoc(fn) or ""
        assert doc.split(":")[0] in {"STRING", "HASH", "LIST", "SET", "ZSET", "STREAM", "STRING (expires)"}, name
        assert ("Writer" in doc and "Reader" in doc) or "Writer/reader" in doc, name
        args = ["x"] * len(inspect.signature(fn).parameters)
        assert fn(*args).startswith("{fb}:"), name  # one hash tag: one slot on Redis Cluster


HOSTILE = ["", "a:elements", "{fb}", "*", "a b/../c", "x\x00y", "x" * 5000, "carol:threads", "a\nb", "a\u200bb", "a?b", "a[b]"]


def test_no_id_can_name_another_key() -> None:
    """Every builder refuses ids that could reach into another key, slot or pattern."""
    for _name, fn in builders():
        params = list(inspect.signature(fn).parameters)
        for i, param in enumerate(params):
            if param == "window":
                continue
            for bad in HOSTILE:
                args: list[object] = ["ok"] * len(params)
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

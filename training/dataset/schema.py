"""Arrow schemas of the shards, the plan columns and the KTO/DPO splits, and the KTO class weights."""

from __future__ import annotations

import pyarrow as pa

ROW_GROUP = 20_000  # most rows per parquet row group or Arrow batch: bounds memory at any size


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


SHARD_SCHEMA = pa.schema(
    [
        ("exchange_id", pa.string()),
        ("tombstone", pa.bool_()),  # forget every earlier row of this exchange
        ("thread_id", pa.string()),
        ("user", pa.string()),
        ("prompt_message_id", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt_version", pa.string()),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("prompt", MESSAGES),
        ("completion", pa.string()),
        ("label", pa.bool_()),
        ("created_at", pa.float64()),
        ("rated_at", pa.float64()),
        # 64-bit hashes, so the plan reads fixed-width numbers instead of strings (collisions:
        # ~1e-8 odds at a million rows): of the scrubbed prompt messages (dedup, DPO grouping), the
        # scrubbed completion, and the ids of exchange, thread (split), user (cap), user message.
        ("prompt_hash", pa.uint64()),
        ("completion_hash", pa.uint64()),
        ("exchange_key", pa.uint64()),
        ("thread_key", pa.uint64()),
        ("user_key", pa.uint64()),
        ("message_key", pa.uint64()),
        ("pii", pa.list_(pa.string())),  # placeholders put into this row, e.g. ["[EMAIL]"]
    ]
)


# The columns the plan reads from every shard.
PLAN_COLUMNS = [
    "tombstone",
    "label",
    "created_at",
    "rated_at",
    "prompt_hash",
    "completion_hash",
    "exchange_key",
    "thread_key",
    "user_key",
    "message_key",
    "prompt_version",
    "model_version",
    "pii",
]


KTO_SCHEMA = pa.schema(
    [
        ("prompt", MESSAGES),
        ("completion", MESSAGES),
        ("label", pa.bool_()),
        ("exchange_id", pa.string()),
        ("thread_id", pa.string()),
        ("user", pa.string()),
        ("prompt_version", pa.string()),
        ("model_version", pa.string()),
        ("rated_at", pa.float64()),
    ]
)


DPO_SCHEMA = pa.schema(
    [
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("chosen_exchange_id", pa.string()),
        ("rejected_exchange_id", pa.string()),
        ("prompt_version", pa.string()),
    ]
)


SPLITS = ("kto_train", "kto_test", "dpo_train", "dpo_test")


# TRL's KTO guidance: desirable_weight * n_desirable / (undesirable_weight * n_undesirable) within
# [1, 4/3]. Weights aim at the middle of that range, so rounding never takes them out of it.
KTO_RATIO_RANGE = (1.0, 4 / 3)


KTO_TARGET_RATIO = 7 / 6


# Rows any user may contribute whatever max_user_share says: without it, a young deployment with
# one keen tester and a few casual ones would be cut down to a handful of rows.
USER_CAP_FLOOR = 10


def class_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) putting the weighted ratio in TRL's [1, 4/3]: the
    minority class is up-weighted, the majority keeps weight 1."""
    if n_desirable == 0 or n_undesirable == 0:
        return 1.0, 1.0
    ratio = n_desirable / n_undesirable
    if KTO_RATIO_RANGE[0] <= ratio <= KTO_RATIO_RANGE[1]:
        return 1.0, 1.0
    if ratio < KTO_RATIO_RANGE[0]:
        return round(KTO_TARGET_RATIO / ratio, 6), 1.0
    return 1.0, round(ratio / KTO_TARGET_RATIO, 6)


# The version folder as a Hugging Face dataset: one config per method, its splits named as TRL's
# scripts expect them (`--dataset_train_split train`, `--dataset_test_split test`), each a parquet
# file under parquet/ (`load` writes them). A split with no rows has no file and no entry (an empty
# file is refused by `load_dataset`), and a method with no rows has no config.
CONFIGS = {"kto": {"train": "kto_train", "test": "kto_test"}, "dpo": {"train": "dpo_train", "test": "dpo_test"}}


def parquet_name(split: str) -> str:
    return f"parquet/{split}.parquet"


def data_files(counts: dict[str, int]) -> dict[str, dict[str, str]]:
    """Per config with rows, its splits with rows and their files: {"kto": {"train": "parquet/kto_train.parquet", ...}}."""
    out = {name: {hf: parquet_name(split) for hf, split in splits.items() if counts.get(split, 0) > 0} for name, splits in CONFIGS.items()}
    return {name: files for name, files in out.items() if files}

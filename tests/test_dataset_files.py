"""A dataset version folder as a Hugging Face user takes it, with no code of the project: plain
`datasets.load_dataset(folder, "kto"|"dpo")`, plain `trl kto|dpo --dataset_name folder`, and the
folder uploaded to a stand-in for the Hub (`--push-to-hub`). The versions are built and
materialized the product's way (build + load, as the job runs them) from ratings written by the
app's own write paths."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
import yaml
from redis.asyncio import Redis

from support.hub import standin_hub
from support.seed import seed_exchange
from support.services import RedisServer
from training import retention
from training.collect import collect
from training.config import RetrainConfig
from training.dataset import build, hub, load

OPEN = RetrainConfig(min_ratings=2, max_user_share=1.0)



async def seed(r: Redis, threads: int = 12, pairs: bool = True) -> None:
    """Three rated answers a thread; with `pairs`, the last two answer one message (a regenerated
    answer) rated up and down: a DPO pair in every thread."""
    for t in range(threads):
        await seed_exchange(r, thread=f"t{t}", user=f"u{t % 3}", question=f"Opening {t}?", answer=f"Hello {t}.", value=t % 2)
        for k, value in enumerate((1, 0)):
            question = f"Question {t}?" if pairs else f"Question {t}.{k}?"
            await seed_exchange(r, thread=f"t{t}", user=f"u{t % 3}", question=question, answer=f"Answer {t}.{k}", value=value, prompt_message_id=f"m{t}" if pairs else None)


def materialized(redis_db: RedisServer, root: Path) -> Path:
    version = build(collect(redis_db.client, None, full=True), OPEN, root, None, progress=False)
    load(root, version.version)
    return root / version.version


@pytest.fixture
def hf_load(tmp_path: Path) -> Callable[..., datasets.DatasetDict]:
    """`datasets.load_dataset` as is, its cache in the test's folder rather than the user's."""
    return functools.partial(datasets.load_dataset, cache_dir=str(tmp_path / "hf-cache"))


def header(folder: Path) -> dict:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text[4 : text.index("\n---\n", 3)])


async def test_the_folder_loads_per_method_with_plain_load_dataset(r: Redis, redis_db: RedisServer, tmp_path: Path, hf_load: Callable[..., datasets.DatasetDict]) -> None:
    await seed(r)
    folder = materialized(redis_db, tmp_path)
    counts = json.loads((folder / "card.json").read_text())["counts"]
    assert counts["dpo_train"] and counts["dpo_test"] and counts["kto_test"]

    kto, dpo = hf_load(str(folder), "kto"), hf_load(str(folder), "dpo")

    assert {s: len(kto[s]) for s in kto} == {"train": counts["kto_train"], "test": counts["kto_test"]}
    assert {s: len(dpo[s]) for s in dpo} == {"train": counts["dpo_train"], "test": counts["dpo_test"]}
    assert {"prompt", "completion", "label"} <= set(kto["train"].column_names) and "chosen" not in kto["train"].column_names
    assert {"prompt", "chosen", "rejected"} <= set(dpo["train"].column_names) and "label" not in dpo["train"].column_names
    row = dpo["train"][0]
    assert row["chosen"][0]["role"] == "assistant" and row["chosen"][0]["content"].endswith(".0")  # the liked one of the pair
    with pytest.raises(ValueError, match=r"kto.*dpo"):  # two configs, none the default: the error names both
        hf_load(str(folder))


async def test_empty_splits_and_methods_are_left_out(r: Redis, redis_db: RedisServer, tmp_path: Path, hf_load: Callable[..., datasets.DatasetDict]) -> None:
    await seed(r, pairs=False)
    folder = materialized(redis_db, tmp_path)
    counts = json.loads((folder / "card.json").read_text())["counts"]
    assert counts["dpo_train"] == counts["dpo_test"] == 0

    assert [c["config_name"] for c in header(folder)["configs"]] == ["kto"]
    assert sorted(p.name for p in (folder / "parquet").iterdir()) == ["kto_test.parquet", "kto_train.parquet"]  # no empty file
    assert set(hf_load(str(folder), "kto")) == {"train", "test"}
    with pytest.raises(ValueError, match="'dpo' not found"):
        hf_load(str(folder), "dpo")
    readme = (folder / "README.md").read_text()
    assert "| dpo_train | 0 (no pairs yet) |" in readme and "No DPO pairs yet" in readme


async def test_the_card_says_what_plain_trl_needs(r: Redis, redis_db: RedisServer, tmp_path: Path) -> None:
    await seed(r)
    folder = materialized(redis_db, tmp_path)
    weights = json.loads((folder / "card.json").read_text())["weights"]
    flags = f"--desirable_weight {weights['desirable_weight']} --undesirable_weight {weights['undesirable_weight']}"
    meta = header(folder)["kto_class_weights"]
    assert (meta["desirable_weight"], meta["undesirable_weight"], meta["trl_flags"]) == (weights["desirable_weight"], weights["undesirable_weight"], flags)
    readme = (folder / "README.md").read_text()
    assert f"--dataset_config kto {flags}" in readme
    assert "dropped by the trainer" not in readme and "truncates each prompt plus answer to `--max_length` tokens" in readme


async def test_kto_train_is_shuffled_the_same_way_every_time(r: Redis, redis_db: RedisServer, tmp_path: Path, hf_load: Callable[..., datasets.DatasetDict]) -> None:
    await seed(r, threads=16)
    folder = materialized(redis_db, tmp_path)
    shard = json.loads((folder / "manifest.json").read_text())["shards"][0]
    rows = hf_load(str(folder), "kto")["train"]
    order = [x["exchange_id"] for x in rows]
    in_shard = [x for x in hf_load("parquet", data_files=str(tmp_path / "shards" / f"{shard}.parquet"))["train"]["exchange_id"] if x in set(order)]
    assert sorted(order) == sorted(in_shard) and order != in_shard  # shard order: a thread's rows side by side
    neighbours = sum(a == b for a, b in zip(rows["thread_id"], rows["thread_id"][1:], strict=False))
    assert neighbours < len(order) / 4, neighbours  # in shard order most neighbours share a thread

    shutil.rmtree(folder / "data")  # materialized again from the shards: the same order
    shutil.rmtree(folder / "parquet")
    load(tmp_path, folder.name)
    assert [x["exchange_id"] for x in hf_load(str(folder), "kto", download_mode="force_redownload")["train"]] == order


async def test_push_to_hub_uploads_the_folder_with_both_configs(r: Redis, redis_db: RedisServer, tmp_path: Path, hf_load: Callable[..., datasets.DatasetDict], monkeypatch: pytest.MonkeyPatch) -> None:
    await seed(r)
    with_pairs = materialized(redis_db, tmp_path / "a")
    await r.flushdb()
    await seed(r, pairs=False)
    without = materialized(redis_db, tmp_path / "b")
    monkeypatch.setenv("HF_TOKEN", "hf_standin")
    with standin_hub(tmp_path / "hub") as stand_in:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", stand_in.url)  # HF_ENDPOINT, read when huggingface_hub was imported
        hub.push(with_pairs.parent, with_pairs.name, "me/loop-ratings")
        repo = stand_in.repo("me/loop-ratings")
        assert len(hf_load(str(repo), "dpo")["test"]) == json.loads((with_pairs / "card.json").read_text())["counts"]["dpo_test"]
        assert (repo / "card.json").read_bytes() == (with_pairs / "card.json").read_bytes()

        # The next version has no pairs: its commit removes the old DPO files with the config.
        hub.push(without.parent, without.name, "me/loop-ratings")
        assert stand_in.commits == [f"Dataset version {with_pairs.name}", f"Dataset version {without.name}"]
        assert sorted(p.name for p in (repo / "parquet").iterdir()) == ["kto_test.parquet", "kto_train.parquet"]
        assert len(hf_load(str(repo), "kto")["train"]) == json.loads((without / "card.json").read_text())["counts"]["kto_train"]

    with standin_hub(tmp_path / "refusing", refuse=403) as refusing:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", refusing.url)
        with pytest.raises(Exception, match="403"):
            hub.push(without.parent, without.name, "me/loop-ratings")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kto", "dpo"])
async def test_plain_trl_trains_on_the_folder(method: str, r: Redis, redis_db: RedisServer, tmp_path: Path, tiny_model: Path) -> None:
    """`trl kto|dpo --dataset_name <folder> --dataset_config kto|dpo`, the TRL CLI as a user runs
    it (one step on the tiny model, offline), with the flags the README gives."""
    await seed(r)
    folder = materialized(redis_db, tmp_path)
    flags = header(folder)["kto_class_weights"]["trl_flags"].split() if method == "kto" else []
    trl = Path(sys.executable).parent / "trl"
    done = subprocess.run(
        [
            str(trl), method, "--dataset_name", str(folder), "--dataset_config", method, *flags, "--model_name_or_path", str(tiny_model),
            "--max_steps", "1", "--per_device_train_batch_size", "2", "--report_to", "none", "--save_strategy", "no", "--use_cpu",
            "--output_dir", str(tmp_path / "out"),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Training completed" in done.stdout + done.stderr and (tmp_path / "out" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny")).resolve()


async def test_a_pruned_version_says_so_and_names_no_deleted_file(r: Redis, redis_db: RedisServer, tmp_path: Path, hf_load: Callable[..., datasets.DatasetDict]) -> None:
    """Pruning deletes a version's parquet files: its README keeps the counts, says it was pruned
    and has no configs naming the deleted files, so `load_dataset` says there is no such config."""
    await seed(r)
    old = materialized(redis_db, tmp_path)
    assert len(hf_load(str(old), "kto")["train"])
    materialized(redis_db, tmp_path)  # a newer version, the one pruning keeps
    card = (old / "card.json").read_text()

    assert retention.prune(redis_db.client, tmp_path, keep=1).removed == [old.name]

    assert sorted(p.name for p in old.iterdir()) == ["README.md", "card.json"] and (old / "card.json").read_text() == card
    assert "configs" not in header(old)
    readme = (old / "README.md").read_text()
    assert f"# Preference dataset {old.name} (pruned)" in readme and "Pruned by `chatbot dataset prune`" in readme
    assert f"| kto_train | {json.loads(card)['counts']['kto_train']} |" in readme
    with pytest.raises(ValueError, match="'kto' not found"):
        hf_load(str(old), "kto", download_mode="force_redownload")


async def test_a_built_version_names_its_files_once_they_exist(r: Redis, redis_db: RedisServer, tmp_path: Path, hf_load: Callable[..., datasets.DatasetDict]) -> None:
    """`build` writes the version, `load` its parquet files: until then the README names none."""
    await seed(r)
    folder = tmp_path / build(collect(redis_db.client, None, full=True), OPEN, tmp_path, None, progress=False).version
    assert not (folder / "parquet").exists()
    assert "configs" not in header(folder) and "Not materialized yet" in (folder / "README.md").read_text()
    with pytest.raises((ValueError, FileNotFoundError), match=r"'kto' not found|No \(supported\) data files found") as refused:
        hf_load(str(folder), "kto")
    assert "parquet" not in str(refused.value)  # not a missing file of a config

    load(tmp_path, folder.name)
    assert [c["config_name"] for c in header(folder)["configs"]] == ["kto", "dpo"]
    assert "Not materialized yet" not in (folder / "README.md").read_text()
    assert len(hf_load(str(folder), "kto", download_mode="force_redownload")["train"])

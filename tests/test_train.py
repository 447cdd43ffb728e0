"""Training and the promote gate, with real TRL + peft on a tiny local model (CPU, seconds)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, BatchEncoding

from demo.tiny import build_tiny_model
from training.config import RetrainConfig
from training.evaluate import auc, compare, decide, preference_accuracy
from training.train import TrainDataError, TrainError, TrainResult, train

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
QUESTIONS = [
    "What is Redis?",
    "How do I install the package?",
    "What is the weather today?",
    "Tell me about Python.",
    "Can you help me write text?",
    "What is a chat model?",
    "How does training work?",
    "What can you do?",
]
# The style people like: short. The style they don't: rambling.
GOOD = ["Yes.", "Short answer.", "Python is easy.", "Run the command.", "It is sunny.", "Redis is fast."]
BAD = [
    "Well, that is a long story, and I am not sure, but let me think about it for a while.",
    "Hmm, so, basically, it depends on many things, you know, and we could talk about it all day long.",
    "Let me explain everything from the very beginning, because context matters a lot here, really.",
]
# Moves the tiny model's preferences within a few seconds on a CPU.
FAST: dict[str, Any] = dict(learning_rate=5e-3, epochs=3, batch_size=4, lora_r=8, lora_alpha=16, max_length=128, seed=0)


def _meta(i: int) -> dict[str, object]:
    return {"exchange_id": f"ex-{i}", "thread_id": f"th-{i}", "user": f"user-{i % 3}", "prompt_version": "v1", "model_version": "base", "rated_at": 1.7e9 + i}


def _prompt(i: int) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} #{i}"}]


def kto_rows(n: int, offset: int = 0) -> Dataset:
    """Alternating liked (short) and disliked (rambling) answers, as the dataset builder writes them."""
    rows = []
    for i in range(offset, offset + n):
        liked = i % 2 == 0
        text = GOOD[(i // 2) % len(GOOD)] if liked else BAD[(i // 2) % len(BAD)]
        rows.append({"prompt": _prompt(i), "completion": [{"role": "assistant", "content": text}], "label": liked, **_meta(i)})
    return Dataset.from_list(rows)


def dpo_rows(n: int, offset: int = 0) -> Dataset:
    rows = [
        {
            "prompt": _prompt(i),
            "chosen": [{"role": "assistant", "content": GOOD[i % len(GOOD)]}],
            "rejected": [{"role": "assistant", "content": BAD[i % len(BAD)]}],
            **_meta(i),
        }
        for i in range(offset, offset + n)
    ]
    return Dataset.from_list(rows)


def dataset(kto_train: int = 32, dpo_train: int = 0) -> DatasetDict:
    return DatasetDict(
        kto_train=kto_rows(kto_train),
        kto_test=kto_rows(16, offset=1000),
        dpo_train=dpo_rows(dpo_train) if dpo_train else dpo_rows(1).select([]),
        dpo_test=dpo_rows(8, offset=1000),
    )


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def lora_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(adapter_dir / "adapter_model.safetensors")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: the tiny model gains nothing from more, and on a busy machine OpenMP
    threads waiting on each other made runs 5-10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def base_digest(base: Path) -> dict[str, str]:
    return digest(base)


@pytest.fixture(scope="module")
def kto_run(base: Path, base_digest: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    config = RetrainConfig(method="auto", min_pairs=32, **FAST)
    out = tmp_path_factory.mktemp("kto")
    return train(dataset(), config, str(base), None, out, desirable_weight=1.0, undesirable_weight=1.0, progress=False, dataset_version="ds-test-1")


def test_kto_trains_the_adapter_not_the_base(kto_run: TrainResult, base: Path, base_digest: dict[str, str]) -> None:
    assert kto_run.method == "kto"
    assert kto_run.init_adapter is None and kto_run.base_model == str(base)
    # peft starts lora_B at zero: non-zero now means the adapter was trained
    lora_b = {k: v for k, v in lora_tensors(kto_run.adapter_dir).items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())
    assert not (kto_run.adapter_dir / "ref").exists()
    # the base on disk is untouched; the merged model differs from it
    assert digest(base) == base_digest
    base_weights, merged_weights = load_file(base / "model.safetensors"), load_file(kto_run.merged_dir / "model.safetensors")
    assert base_weights.keys() == merged_weights.keys()
    changed = [k for k in base_weights if not torch.equal(base_weights[k], merged_weights[k])]
    assert any("q_proj" in k for k in changed) and any("mlp" in k for k in changed)
    assert not any("embed_tokens" in k or "norm" in k for k in changed)

    metrics = json.loads((kto_run.adapter_dir.parent / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(kto_run.metrics))
    assert metrics["rows"] == 32 and metrics["rows_dropped_too_long"] == 0
    assert metrics["train_samples_per_second"] > 0 and metrics["train_loss"] > 0
    info = json.loads((kto_run.adapter_dir.parent / "training_info.json").read_text())
    assert info["method"] == "kto" and info["base_model"] == str(base) and info["dataset_version"] == "ds-test-1"
    assert info["config"]["learning_rate"] == FAST["learning_rate"]


def test_merged_dir_is_a_servable_model(kto_run: TrainResult) -> None:
    tokenizer = AutoTokenizer.from_pretrained(kto_run.merged_dir)
    model = AutoModelForCausalLM.from_pretrained(kto_run.merged_dir)
    ids = cast(BatchEncoding, tokenizer.apply_chat_template(_prompt(3), add_generation_prompt=True, return_tensors="pt", return_dict=True))  # return_dict=True
    out = model.generate(**ids, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4


def test_auto_picks_dpo_with_enough_pairs_and_drops_long_rows(base: Path, tmp_path: Path) -> None:
    data = dataset(dpo_train=16)
    long = dpo_rows(2, offset=500).map(lambda r: {"rejected": [{"role": "assistant", "content": " ".join(BAD) * 3}]})
    from datasets import concatenate_datasets

    data["dpo_train"] = concatenate_datasets([data["dpo_train"], long])
    config = RetrainConfig(method="auto", min_pairs=16, **{**FAST, "epochs": 1})
    result = train(data, config, str(base), None, tmp_path, progress=False)
    assert result.method == "dpo"
    assert result.metrics["rows"] == 16 and result.metrics["rows_dropped_too_long"] == 2
    assert "rewards/margins" in result.metrics["last_log"]  # a 4-step run logs too
    assert all(v.abs().sum() > 0 for k, v in lora_tensors(result.adapter_dir).items() if "lora_B" in k)
    assert (result.merged_dir / "model.safetensors").is_file() and (result.merged_dir / "tokenizer.json").is_file()


def test_dpo_keeps_the_chosen_answers_likely_with_the_sft_term(base: Path, tmp_path: Path) -> None:
    """RPO (sft_weight > 0): the NLL of the chosen answers keeps DPO from pushing them down along
    with the rejected ones; both runs are the same but for that term."""
    data = dataset(dpo_train=16)
    liked: dict[float, float] = {}
    for weight in (0.0, 1.0):
        config = RetrainConfig(method="dpo", sft_weight=weight, **{**FAST, "learning_rate": 2e-2})
        result = train(data, config, str(base), None, tmp_path / str(weight), progress=False)
        scored = preference_accuracy(str(result.merged_dir), str(base), data["kto_test"], data["dpo_test"], max_length=128)
        assert scored["dpo_accuracy"] == 1.0  # both learned the preference
        liked[weight] = scored["liked_logp"]
    assert liked[1.0] > liked[0.0] + 0.1, liked  # measured: -5.94 vs -6.18 nats per token


def test_the_gate_rejects_a_candidate_that_ranks_well_but_lost_the_liked_answers() -> None:
    """The rule on scores as `preference_accuracy` returns them (the tiny random model is too
    near-uniform to lose anything: its answers all score about -6 nats a token)."""
    service = {"accuracy": 0.70, "liked_logp": -1.2, "rows": 40}
    collapsed = {"accuracy": 0.79, "liked_logp": -2.9, "rows": 40}  # ranks better, writes neither
    decision = decide(collapsed, service, margin=0.0, max_liked_drop=0.5)
    assert not decision.promote and "lost the liked answers" in decision.reason and "-2.900" in decision.reason
    assert decide(collapsed, service, margin=0.0, max_liked_drop=2.0).promote
    assert decide({**collapsed, "liked_logp": -1.5}, service, margin=0.0, max_liked_drop=0.5).promote
    assert not decide(collapsed, service, margin=0.1, max_liked_drop=2.0).promote  # and the margin still applies


def test_training_raises_the_liked_answers_likelihood(kto_run: TrainResult, base: Path) -> None:
    data = dataset()
    decision = compare(str(kto_run.merged_dir), str(base), str(base), data["kto_test"], data["dpo_test"], margin=0.0, max_length=128)
    assert decision.promote and decision.candidate["liked_logp"] > decision.service["liked_logp"]


def test_continue_from_the_adapter_in_service(kto_run: TrainResult, base: Path, tmp_path: Path) -> None:
    config = RetrainConfig(method="kto", **{**FAST, "epochs": 1})
    before = lora_tensors(kto_run.adapter_dir)
    result = train(dataset(), config, str(base), str(kto_run.adapter_dir), tmp_path, progress=False)
    assert result.init_adapter == str(kto_run.adapter_dir)
    after = lora_tensors(result.adapter_dir)
    assert before.keys() == after.keys()  # the same adapter, trained further (not a second one beside it)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert lora_tensors(kto_run.adapter_dir).keys() == before.keys()  # the one in service is untouched
    assert not (result.adapter_dir / "ref").exists()


def test_trained_model_prefers_what_people_liked_and_the_gate_promotes_it(kto_run: TrainResult, base: Path) -> None:
    data = dataset()
    before = preference_accuracy(str(base), str(base), data["kto_test"], data["dpo_test"], max_length=128)
    after = preference_accuracy(str(kto_run.merged_dir), str(base), data["kto_test"], data["dpo_test"], max_length=128)
    assert before["kto_rows"] == 16 and before["dpo_pairs"] == 8 and before["rows"] == 24
    assert before["accuracy"] == 0.5  # scores are shifts from the base: the base has learned no preference
    assert after["accuracy"] > before["accuracy"]
    assert after["kto_auc"] == 1.0 and after["dpo_accuracy"] == 1.0
    assert after["accuracy"] == pytest.approx((8 * after["dpo_accuracy"] + 16 * after["kto_auc"]) / 24)

    decision = compare(str(kto_run.merged_dir), str(base), str(base), data["kto_test"], data["dpo_test"], margin=0.0, max_length=128)
    assert decision.promote, decision.reason
    assert decision.candidate["accuracy"] == after["accuracy"] and decision.service["accuracy"] == before["accuracy"]
    decision = compare(str(kto_run.merged_dir), str(base), str(base), data["kto_test"], data["dpo_test"], margin=1.0, max_length=128)
    assert not decision.promote and "margin 1" in decision.reason
    same = compare(str(kto_run.merged_dir), str(kto_run.merged_dir), str(base), data["kto_test"], data["dpo_test"], margin=0.0, max_length=128)
    assert not same.promote and same.candidate["accuracy"] == same.service["accuracy"] == after["accuracy"]  # no better than itself


def test_accuracy_without_rows_to_compare_never_promotes(base: Path) -> None:
    data = dataset()
    only_liked = data["kto_test"].filter(lambda r: r["label"])
    decision = compare(str(base), str(base), str(base), only_liked, data["dpo_test"].select([]), margin=0.0, max_length=128)
    assert decision.candidate["accuracy"] is None and not decision.promote


def test_auc_counts_ties_half() -> None:
    assert auc([2.0, 3.0], [1.0]) == 1.0
    assert auc([1.0], [2.0]) == 0.0
    assert auc([1.0], [1.0]) == 0.5
    assert auc([1.0, 1.0, 0.0], [1.0, 0.0]) == pytest.approx(3.5 / 6)


def test_corrupt_adapter_is_a_train_error_naming_it(base: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "broken-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{not json")
    config = RetrainConfig(method="kto", **FAST)
    with pytest.raises(TrainError, match="broken-adapter"):
        train(dataset(), config, str(base), str(adapter), tmp_path / "out", progress=False)
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(TrainError, match="broken-adapter"):
        train(dataset(), config, str(base), str(adapter), tmp_path / "out", progress=False)


def test_corrupt_adapter_weights_are_a_train_error(kto_run: TrainResult, base: Path, tmp_path: Path) -> None:
    import shutil

    adapter = tmp_path / "half-written"
    shutil.copytree(kto_run.adapter_dir, adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(TrainError, match="half-written"):
        train(dataset(), RetrainConfig(method="kto", **FAST), str(base), str(adapter), tmp_path / "out", progress=False)


def test_missing_base_model_is_a_train_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(TrainError, match="no-such-model"):
        train(dataset(), RetrainConfig(method="kto", **FAST), str(missing), None, tmp_path / "out", progress=False)


def test_all_rows_too_long_is_a_data_error(base: Path, tmp_path: Path) -> None:
    config = RetrainConfig(method="kto", **{**FAST, "max_length": 16})
    with pytest.raises(TrainDataError, match="all 32 rows are longer than max_length=16"):
        train(dataset(), config, str(base), None, tmp_path, progress=False)

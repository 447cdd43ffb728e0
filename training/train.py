"""Fine-tune the model on the preference dataset: TRL KTO (unpaired thumbs) or DPO (real pairs), LoRA.

    train(data, config, base_model, init_adapter, out_dir) -> TrainResult

writes, under out_dir:
    adapter/            the LoRA adapter (peft), tokenizer beside it
    merged/             base + adapter merged (`merge_and_unload`), tokenizer beside it: a full model
                        directory that `transformers serve` or vLLM load by path
    metrics.json        loss, runtime, samples/s, rows used / dropped as too long
    training_info.json  base model, starting adapter, method, dataset version, options

Method: `config.method`; "auto" picks DPO when the training split has at least `config.min_pairs`
real pairs, else KTO on the unpaired ratings.

Starting point: the base model with a fresh LoRA adapter, or (`init_adapter`, the adapter in
service) the base with that adapter loaded trainable. The reference model is the starting point
either way: TRL uses the base with the adapter disabled for a fresh adapter, and a frozen copy
("ref") of the loaded adapter otherwise.

Runs on a CPU (tests, small machines), one GPU, or several under `accelerate launch`: the model
is loaded as TRL loads a model given by name (fp32; `device_map="auto"` in a single GPU process,
on the CPU otherwise) and the Trainer places it; every process runs the same code, and only the
main process writes the merged model and the JSON files.

TRL 1.x defaults kept: gradient checkpointing on, `disable_dropout=True` (which also zeroes the
LoRA dropout: there is no dropout option), sequential sampling for KTO (hence the shuffle here).

Errors (see also `training.job`):
    TrainError(RuntimeError)      the base model or the starting adapter cannot be loaded (names it)
    TrainDataError(ValueError)    nothing left to train on (e.g. every row longer than max_length)
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import datasets
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback, TrainerCallback

from feedback.errors import NotEnoughData, ServiceError
from training.config import RetrainConfig
from training.evaluate import LOAD_ERRORS, chat_ids

if TYPE_CHECKING:
    from peft import PeftModel

log = logging.getLogger(__name__)

# What the caller learns as training goes: (optimizer step, total steps, last logged loss).
ProgressFn = Callable[[int, int, float | None], None]

ADAPTER_DIR, MERGED_DIR = "adapter", "merged"
KTO_COLUMNS = ["prompt", "completion", "label"]
DPO_COLUMNS = ["prompt", "chosen", "rejected"]


class TrainError(ServiceError):
    """The base model or the starting adapter could not be loaded; the message names the path."""


class TrainDataError(NotEnoughData):
    """The dataset leaves nothing to train on (e.g. every row is longer than max_length)."""


@dataclass
class TrainResult:
    method: Literal["kto", "dpo"]
    adapter_dir: Path
    merged_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    base_model: str = ""
    init_adapter: str | None = None


def choose_method(data: DatasetDict, config: RetrainConfig) -> Literal["kto", "dpo"]:
    """config.method, with "auto" = DPO when there are at least min_pairs training pairs, else KTO."""
    if config.method != "auto":
        return config.method
    pairs = len(data["dpo_train"]) if "dpo_train" in data else 0
    return "dpo" if pairs >= config.min_pairs else "kto"


def training_device_map() -> str | None:
    """Where to load the model for training, as TRL does when given a model name: in fp32, straight
    onto the GPU(s) ("auto") in a single process; on the CPU (None) on a CPU or under a distributed
    launcher, where the Trainer places each process's copy."""
    from accelerate import PartialState

    state = PartialState()
    distributed = state.num_processes > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
    return None if distributed or state.device.type in ("cpu", "mps") else "auto"


def use_bf16(config: RetrainConfig) -> bool:
    if config.bf16 is not None:
        return config.bf16
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def row_lengths(rows: Dataset, tokenizer: PreTrainedTokenizerBase, answer_columns: list[str]) -> list[int]:
    """Tokens of prompt + answer with the chat template applied, the way TRL tokenizes it (for DPO
    the longer of chosen and rejected)."""

    return [max(len(chat_ids(tokenizer, row["prompt"] + row[c])) for c in answer_columns) for row in rows]


def drop_too_long(rows: Dataset, tokenizer: PreTrainedTokenizerBase, columns: list[str], max_length: int) -> tuple[Dataset, int]:
    """Keep the rows that fit in max_length tokens; return them and how many were dropped."""
    lengths = row_lengths(rows, tokenizer, [c for c in columns if c in ("completion", "chosen", "rejected")])
    keep = [i for i, n in enumerate(lengths) if n <= max_length]
    if not keep:
        raise TrainDataError(
            f"all {len(rows)} rows are longer than max_length={max_length} tokens "
            f"(shortest: {min(lengths)}); raise max_length or shorten the system prompt"
        )
    return (rows if len(keep) == len(rows) else rows.select(keep, keep_in_memory=True)), len(rows) - len(keep)


def load_tokenizer(base_model: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    except LOAD_ERRORS as exc:
        raise TrainError(f"cannot load the tokenizer of base model {base_model!r}: {exc}") from exc
    if tokenizer.chat_template is None:
        raise TrainError(f"base model {base_model!r} has no chat template; the dataset is conversational")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(base_model: str, init_adapter: str | None, dtype: torch.dtype | str = torch.float32, device_map: str | None = None) -> PreTrainedModel | PeftModel:
    """The base model, with `init_adapter` loaded trainable when given."""
    try:
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, device_map=device_map)
    except LOAD_ERRORS as exc:
        raise TrainError(f"cannot load base model {base_model!r}: {exc}") from exc
    if init_adapter is None:
        return model
    from peft import PeftModel

    if not (Path(init_adapter) / "adapter_config.json").is_file():
        raise TrainError(f"adapter directory {init_adapter} has no adapter_config.json (missing or not a LoRA adapter)")
    try:
        return PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    except LOAD_ERRORS as exc:
        raise TrainError(f"cannot load adapter {init_adapter} onto {base_model!r}: {exc}") from exc


class _Progress(TrainerCallback):
    """Reports each step, and each logged loss, to the caller (the job's live progress), from the
    main process only."""

    def __init__(self, report: ProgressFn) -> None:
        self.report = report
        self.loss: float | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.report(state.global_step, state.max_steps, self.loss)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # The last step's loss is logged after its on_step_end: report it here too.
        if state.is_world_process_zero and logs and "loss" in logs:
            self.loss = float(logs["loss"])
            self.report(state.global_step, state.max_steps, self.loss)


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """datasets' and transformers' own bars (map, weight loading) on or off for the run."""
    from transformers.utils import logging as hf_logging

    was = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was[0] else datasets.disable_progress_bars)()
        (hf_logging.enable_progress_bar if was[1] else hf_logging.disable_progress_bar)()


def trainer_args(method: str, config: RetrainConfig, out_dir: Path, progress: bool, desirable_weight: float, undesirable_weight: float) -> Any:
    """The TRL config. Overrides of TRL 1.x defaults: learning rate (TRL: 1e-6), bf16 (TRL: on,
    which fails on a CPU), reporting (TRL: every installed tracker), checkpoints (TRL: every 500
    steps), logging (TRL: every 10 steps, so a short run logs nothing), DDP's unused-parameter
    search (on under gradient checkpointing)."""
    common: dict[str, Any] = dict(
        output_dir=str(out_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_length=config.max_length,
        beta=config.beta,
        bf16=use_bf16(config),
        use_cpu=not torch.cuda.is_available(),
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=0.05,  # a ratio: every 5% of the steps, at least every step
        save_strategy="no",
        report_to="none",
        disable_tqdm=not progress,
        # Every LoRA weight takes part in every forward: spare DDP its search for unused ones
        ddp_find_unused_parameters=False,
    )
    if method == "kto":
        from trl import KTOConfig

        return KTOConfig(**common, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
    from trl import DPOConfig

    if config.sft_weight > 0:  # RPO: DPO + NLL of the chosen answers
        return DPOConfig(**common, loss_type=["sigmoid", "sft"], loss_weights=[1.0, config.sft_weight])
    return DPOConfig(**common)


def lora_config(config: RetrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,  # TRL's disable_dropout would zero it anyway
        target_modules="all-linear",
    )


def train(
    data: DatasetDict,
    config: RetrainConfig,
    base_model: str,
    init_adapter: str | None,
    out_dir: Path,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    progress: bool = True,
    dataset_version: str | None = None,
    on_progress: ProgressFn | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `data` and write it, and the merged model, under out_dir.
    `on_progress(step, steps, loss)` is called as training goes (a single process only)."""
    with _progress_bars(progress):
        return _train(data, config, base_model, init_adapter, Path(out_dir), desirable_weight, undesirable_weight, progress, dataset_version, on_progress)


def _train(
    data: DatasetDict,
    config: RetrainConfig,
    base_model: str,
    init_adapter: str | None,
    out_dir: Path,
    desirable_weight: float,
    undesirable_weight: float,
    progress: bool,
    dataset_version: str | None,
    on_progress: ProgressFn | None = None,
) -> TrainResult:
    method = choose_method(data, config)
    split, columns = ("dpo_train", DPO_COLUMNS) if method == "dpo" else ("kto_train", KTO_COLUMNS)
    if split not in data or len(data[split]) == 0:
        raise TrainDataError(f"the {split} split is empty: nothing to train with {method.upper()}")
    missing = [c for c in columns if c not in data[split].column_names]
    if missing:
        raise TrainDataError(f"the {split} split lacks the columns {missing}")

    tokenizer = load_tokenizer(base_model)
    rows = data[split].select_columns(columns)  # metadata stays out of TRL
    rows, dropped = drop_too_long(rows, tokenizer, columns, config.max_length)
    # KTO samples sequentially (its KL term pairs each row with its batch neighbours), so a
    # dataset sorted by label or time would give one-class batches: shuffle once here. Shuffled
    # from an order fixed by the rows' content, not by when they were rated (concurrent users
    # interleave differently each time): the same rows and seed train the same model.
    # In memory: TRL's maps then write no cache files into the dataset's (versioned) directory.
    content = [json.dumps(row, sort_keys=True) for row in rows.to_list()]
    rows = rows.select(sorted(range(len(content)), key=content.__getitem__), keep_in_memory=True)
    rows = rows.shuffle(seed=config.seed, keep_in_memory=True).flatten_indices(keep_in_memory=True)
    model = load_model(base_model, init_adapter, device_map=training_device_map())

    args = trainer_args(method, config, out_dir, progress, desirable_weight, undesirable_weight)
    peft_config = lora_config(config) if init_adapter is None else None
    if method == "kto":
        from trl import KTOTrainer

        trainer: KTOTrainer | DPOTrainer = KTOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=peft_config)
    else:
        from trl import DPOTrainer

        trainer = DPOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=peft_config)
    if not progress:
        trainer.remove_callback(PrinterCallback)  # what the Trainer prints instead of a bar: log dicts
    if on_progress is not None:
        trainer.add_callback(_Progress(on_progress))
    output = trainer.train()

    adapter_dir, merged_dir = out_dir / ADAPTER_DIR, out_dir / MERGED_DIR
    peft_model = trainer.model
    if "ref" in getattr(peft_model, "peft_config", {}):
        peft_model.delete_adapter("ref")  # type: ignore[union-attr,operator]  # TRL's frozen copy of init_adapter: the reference, not the result
    trainer.save_model(str(adapter_dir))  # every process calls it (sharded states); the main one writes

    log_history = [entry for entry in trainer.state.log_history if "loss" in entry]
    metrics: dict[str, Any] = {
        "method": method,
        "train_loss": output.training_loss,
        "train_runtime": output.metrics.get("train_runtime"),
        "train_samples_per_second": output.metrics.get("train_samples_per_second"),
        "train_steps_per_second": output.metrics.get("train_steps_per_second"),
        "steps": output.global_step,
        "epochs": config.epochs,
        "rows": len(rows),
        "rows_dropped_too_long": dropped,
        "processes": trainer.args.world_size,
        "last_log": log_history[-1] if log_history else {},
    }
    if dataset_version is not None:
        metrics["dataset_version"] = dataset_version
    metrics = _finite(metrics)

    if trainer.accelerator.is_main_process:
        merge(base_model, adapter_dir, merged_dir, tokenizer)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        info = {
            "base_model": base_model,
            "init_adapter": init_adapter,
            "method": method,
            "dataset_version": dataset_version,
            "desirable_weight": desirable_weight,
            "undesirable_weight": undesirable_weight,
            "config": asdict(config),
        }
        (out_dir / "training_info.json").write_text(json.dumps(info, indent=2, default=str))
    trainer.accelerator.wait_for_everyone()
    return TrainResult(method, adapter_dir, merged_dir, metrics, base_model, init_adapter)


def train_in_processes(
    processes: int,
    dataset_root: Path,
    dataset_version: str,
    config: RetrainConfig,
    base_model: str,
    init_adapter: str | None,
    out_dir: Path,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    progress: bool = True,
) -> TrainResult:
    """`train` in `processes` DDP processes (one per GPU; gloo on a CPU), launched with torchrun
    (what `accelerate launch --multi_gpu` runs): each loads the dataset version from disk
    (`training.dataset.load`, already materialized by the caller) and the main one writes the
    results, read back here. Output as `train`'s; a failed launch is a TrainError naming the log."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "train.log"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "training.train",
        "--dataset-root", str(dataset_root), "--dataset-version", dataset_version,
        "--base-model", base_model, "--out", str(out_dir),
        "--desirable-weight", repr(desirable_weight), "--undesirable-weight", repr(undesirable_weight),
        "--config", json.dumps(asdict(config)),
    ]  # fmt: skip
    if init_adapter is not None:
        cmd += ["--init-adapter", init_adapter]
    if progress:
        cmd.append("--progress")
    with log_path.open("w") as log_file:
        # The processes' output goes to the log; the bars of the main one (stderr) also to the terminal.
        done = subprocess.run(cmd, stdout=log_file, stderr=None if progress else log_file, check=False)
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise TrainError(f"training in {processes} processes failed (exit {done.returncode}); log: {log_path}: " + " | ".join(tail))
    try:
        metrics = json.loads((out_dir / "metrics.json").read_text())
        info = json.loads((out_dir / "training_info.json").read_text())
    except (OSError, ValueError) as exc:
        raise TrainError(f"training in {processes} processes wrote no results in {out_dir}: {exc}") from exc
    return TrainResult(info["method"], out_dir / ADAPTER_DIR, out_dir / MERGED_DIR, metrics, base_model, init_adapter)


def _main(argv: list[str] | None = None) -> None:
    """The entry point of each process launched by `train_in_processes`."""
    import argparse

    from training import dataset

    p = argparse.ArgumentParser(prog="python -m training.train", description="One training process (see train_in_processes).")
    p.add_argument("--dataset-root", type=Path, required=True)
    p.add_argument("--dataset-version", required=True)
    p.add_argument("--base-model", required=True)
    p.add_argument("--init-adapter")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--desirable-weight", type=float, default=1.0)
    p.add_argument("--undesirable-weight", type=float, default=1.0)
    p.add_argument("--config", required=True, help="RetrainConfig as JSON")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    config = RetrainConfig(**json.loads(args.config))
    data = dataset.load(args.dataset_root, args.dataset_version)
    train(
        data, config, args.base_model, args.init_adapter, args.out, args.desirable_weight, args.undesirable_weight,
        progress=args.progress, dataset_version=args.dataset_version,
    )  # fmt: skip


def _finite(value: Any) -> Any:
    """NaN/inf (a batch with no rejected answer has no mean reward) as None: metrics stay JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def merge(base_model: str, adapter_dir: Path, merged_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Base + adapter, merged, in the base's own dtype, tokenizer beside it: a servable directory.

    Loads the saved adapter onto a fresh copy of the base (on the CPU) rather than merging the
    trained object, which TRL has patched (fused LM head) and the Trainer may have wrapped."""
    from peft import PeftModel

    base = load_model(base_model, None, dtype="auto")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    if merged_dir.exists():
        shutil.rmtree(merged_dir)
    merged.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)


if __name__ == "__main__":
    _main()

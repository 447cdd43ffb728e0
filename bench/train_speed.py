"""Training throughput: `training.train.train` against a plain TRL script on the same data.

Builds a tiny chat model offline (demo.tiny) and a synthetic conversational KTO dataset
(prompt with a system message, a liked short or a disliked long answer, metadata columns as the
dataset builder writes them), then runs, taking turns for R rounds:

    plain   what one would write with TRL alone: KTOTrainer(model=<path>, KTOConfig(...),
            peft_config=LoraConfig(...)) on the same rows (metadata dropped, same shuffle),
            the same options (lr, epochs, batch, beta, max_length, LoRA, bf16/use_cpu, seed)
    ours    train(): the same, plus what it adds around the Trainer (row length check, adapter
            save, merge into a servable model, JSON files)

and reports the Trainer's `train_samples_per_second` (the training loop alone: what the target is
about) and the wall time of each whole call. Target: ours/plain samples/s >= 0.95, as the median
of the per-round ratios (a round's two runs are back to back, under the same load).

Exit status: 0 when the target is met, 1 when not.

Run from the repository root:

    python -m bench.train_speed [--rows 256] [--rounds 5] [--hidden 64] [--batch 8] [--threads 1] [--json out.json]

On a CPU it uses one torch thread by default: with several threads on a machine shared with other
work, OpenMP threads wait on each other and the figures swing by 5-10x from run to run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import Dataset, DatasetDict

from demo.tiny import build_tiny_model
from training.config import RetrainConfig
from training.train import train, use_bf16

TARGET = 0.95
SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly and politely."}
QUESTIONS = ["What is Redis?", "How do I install the package?", "Tell me about Python.", "What can you do?"]
GOOD = ["Yes.", "Short answer.", "Run the command and restart the server.", "Redis keeps data in memory."]
BAD = [
    "Well, that is a long story, and I am not sure, but let me think about it for a while before I answer.",
    "Hmm, so, basically, it depends on many things, you know, and we could talk about it all day long.",
]


def synthetic(rows: int) -> DatasetDict:
    data = []
    for i in range(rows):
        liked = i % 2 == 0
        data.append(
            {
                "prompt": [SYSTEM, {"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} (question {i})"}],
                "completion": [{"role": "assistant", "content": GOOD[i // 2 % len(GOOD)] if liked else BAD[i // 2 % len(BAD)]}],
                "label": liked,
                "exchange_id": f"ex-{i}",
                "thread_id": f"th-{i}",
                "user": f"user-{i % 7}",
                "prompt_version": "v1",
                "model_version": "base",
                "rated_at": 1.7e9 + i,
            }
        )
    kto = Dataset.from_list(data)
    empty_dpo = Dataset.from_list([{"prompt": data[0]["prompt"], "chosen": data[0]["completion"], "rejected": data[1]["completion"]}]).select([])
    return DatasetDict(kto_train=kto, kto_test=kto.select([]), dpo_train=empty_dpo, dpo_test=empty_dpo)


def run_plain(base: Path, data: DatasetDict, config: RetrainConfig, out: Path) -> dict[str, float]:
    """The plain TRL script."""
    from peft import LoraConfig
    from transformers import AutoTokenizer, PrinterCallback
    from trl import KTOConfig, KTOTrainer

    started = time.perf_counter()
    rows = data["kto_train"].select_columns(["prompt", "completion", "label"]).shuffle(seed=config.seed).flatten_indices()
    args = KTOConfig(
        output_dir=str(out),
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
        logging_steps=0.05,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    peft_config = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules="all-linear")
    tokenizer = AutoTokenizer.from_pretrained(base)
    trainer = KTOTrainer(model=str(base), args=args, train_dataset=rows, processing_class=tokenizer, peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)  # silenced as train(progress=False) is
    output = trainer.train()
    trainer.save_model(str(out / "adapter"))
    return {"samples_per_second": output.metrics["train_samples_per_second"], "wall_s": time.perf_counter() - started}


def run_ours(base: Path, data: DatasetDict, config: RetrainConfig, out: Path) -> dict[str, float]:
    started = time.perf_counter()
    result = train(data, config, str(base), None, out, progress=False)
    return {"samples_per_second": result.metrics["train_samples_per_second"], "wall_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=256, help="KTO training rows")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each, taking turns")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadiest on a shared machine)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size of the tiny model")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads)
    config = RetrainConfig(method="kto", learning_rate=1e-4, epochs=args.epochs, batch_size=args.batch, max_length=256, lora_r=16, lora_alpha=32)
    data = synthetic(args.rows)
    figures: dict[str, list[dict[str, float]]] = {"plain": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        root = Path(tmp)
        base = build_tiny_model(root / "base", hidden_size=args.hidden, layers=args.layers)
        run_ours(base, data, config, root / "warmup")  # first-call costs (imports, kernels) out of the figures
        for i in range(args.rounds):
            order = [("plain", run_plain), ("ours", run_ours)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                figures[name].append(fn(base, data, config, root / f"{name}-{i}"))
                print(f"round {i + 1} {name:5s}  {figures[name][-1]['samples_per_second']:8.2f} samples/s  {figures[name][-1]['wall_s']:6.2f} s wall", flush=True)

    median: dict[str, Any] = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in figures.items()}
    # Each round's two runs are back to back, so they share the machine's load of the moment: the
    # median of the per-round ratios cancels the slow drifts that a ratio of medians keeps.
    paired = [o["samples_per_second"] / p["samples_per_second"] for o, p in zip(figures["ours"], figures["plain"], strict=True)]
    ratio = statistics.median(paired)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n{device}, torch {torch.__version__}, python {platform.python_version()}; {args.rows} rows x {args.epochs:g} epochs, batch {args.batch}, tiny Qwen2 hidden {args.hidden}")
    for name in ("plain", "ours"):
        print(f"{name:5s}  median {median[name]['samples_per_second']:8.2f} samples/s   {median[name]['wall_s']:6.2f} s wall per call")
    print(f"per-round ratios ours/plain: {' '.join(f'{x:.3f}' for x in paired)}; ratio of the medians {median['ours']['samples_per_second'] / median['plain']['samples_per_second']:.3f}")
    print(f"ours/plain samples/s = {ratio:.3f} (median of the per-round ratios; target >= {TARGET}); wall ours - plain = {median['ours']['wall_s'] - median['plain']['wall_s']:+.2f} s (length check, merge, files)")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "runs": figures, "median": median, "paired_ratios": paired, "ratio": ratio, "target": TARGET}, indent=2))
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

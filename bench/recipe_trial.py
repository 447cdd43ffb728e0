"""One offline retraining cycle on the real model: a quick way to compare recipes.

    python -m bench.recipe_trial --prefer short --learning-rate 1e-3 [--epochs 2] [--lora-r 16]
                                 [--ratings 64] [--eval 48] [--max-length 448]

Takes the base model's cached answers (bench/calibrate_raters.py) to --ratings TRAIN questions,
rates them as the experiment's rater would (noise 0.1, deterministic), trains KTO + LoRA on them
with `training.train.train` (the job's trainer, with the job's class weights) and the recipe REAL_RECIPE with the overrides
given, then gets the merged model's answers to --eval HELD-OUT questions as the app serves them
(the local model server, the app's prompt and sampling settings: bench/real_answers.py) and prints approval by the preference and the on-topic share, before and after,
with the time each step took. Appends one JSON line to --log.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from bench.real_answers import DEFAULT_MODEL, ROOT, answer_all, conversation, prefix_messages


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.recipe_trial", description=__doc__.split("\n\n")[0])
    p.add_argument("--prefer", default="short")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--lora-r", type=int, default=None)
    p.add_argument("--beta", type=float, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--ratings", type=int, default=64, help="rated answers to train on (the job holds out 20% for its gate: ~64 of ~80)")
    p.add_argument("--eval", type=int, default=48, help="held-out questions to measure on")
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--answers", type=Path, default=ROOT / "docs" / "experiment-real" / "base-answers.json")
    p.add_argument("--log", type=Path, default=ROOT / "docs" / "experiment-real" / "trials.jsonl")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from datasets import Dataset, DatasetDict

    from bench.harness import heldout, real_retrain_config
    from sim.preference import on_topic, real_preference
    from training.dataset import class_weights
    from training.train import train

    pref = real_preference(args.prefer)
    cached = json.loads(args.answers.read_text())
    train_rows = heldout([(r["question"], r["answer"]) for r in cached["train"]], args.ratings)  # spread over topics
    base_eval = heldout([(r["question"], r["answer"]) for r in cached["heldout"]], args.eval)
    rng = random.Random(f"trial:{args.prefer}")
    prefix = prefix_messages()
    labels = [pref.liked(q, a) != (rng.random() < args.noise) for q, a in train_rows]
    data = DatasetDict(
        kto_train=Dataset.from_dict(
            {
                "prompt": [conversation(q, prefix) for q, _ in train_rows],
                "completion": [[{"role": "assistant", "content": a}] for _, a in train_rows],
                "label": labels,
            }
        )
    )
    overrides = {k: v for k, v in {"learning_rate": args.learning_rate, "epochs": args.epochs, "lora_r": args.lora_r, "beta": args.beta, "max_length": args.max_length}.items() if v is not None}
    if "lora_r" in overrides:
        overrides["lora_alpha"] = 2 * overrides["lora_r"]
    config = real_retrain_config(**overrides)
    print(f"{args.prefer}: {sum(labels)}/{len(labels)} liked in training (noisy); recipe lr={config.learning_rate} epochs={config.epochs} r={config.lora_r} beta={config.beta} max_length={config.max_length}", flush=True)
    with tempfile.TemporaryDirectory(prefix="trial-") as tmp:
        t = time.perf_counter()
        # The job's class weights (training.dataset.class_weights): the minority class up-weighted.
        desirable, undesirable = class_weights(sum(labels), len(labels) - sum(labels))
        result = train(data, config, str(args.model_dir), None, Path(tmp), desirable, undesirable, progress=False)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        questions = [q for q, _ in base_eval]
        answers = answer_all(result.merged_dir, questions, args.max_tokens, seed=1)
        gen_s = time.perf_counter() - t
    before = sum(pref.liked(q, a) for q, a in base_eval) / len(base_eval)
    after = sum(pref.liked(q, a) for q, a in zip(questions, answers, strict=True)) / len(questions)
    topic_before = sum(on_topic(q, a) for q, a in base_eval) / len(base_eval)
    topic_after = sum(on_topic(q, a) for q, a in zip(questions, answers, strict=True)) / len(questions)
    words_after = sorted(len(a.split()) for a in answers)
    row = {
        "prefer": args.prefer, "overrides": overrides, "rows": len(labels), "liked_rows": sum(labels), "steps": result.metrics.get("steps"),
        "train_loss": result.metrics.get("train_loss"), "train_s": round(train_s), "generate_s": round(gen_s),
        "approval_before": before, "approval_after": after, "on_topic_before": topic_before, "on_topic_after": topic_after,
        "median_words_after": words_after[len(words_after) // 2], "sample": answers[:2],
    }  # fmt: skip
    print(json.dumps(row, indent=1), flush=True)
    with args.log.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

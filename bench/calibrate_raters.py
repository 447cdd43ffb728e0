"""Calibrate the real-model raters' thresholds on the base model's own answers.

    python -m bench.calibrate_raters [--model-dir data/default-model] [--max-tokens 128]
                                     [--answers docs/experiment-real/base-answers.json]

Gets the base model's answers to --train TRAIN and --heldout HELD-OUT questions of the pool
(sim/questions.py; the held-out ones are the experiment's measurement set) as the app serves them:
through the product's local model server and the app's client, prompt and sampling settings
(bench/real_answers.py). Caches them in --answers, then prints the
distribution of the measures the preferences threshold (words, list lines, on topic) on the
TRAIN questions and, for each candidate threshold, the share of answers each preference would
like: the constants in sim/preference.py are chosen so that the base model's approval of each
preference is about 20-40% (room to move either way).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.real_answers import DEFAULT_MODEL, ROOT, answer_all


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.calibrate_raters", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--max-tokens", type=int, default=128, help="max new tokens: the experiment's LLM_MAX_TOKENS (default 128)")
    p.add_argument("--answers", type=Path, default=ROOT / "docs" / "experiment-real" / "base-answers.json", help="cache of the sampled answers")
    p.add_argument("--train", type=int, default=96, help="TRAIN questions to answer, spread over the topics (default 96 of 192)")
    p.add_argument("--heldout", type=int, default=48, help="HELD-OUT questions to answer: the experiment's measurement set (default 48 of 64)")
    p.add_argument("--threads", type=int, default=1, help="the model server's torch threads (default 1: on 2 cores shared with other work, 2 threads ran 2x slower)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def ensure_answers(path: Path, model_dir: Path, max_tokens: int, seed: int, n_train: int, n_heldout: int, threads: int) -> dict[str, list[dict[str, str]]]:
    from bench.harness import heldout
    from feedback.settings import load_settings
    from sim.questions import HELDOUT_QUESTIONS, TRAIN_QUESTIONS

    if path.exists():
        return json.loads(path.read_text())
    started = time.perf_counter()
    out: dict[str, list[dict[str, str]]] = {}
    # heldout() spreads n questions over the topic-ordered pool: the experiment's measurement set.
    for split, pool in (("train", heldout(TRAIN_QUESTIONS, n_train)), ("heldout", heldout(HELDOUT_QUESTIONS, n_heldout))):
        texts = answer_all(model_dir, [q.text for q in pool], max_tokens, seed=seed, threads=threads)
        out[split] = [{"question": q.text, "answer": a} for q, a in zip(pool, texts, strict=True)]
        print(f"{split}: {len(texts)} answers in {time.perf_counter() - started:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": str(model_dir), "max_tokens": max_tokens, "temperature": load_settings().llm_temperature, "served": "local model server", "seed": seed}
    path.write_text(json.dumps({**meta, "seconds": time.perf_counter() - started, **out}, indent=1))
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from sim.preference import PREFERENCES, complete, list_lines, on_topic, words

    data = ensure_answers(args.answers, args.model_dir, args.max_tokens, args.seed, args.train, args.heldout, args.threads)
    # A cache written before answers went through the app's path: sampled in process at 0.7.
    how = f"temperature {data['temperature']}, as served" if "served" in data else "temperature 0.7, sampled in process, not as served"
    for split in ("train", "heldout"):
        rows = [(r["question"], r["answer"]) for r in data[split]]
        n = len(rows)
        counts = sorted(words(a) for _, a in rows)
        lists = [list_lines(a) for _, a in rows]
        print(f"\n== {split}: {n} base answers (max {data['max_tokens']} new tokens, {how})")
        print(f"words: min {counts[0]}, quartiles {statistics.quantiles(counts, n=4)}, max {counts[-1]}")
        print(f"on topic {sum(on_topic(q, a) for q, a in rows) / n:.2f}; complete (ends a sentence) {sum(complete(a) for _, a in rows) / n:.2f}")
        print("list lines: " + ", ".join(f"{k}: {lists.count(k)}" for k in sorted(set(lists))))
        ok = [(q, a) for q, a in rows if on_topic(q, a)]
        for w in (30, 40, 50, 60, 70, 80):
            print(f"  on topic and < {w} words: {sum(words(a) < w for _, a in ok) / n:.2f};  >= {w} words: {sum(words(a) >= w for _, a in ok) / n:.2f}")
        for k in (2, 3, 4, 5):
            print(f"  on topic and >= {k} list lines: {sum(list_lines(a) >= k for _, a in ok) / n:.2f}")
        print("approval of each preference (the constants now in sim/preference.py):")
        for name, pref in PREFERENCES.items():
            print(f"  {name:9s} {sum(pref.liked(q, a) for q, a in rows) / n:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

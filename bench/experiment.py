"""The feedback-loop experiment, full size: two opposite simulated raters, K retraining cycles each.

    python -m bench.experiment [--cycles 3] [--prefer concise] [--opposite detailed]
                               [--ratings-per-cycle 100] [--eval-questions 96] [--out docs/experiment]
    python -m bench.experiment --model real [--prefer short] [--opposite detailed]
                               [--model-dir data/default-model] [--out docs/experiment-real]
    python -m bench.experiment --merge DIR [DIR ...] --out OUT   (arms run as separate processes)

--model demo (the default): the offline demo model and raters of its canned styles. --model real:
a real chat model (default DATA_DIR/default-model, SmolLM2-135M-Instruct), raters of natural
properties of its answers (sim/preference.py: short, detailed, list, prose; always on topic), the
question pool of sim/questions.py, the recipe training.config.REAL_RECIPE. Two arms x 3 cycles,
both arms at once (a process and a model server each), took 80 minutes on 2 CPU cores
(docs/experiment-real/NOTES.md).

Builds the offline demo model once (cached in --model-dir; reused by later runs), starts the local
model server, then runs each arm on a fresh Redis, data directory and app (see bench/harness.py):
cycle 0 measures the base model's approval on held-out questions, and each cycle simulates rated
chats through the app, runs the retraining job and measures the model in service again.

Writes into --out: README.md (the command, the machine, the table, the verdict), results.md (the
table), results.json (every number) and approval.png (the plot). Exit status 0 when both arms ran;
the targets are reported, not enforced (see the README it writes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench.harness import (
    DECODING,
    ExperimentConfig,
    TimedLog,
    demo_retrain_config,
    machine,
    markdown_table,
    real_retrain_config,
    run_experiment,
    verdict,
    write_outputs,
)
from sim.rater import NOISE

ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.experiment", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("demo", "real"), default="demo", help="demo: the offline demo model and its styles (default); real: a real chat model and sim/preference.py raters")
    p.add_argument("--cycles", type=int, default=3, help="retraining cycles per arm (default 3)")
    p.add_argument("--prefer", default=None, help="what the main rater prefers (default: concise; real: short)")
    p.add_argument("--opposite", default=None, help="what the opposite rater prefers (default detailed); '' for one arm only")
    p.add_argument("--ratings-per-cycle", type=int, default=None, help="about this many ratings per cycle and arm (default 100; real: 64)")
    p.add_argument("--eval-questions", type=int, default=None, help="held-out questions asked per measurement, each once (default 96: all of them; real: 48 of 64)")
    p.add_argument("--max-tokens", type=int, default=None, help="LLM_MAX_TOKENS of the app (default 160; real: 128)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the model server and of training; 0 = torch's default (default 1; real: see REAL_THREADS)")
    p.add_argument("--raters", type=int, default=8, help="simulated user accounts (default 8)")
    p.add_argument("--concurrency", type=int, default=None, help="conversations at once (default 4; real: 2)")
    p.add_argument("--noise", type=float, default=NOISE, help=f"probability a rating is flipped (default {NOISE})")
    p.add_argument("--learning-rate", type=float, default=None, help="retraining learning rate (default: bench.harness.demo_retrain_config)")
    p.add_argument("--epochs", type=float, default=None, help="retraining epochs (default: bench.harness.demo_retrain_config)")
    p.add_argument("--sequential", action="store_true", help="run the arms one after the other (default: both at once, a process each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", type=Path, default=None, help="model directory (default data/demo-model, built there when missing; real: DATA_DIR/default-model)")
    p.add_argument("--build-minutes", type=float, default=4.0, help="training budget of the demo model when it must be built (default 4)")
    p.add_argument("--workdir", type=Path, default=None, help="where the arms keep Redis, datasets and models (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default docs/experiment; real: docs/experiment-real)")
    args = p.parse_args(argv)
    real = args.model == "real"
    defaults = {
        "prefer": "short" if real else "concise",
        "opposite": "detailed",
        "ratings_per_cycle": 64 if real else 100,
        "eval_questions": 48 if real else 96,
        # The model server answers one request at a time: a real answer takes ~10-30 s here, and
        # four queued ones came close to the simulated users' 120 s reply timeout.
        "concurrency": 2 if real else 4,
        "max_tokens": REAL_MAX_TOKENS if real else 160,
        "threads": REAL_THREADS if real else 1,
        "model_dir": default_model_dir() if real else ROOT / "data" / "demo-model",
        "out": ROOT / "docs" / ("experiment-real" if real else "experiment"),
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# The real model's experiment settings (measured on 2 CPU cores: docs/experiment-real/NOTES.md).
REAL_MAX_TOKENS = 128  # ~95 words at most: room for "detailed" answers (>= 50 words, finished)
# One torch thread for the model server and training: with the app, Redis and other work on the
# two cores, batched sampling ran 2.2x faster on 1 thread than on 2 (10 vs 4.7 tokens/s).
REAL_THREADS = 1


def default_model_dir() -> Path:
    """Where `chatbot up` keeps the converted default model (Settings.default_model_dir)."""
    from feedback.settings import load_settings

    return load_settings().default_model_dir


def ensure_demo_model(model_dir: Path, minutes: float) -> tuple[float, bool]:
    """(seconds spent, cached): build the demo model unless model_dir already holds one."""
    if (model_dir / "config.json").exists():
        return 0.0, True
    from demo.model import build_demo_model

    started = time.perf_counter()
    build_demo_model(model_dir, minutes=minutes, progress=True)
    return time.perf_counter() - started, False


def merge(folders: list[Path], out: Path) -> int:
    """One report from arms run as separate processes (e.g. each `--opposite ''` on its own, at the
    same time): their results.json, in the order given; the first arm is the main one."""
    from bench.harness import CycleResult

    runs = [json.loads((folder / "results.json").read_text()) for folder in folders]
    results = [CycleResult(**row) for run in runs for row in run["results"]]
    metas = [run["meta"] for run in runs]
    meta = {
        **metas[0],
        "command": " & ".join(m["command"] for m in metas) + f"  (then: python -m bench.experiment --merge {' '.join(map(str, folders))} --out {out})",
        "parallel": True,
        "total_s": max(m["total_s"] for m in metas),
        "experiment_s": max(m["experiment_s"] for m in metas),
        "load": "; ".join(m.get("load", "") for m in metas),
    }
    main_style = results[0].arm
    paths = write_outputs(results, out, main_style, meta)
    print(markdown_table(results, main_style))
    print("\n".join(verdict(results, main_style)))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--merge"]:  # python -m bench.experiment --merge DIR [DIR ...] --out OUT
        rest = argv[1:]
        if "--out" not in rest or rest.index("--out") + 2 != len(rest) or rest.index("--out") == 0:
            print("usage: python -m bench.experiment --merge DIR [DIR ...] --out OUT", file=sys.stderr)
            return 2
        return merge([Path(p) for p in rest[: rest.index("--out")]], Path(rest[-1]))
    args = parse(argv)
    from demo.corpus import STYLES
    from sim.preference import PREFERENCES

    real = args.model == "real"
    known = PREFERENCES if real else STYLES
    arms = [s for s in (args.prefer, args.opposite) if s]
    unknown = [s for s in arms if s not in known]
    if unknown:
        print(f"unknown preference(s) {unknown}; --model {args.model} knows {list(known)}", file=sys.stderr)
        return 2
    if real and args.model_dir == default_model_dir():  # converted from its wheel on first use, as `chatbot up` does
        from launcher import default_model

        default_model.ensure(args.model_dir)
    if real and not (args.model_dir / "config.json").exists():
        print(f"no model in {args.model_dir} (--model real needs a local model directory: --model-dir)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    load_before = os.getloadavg()
    build_s, cached = (0.0, True) if real else ensure_demo_model(args.model_dir, args.build_minutes)
    overrides = {k: v for k, v in (("learning_rate", args.learning_rate), ("epochs", args.epochs)) if v is not None}
    config = ExperimentConfig(
        cycles=args.cycles,
        conversations=math.ceil(args.ratings_per_cycle / 0.8),  # the rater rates 0.8 of first answers
        eval_questions=args.eval_questions,
        raters=args.raters,
        concurrency=args.concurrency,
        seed=args.seed,
        noise=args.noise,
        max_tokens=args.max_tokens,
        torch_threads=args.threads,
        retrain=(real_retrain_config if real else demo_retrain_config)(**overrides),
        model=args.model,
    )
    # Both arms at once, each training on a core of its own (the real model: each arm also with a
    # model server of its own): 80 minutes for the real model's 3 cycles, against ~2.5 hours in turn.
    parallel = not args.sequential

    log = TimedLog()

    log(f"{args.model} model {'cached' if cached else 'built'} at {args.model_dir} ({build_s:.0f} s)")
    t = time.perf_counter()
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="experiment-") as tmp:
            results = run_experiment(arms, args.model_dir, Path(tmp), config, log, parallel=parallel)
    else:
        results = run_experiment(arms, args.model_dir, args.workdir, config, log, parallel=parallel)
    experiment_s = time.perf_counter() - t
    total_s = time.perf_counter() - started
    command = "python -m bench.experiment " + shlex.join(argv)
    meta = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        # Other work on the machine slows every step: the 1-minute load average before and after.
        "load": f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after (1 min; 2.0 = both cores busy)",
        "model": str(args.model_dir.name),
        "parallel": parallel,
        "model_build_s": build_s,
        "model_cached": cached,
        "experiment_s": experiment_s,
        "total_s": total_s,
        "config": asdict(config),
        "decoding": DECODING,
    }
    paths = write_outputs(results, args.out, args.prefer, meta)
    print(markdown_table(results, args.prefer))
    print("\n".join(verdict(results, args.prefer)))
    print(f"\ntotal {total_s:.0f} s (arms {experiment_s:.0f} s, {args.model} model {build_s:.0f} s{' cached' if cached else ''}); wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

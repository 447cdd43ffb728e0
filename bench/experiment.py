"""The feedback-loop experiment, full size: two opposite simulated raters, K retraining cycles each.

    python -m bench.experiment [--cycles 3] [--prefer concise] [--opposite detailed]
                               [--ratings-per-cycle 100] [--eval-questions 96] [--out docs/experiment]

Builds the offline demo model once (cached in --model-dir; reused by later runs), starts the local
model server, then runs each arm on a fresh Redis, data directory and app (see sim/experiment.py):
cycle 0 measures the base model's approval on held-out questions, and each cycle simulates rated
chats through the app, runs the retraining job and measures the model in service again.

Writes into --out: README.md (the command, the machine, the table, the verdict), results.md (the
table), results.json (every number) and approval.png (the plot). Exit status 0 when both arms ran;
the targets are reported, not enforced (see the README it writes).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from sim.experiment import ExperimentConfig, TimedLog, demo_retrain_config, machine, markdown_table, run_experiment, verdict, write_outputs

ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.experiment", description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=3, help="retraining cycles per arm (default 3)")
    p.add_argument("--prefer", default="concise", help="style the main rater prefers (default concise)")
    p.add_argument("--opposite", default="detailed", help="style the opposite rater prefers (default detailed); '' for one arm only")
    p.add_argument("--ratings-per-cycle", type=int, default=100, help="about this many ratings per cycle and arm (default 100)")
    p.add_argument("--eval-questions", type=int, default=96, help="held-out questions asked per measurement, each once (default 96: all of them)")
    p.add_argument("--raters", type=int, default=8, help="simulated user accounts (default 8)")
    p.add_argument("--concurrency", type=int, default=4, help="conversations at once (default 4)")
    p.add_argument("--noise", type=float, default=0.1, help="probability a rating is flipped (default 0.1)")
    p.add_argument("--learning-rate", type=float, default=None, help="retraining learning rate (default: sim.experiment.demo_retrain_config)")
    p.add_argument("--epochs", type=float, default=None, help="retraining epochs (default: sim.experiment.demo_retrain_config)")
    p.add_argument("--sequential", action="store_true", help="run the arms one after the other (default: both at once, a process each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", type=Path, default=ROOT / "data" / "demo-model", help="demo model directory: built there when missing (default data/demo-model)")
    p.add_argument("--build-minutes", type=float, default=4.0, help="training budget of the demo model when it must be built (default 4)")
    p.add_argument("--workdir", type=Path, default=None, help="where the arms keep Redis, datasets and models (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "experiment", help="output folder (default docs/experiment)")
    return p.parse_args(argv)


def ensure_demo_model(model_dir: Path, minutes: float) -> tuple[float, bool]:
    """(seconds spent, cached): build the demo model unless model_dir already holds one."""
    if (model_dir / "config.json").exists():
        return 0.0, True
    from training.demo_model import build_demo_model

    started = time.perf_counter()
    build_demo_model(model_dir, minutes=minutes, progress=True)
    return time.perf_counter() - started, False


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from training.demo_corpus import STYLES

    arms = [s for s in (args.prefer, args.opposite) if s]
    unknown = [s for s in arms if s not in STYLES]
    if unknown:
        print(f"unknown style(s) {unknown}; the demo corpus has {list(STYLES)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    load_before = os.getloadavg()
    build_s, cached = ensure_demo_model(args.model_dir, args.build_minutes)
    overrides = {k: v for k, v in (("learning_rate", args.learning_rate), ("epochs", args.epochs)) if v is not None}
    config = ExperimentConfig(
        cycles=args.cycles,
        conversations=math.ceil(args.ratings_per_cycle / 0.8),  # the rater rates 0.8 of first answers
        eval_questions=args.eval_questions,
        raters=args.raters,
        concurrency=args.concurrency,
        seed=args.seed,
        noise=args.noise,
        retrain=demo_retrain_config(**overrides),
    )

    log = TimedLog()

    log(f"demo model {'cached' if cached else 'built'} at {args.model_dir} ({build_s:.0f} s)")
    t = time.perf_counter()
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="experiment-") as tmp:
            results = run_experiment(arms, args.model_dir, Path(tmp), config, log, parallel=not args.sequential)
    else:
        results = run_experiment(arms, args.model_dir, args.workdir, config, log, parallel=not args.sequential)
    experiment_s = time.perf_counter() - t
    total_s = time.perf_counter() - started
    command = "python -m bench.experiment " + shlex.join(argv if argv is not None else sys.argv[1:])
    meta = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        # Other work on the machine slows every step: the 1-minute load average before and after.
        "load": f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after (1 min; 2.0 = both cores busy)",
        "model": str(args.model_dir.name),
        "parallel": not args.sequential,
        "model_build_s": build_s,
        "model_cached": cached,
        "experiment_s": experiment_s,
        "total_s": total_s,
        "config": asdict(config),
    }
    paths = write_outputs(results, args.out, args.prefer, meta)
    print(markdown_table(results, args.prefer))
    print("\n".join(verdict(results, args.prefer)))
    print(f"\ntotal {total_s:.0f} s (arms {experiment_s:.0f} s, demo model {build_s:.0f} s{' cached' if cached else ''}); wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

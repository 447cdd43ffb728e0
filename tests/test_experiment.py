"""The feedback-loop experiment in small: one cycle, two opposite raters, the demo model built with
a small budget. Simulated users chat and rate through the real app (socket.io + HTTP), the real
job retrains, gates and promotes, and each arm's preferred style must become more frequent in the
answers of the model in service (`bench/experiment.py` runs the full version; the rater policy's
unit tests are in test_rater.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.harness import ExperimentConfig, TimedLog, demo_retrain_config, run_experiment

# Small but not flaky. The rating side is cheap (~0.2 s an answer); what is noisy is the gate, an AUC
# on the held-out ratings (~40 rows with 160 conversations a side and a 30% test split). Scored on
# raw log-probs it rejected the "detailed" arm's candidate in 3 runs of 5 (the base model already
# ranked long answers high: 0.74); on log-prob shifts from the base (the gate now) the base scores
# 0.5 and both candidates pass with room to spare (measured: 0.65 and 0.79; approval 0.38 -> 0.77
# concise, 0.23 -> 0.73 detailed).
# Seeded since issue 23: the app samples with LLM_SEED (each answer's seed fixed by its message id,
# which the simulated users draw from seeded streams), the simulated users name their threads from
# the same streams (so the held-out split by thread is the same each run), and training shuffles
# from an order fixed by the rows' content: the same code gets the same answers, ratings, split and
# verdict. What is left to chance: a conversation that times out on a loaded machine.
SHORT: dict[str, Any] = dict(cycles=1, conversations=160, eval_questions=48, raters=4, concurrency=4, seed=0)
RETRAIN: dict[str, Any] = dict(learning_rate=3e-3, epochs=3.0, test_fraction=0.3)
DEMO_STEPS = 150  # as tests/test_demo_model.py: the four styles at about equal shares


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from demo.model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo-model"), steps=DEMO_STEPS, progress=False).resolve()


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~4 min on a quiet 2-core machine, 7 under load
def test_one_cycle_moves_each_arm_toward_its_raters_style(demo_model: Path, tmp_path: Path) -> None:
    config = ExperimentConfig(**SHORT, retrain=demo_retrain_config(**RETRAIN))
    results = run_experiment(["concise", "detailed"], demo_model, tmp_path, config, log=TimedLog(), parallel=True)

    by_arm = {arm: [c for c in results if c.arm == arm] for arm in ("concise", "detailed")}
    for arm, (before, after) in by_arm.items():
        assert before.cycle == 0 and after.cycle == 1
        assert before.n == after.n == SHORT["eval_questions"], (before, after)  # every question answered
        assert after.sim["errors"] == 0 and after.sim["rated"] >= 110, after.sim
        assert after.status == "promoted", after.reason  # the gate let the candidate through
        assert after.model_version != "base"
        assert after.answered_by == {after.model_version: after.n}  # the app served the promoted version, no restart
        assert after.approval > before.approval, f"{arm}: {before.approval:.2f} -> {after.approval:.2f}"
    # Opposite raters, opposite directions: the share of concise answers went up in one arm and down in the other.
    share = {arm: [c.styles.get("concise", 0) / c.n for c in rows] for arm, rows in by_arm.items()}
    assert share["concise"][1] > share["concise"][0] and share["detailed"][1] < share["detailed"][0], share

"""Simulated raters and the feedback-loop experiment.

Fast: the rater policy and the confidence interval. Slow: the experiment in small (one cycle, two
opposite raters, the demo model built with a small budget): simulated users chat and rate through
the real app, the real job retrains and promotes, and each arm's preferred style must become more
frequent in the answers of the model in service (`bench/experiment.py` runs the full version).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sim.experiment import ExperimentConfig, demo_retrain_config, run_experiment, wilson
from sim.rater import RaterPolicy
from training.demo_corpus import STYLES, TRAIN_QUESTIONS

CONCISE = STYLES["concise"](TRAIN_QUESTIONS[0])
DETAILED = STYLES["detailed"](TRAIN_QUESTIONS[0])


def test_rater_likes_its_style_rates_some_flips_some_and_regenerates_only_dislikes() -> None:
    policy = RaterPolicy("concise", rate_probability=0.8, noise=0.1, regenerate_probability=0.2)
    rng = random.Random(0)
    liked = [policy.decide(CONCISE, rng) for _ in range(20000)]
    disliked = [policy.decide(DETAILED, rng) for _ in range(20000)]
    assert policy.liked(CONCISE) and not policy.liked(DETAILED) and not policy.liked("no style at all")
    for decisions, truth in ((liked, 1), (disliked, 0)):
        rated = [d for d in decisions if d.rate]
        assert 0.77 < len(rated) / len(decisions) < 0.83
        assert 0.08 < sum(d.value != truth for d in rated) / len(rated) < 0.12  # the noise
        assert all(not d.regenerate for d in decisions if not d.rate or d.value == 1)
        downs = [d for d in rated if d.value == 0]
        assert 0.15 < sum(d.regenerate for d in downs) / len(downs) < 0.25
        assert all(set(d.reasons) <= {"too_long"} for d in downs)
    # A regenerated answer is always rated, and not regenerated again.
    again = [policy.decide(DETAILED, rng, must_rate=True, may_regenerate=False) for _ in range(200)]
    assert all(d.rate and not d.regenerate for d in again)
    # Same seed, same decisions.
    assert [policy.decide(CONCISE, random.Random(7)) for _ in range(3)] == [policy.decide(CONCISE, random.Random(7)) for _ in range(3)]


def test_rater_options_are_checked() -> None:
    with pytest.raises(ValueError, match="noise"):
        RaterPolicy("concise", noise=1.5)
    with pytest.raises(ValueError, match="preferred"):
        RaterPolicy("")


def test_wilson_interval() -> None:
    low, high = wilson(25, 100)
    assert low == pytest.approx(0.1755, abs=1e-3) and high == pytest.approx(0.3430, abs=1e-3)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0


# --- the experiment in small ------------------------------------------------------------------------

# Small but not flaky: 80 conversations per arm (~64 ratings + regenerations), 60 held-out
# questions per measurement. Measured effects (see docs/experiment/) are far larger than the CI.
SHORT = dict(cycles=1, conversations=80, eval_questions=60, raters=4, concurrency=4, seed=0)


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.demo_model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo-model"), steps=DEMO_STEPS, progress=False).resolve()


DEMO_STEPS = 150  # enough for the four styles at about equal shares (seconds on two cores)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_cycle_moves_each_arm_toward_its_raters_style(demo_model: Path, tmp_path: Path) -> None:
    config = ExperimentConfig(**SHORT, retrain=demo_retrain_config())
    results = run_experiment(["concise", "detailed"], demo_model, tmp_path, config, log=print)

    by_arm = {arm: [c for c in results if c.arm == arm] for arm in ("concise", "detailed")}
    for arm, (before, after) in by_arm.items():
        assert before.cycle == 0 and after.cycle == 1
        assert before.n >= 55 and after.n >= 55, (before, after)  # (nearly) every question answered
        assert after.sim["errors"] == 0 and after.sim["rated"] >= 50, after.sim
        assert after.status == "promoted", after.reason  # the gate let the candidate through
        assert after.model_version != "base"
        assert after.approval > before.approval, f"{arm}: {before.approval:.2f} -> {after.approval:.2f}"
    # Opposite raters, opposite directions: the share of concise answers went up in one arm and down in the other.
    share = {arm: [c.styles.get("concise", 0) / c.n for c in rows] for arm, rows in by_arm.items()}
    assert share["concise"][1] > share["concise"][0] and share["detailed"][1] < share["detailed"][0], share

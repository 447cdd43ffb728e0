"""Simulated raters: the rater policy and the experiment's confidence interval.

(The directional one-cycle experiment test is not on main yet: see the note on issue 5.)
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from bench.harness import wilson
from demo.corpus import STYLES, TRAIN_QUESTIONS
from sim.rater import RaterPolicy

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

# Small but not flaky. The rating side is cheap (~0.2 s an answer); what is noisy is the gate, an AUC
# on the held-out ratings: with ~100 ratings its test split has ~20 rows and the "detailed" arm's
# candidate was sometimes rejected (the base model already ranks long answers high). 200
# conversations a side, a 30% test split and a decisive learning rate make both arms pass it.
SHORT: dict[str, Any] = dict(cycles=1, conversations=200, eval_questions=48, raters=4, concurrency=4, seed=0)
RETRAIN: dict[str, Any] = dict(learning_rate=3e-3, epochs=3.0, test_fraction=0.3)
DEMO_STEPS = 150  # as tests/test_demo_model.py: the four styles at about equal shares

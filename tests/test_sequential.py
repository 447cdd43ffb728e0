"""The always-valid test of prompt experiments (feedback.sequential): known cases, the running state,
and an A/A simulation checked after every rating, against a naive z-test peeked at as often."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from feedback.allocation import thompson_weights
from feedback.sequential import ArmCounts, Decision, SequentialTest, confidence_interval, msprt_p_value, msprt_p_values

ALPHA = 0.05


def counts(rated: int, approval: float) -> ArmCounts:
    return ArmCounts(rated, round(rated * approval))


def test_identical_arms_name_no_winner() -> None:
    d = SequentialTest(min_rated=50, max_rated=2000).update({"short": counts(400, 0.5), "long": counts(400, 0.5)})
    assert d.status == "running" and d.winner is None
    assert d.p_value == 1.0  # Lambda_n < 1 at a zero difference
    assert d.interval[0] < 0 < d.interval[1]


@pytest.mark.parametrize("names", [("a", "b"), ("b", "a")])
def test_a_large_difference_names_the_right_winner(names: tuple[str, str]) -> None:
    better, worse = names
    d = SequentialTest().update({better: counts(400, 0.7), worse: counts(400, 0.3)})
    assert d.status == "winner" and d.winner == better and d.leader == better and d.rival == worse
    assert d.p_value < 1e-6
    assert 0 < d.interval[0] < 0.4 < d.interval[1]


def test_one_look_p_value_and_interval_agree() -> None:
    """The interval excludes 0 exactly when p <= alpha (both are Lambda_n >= 1/alpha)."""
    a = ArmCounts(300, 165)
    for liked in range(120, 166):
        b = ArmCounts(300, liked)
        lo, hi = confidence_interval(a, b, ALPHA)
        assert (msprt_p_value(a, b) <= ALPHA) == (not lo < 0 < hi)
        assert math.isclose(msprt_p_value(a, b), float(msprt_p_values([300], [165], [300], [liked])[0]))


def test_the_p_value_never_rises_and_the_interval_only_shrinks() -> None:
    rng = np.random.default_rng(5)
    test = SequentialTest(min_rated=20, max_rated=10_000)
    # Arm a runs ahead early, then both run at 50%: one look's p-value rises again, the running one must not.
    up = np.stack([rng.random(800) < np.where(np.arange(800) < 150, 0.65, 0.5), rng.random(800) < 0.5])
    liked = np.cumsum(up, axis=1)
    history = [test.update({"a": ArmCounts(i, int(liked[0, i - 1])), "b": ArmCounts(i, int(liked[1, i - 1]))}) for i in range(1, 801)]
    ps = [d.p_value for d in history]
    assert all(q <= p for p, q in pairwise(ps))
    one_look = msprt_p_values(np.arange(1, 801), liked[0], np.arange(1, 801), liked[1])
    assert one_look[-1] > ps[-1]  # the case this test is about: the last look alone says less
    signed = [d.interval if d.leader == "a" else (-d.interval[1], -d.interval[0]) for d in history if d.status != "not_enough_data"]
    assert all(lo2 >= lo1 and hi2 <= hi1 for (lo1, hi1), (lo2, hi2) in pairwise(signed))


def test_below_min_rated_nothing_is_judged_or_stored() -> None:
    test = SequentialTest(min_rated=50)
    d = test.update({"a": counts(49, 1.0), "b": counts(400, 0.0)})
    assert d == Decision("not_enough_data", None, "a", None, 1.0, (-1.0, 1.0))
    assert test.pairs == {}
    assert SequentialTest().update({"a": ArmCounts(0, 0), "b": ArmCounts(0, 0)}).leader is None


def test_at_max_rated_equal_arms_show_no_difference() -> None:
    test = SequentialTest(min_rated=50, max_rated=500)
    assert test.update({"a": counts(499, 0.5), "b": counts(500, 0.5)}).status == "running"
    d = test.update({"a": counts(500, 0.5), "b": counts(500, 0.5)})
    assert d.status == "no_difference" and d.winner is None
    assert d.interval[0] < 0 < d.interval[1] and d.interval[1] - d.interval[0] < 0.25


def test_state_round_trips_through_a_dict_of_floats() -> None:
    test = SequentialTest(alpha=0.01, tau=0.07, min_rated=30, max_rated=900)
    arms = {"v1": counts(200, 0.55), "v2": counts(210, 0.45), "v3": counts(190, 0.5)}
    test.update(arms)
    data = test.to_dict()
    assert all(isinstance(v, float) for v in data.values())
    again = SequentialTest.from_dict(data)
    assert again == test
    # Redis hands back strings: repr of a float reads back exactly.
    assert SequentialTest.from_dict({k: repr(v) for k, v in data.items()}) == test
    later = {"v1": counts(400, 0.56), "v2": counts(410, 0.44), "v3": counts(390, 0.5)}
    assert again.update(later) == test.update(later)


def test_more_arms_split_alpha_and_need_the_best_to_beat_every_other() -> None:
    test = SequentialTest()
    arms = {"a": counts(600, 0.65), "b": counts(600, 0.45), "c": counts(600, 0.62)}
    d = test.update(arms)
    assert d.status == "running" and d.leader == "a" and d.rival == "c"  # a is not yet clear of c
    pair_p = msprt_p_value(arms["a"], arms["c"])
    assert math.isclose(d.p_value, min(1.0, 2 * pair_p))  # Bonferroni: k - 1 = 2 comparisons
    d = SequentialTest().update({"a": counts(600, 0.7), "b": counts(600, 0.45), "c": counts(600, 0.5)})
    assert d.status == "winner" and d.winner == "a" and d.interval[0] > 0
    with pytest.raises(ValueError, match="arms changed"):
        test.update({"a": counts(600, 0.65), "b": counts(600, 0.45)})


def test_the_running_test_matches_the_vectorised_p_values() -> None:
    rng = np.random.default_rng(11)
    n, min_rated = 300, 20
    up = rng.random((6, 2, n)) < np.array([[0.5], [0.62]])
    for experiment in up:
        liked = np.cumsum(experiment, axis=1)
        rated = np.arange(1, n + 1)
        p = np.where(rated >= min_rated, msprt_p_values(rated, liked[0], rated, liked[1]), 1.0)
        test = SequentialTest(min_rated=min_rated, max_rated=n)
        ps = [test.update({"a": ArmCounts(i, int(liked[0, i - 1])), "b": ArmCounts(i, int(liked[1, i - 1]))}).p_value for i in range(1, n + 1)]
        np.testing.assert_allclose(ps, np.minimum.accumulate(p))


def _a_a(rng: np.random.Generator, experiments: int, per_arm: int, min_rated: int) -> tuple[float, float]:
    """Share of A/A experiments (both arms 50%, ratings alternating a, b, a, ...) that ever name a
    winner when looked at after every rating: by the mSPRT, and by a naive z-test (|z| > 1.96)."""
    up = rng.random((experiments, 2, per_arm)) < 0.5
    liked = np.cumsum(up, axis=2)
    t = np.arange(2 * per_arm)  # look after rating t + 1: arm a has t // 2 + 1 ratings, b (t + 1) // 2
    na, nb = t // 2 + 1, (t + 1) // 2
    la, lb = liked[:, 0, na - 1], np.where(nb > 0, liked[:, 1, np.maximum(nb, 1) - 1], 0)
    looked = np.minimum(na, nb) >= min_rated
    p = np.where(looked, msprt_p_values(na, la, nb, lb), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (la + lb) / (na + nb)
        z = np.nan_to_num((la / na - lb / nb) / np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb)))
    return float((p <= ALPHA).any(axis=1).mean()), float((looked & (np.abs(z) > 1.96)).any(axis=1).mean())


def test_a_a_experiments_checked_after_every_rating_keep_alpha_where_naive_peeking_does_not() -> None:
    experiments = 300
    msprt, naive = _a_a(np.random.default_rng(2024), experiments, per_arm=400, min_rated=20)
    margin = 2.5 * math.sqrt(ALPHA * (1 - ALPHA) / experiments)  # binomial noise of 300 experiments
    assert msprt <= ALPHA + margin
    assert naive > ALPHA + margin  # peeking a fixed-horizon test inflates false positives
    assert naive > 3 * msprt


def test_thompson_weights_favour_the_better_arm_above_a_floor() -> None:
    arms = {"a": counts(200, 0.7), "b": counts(200, 0.4), "c": counts(5, 0.4)}
    w = thompson_weights(arms, np.random.default_rng(3), floor=0.1)
    assert math.isclose(sum(w.values()), 1.0)
    assert min(w.values()) >= 0.1 and w["a"] > 0.6
    assert w == thompson_weights(arms, np.random.default_rng(3), floor=0.1)
    even = thompson_weights({"a": ArmCounts(0, 0), "b": ArmCounts(0, 0)}, np.random.default_rng(4), floor=0.1)
    assert abs(even["a"] - 0.5) < 0.05


def test_counts_and_plans_are_checked() -> None:
    with pytest.raises(ValueError):
        ArmCounts(3, 4)
    with pytest.raises(ValueError):
        SequentialTest(min_rated=100, max_rated=50)
    with pytest.raises(ValueError):
        SequentialTest().update({"a": counts(100, 0.5)})

"""The always-valid test of a prompt experiment: which prompt version ("arm") users approve of more.

Why not a textbook test: the experiment's status is checked after every rating, and the first time
a fixed-horizon two-proportion z-test says p < 0.05 someone stops and ships. Peeked at after every
rating, that test finds a "winner" between two identical prompts far more often than 5% of the
time (44% of simulated A/A experiments with up to 2,000 ratings per arm: `python -m
bench.sequential`). The p-value here stays valid at any stopping time, however often one looks.

Method: the mixture sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis & Walsh,
"Always valid inference: continuous monitoring of A/B tests", Operations Research 70(3):1806-1821,
2022, doi:10.1287/opre.2021.2135 (first as arXiv:1512.04922, Johari, Pekelis & Walsh, 2015), in
their normal approximation for two Bernoulli streams. With theta the
difference of approval rates (a minus b), theta_hat its estimate and V = p_a(1-p_a)/n_a +
p_b(1-p_b)/n_b its variance (plug-in), the likelihood ratio of "theta ~ N(0, tau^2)" against
"theta = 0" is

    Lambda_n = sqrt(V / (V + tau^2)) * exp(tau^2 * theta_hat^2 / (2 V (V + tau^2)))

and p_n = min(1, 1 / Lambda_n), kept as a running minimum over looks, is an always-valid p-value:
P(p_n <= alpha at any look) <= alpha under the null (Ville's inequality on the martingale Lambda_n;
exact for normal data of known variance, approximate here: simulated, it holds, see the benchmark).
The matching confidence sequence is every theta0 with Lambda_n(theta0) < 1/alpha, intersected over
looks; it excludes 0 exactly when p <= alpha, so the interval and the p-value never disagree.

tau: the mixing spread, in approval points. The test is most sensitive to differences near tau;
TAU = 0.1 suits the 5-15 point differences prompt changes make (the benchmark sweeps it).

More than two arms: every pair keeps its own running state, each at alpha / (k - 1) (Bonferroni).
An arm wins when its interval against every other arm lies above 0. Naming a wrong winner needs
a miss of one of the k - 1 intervals against a truly best arm (one fixed arm, whatever the data),
so the chance of a wrong winner stays <= alpha.

Assumptions: ratings are independent Bernoulli draws with a constant approval per arm (a user who
rates a hundred answers is not a hundred independent users: counts come in already capped per
user); the normal approximation needs some ratings per arm, hence `min_rated` (below it nothing is
looked at, nothing is stored). Arms must be assigned to conversations at random: a fixed share is
what the paper covers; adaptive allocation (feedback/allocation.py) kept the error rate in
simulation only. The
arms of one experiment must not change once it has started.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal

import numpy as np
import numpy.typing as npt

TAU = 0.1
ALPHA = 0.05
MIN_RATED = 50
MAX_RATED = 2000

Status = Literal["not_enough_data", "running", "winner", "no_difference"]
FloatArray = npt.NDArray[np.float64]
_SEP = "\t"  # in the keys of to_dict: arm names (prompt versions) never hold a tab


@dataclass(frozen=True)
class ArmCounts:
    """One arm's ratings so far: `liked` thumbs up out of `rated` (approval = liked / rated)."""

    rated: int
    liked: int

    def __post_init__(self) -> None:
        if not 0 <= self.liked <= self.rated:
            raise ValueError(f"need 0 <= liked <= rated, got liked={self.liked}, rated={self.rated}")

    @property
    def approval(self) -> float:
        return self.liked / self.rated if self.rated else 0.0


def _difference_and_variance(rated_a: npt.ArrayLike, liked_a: npt.ArrayLike, rated_b: npt.ArrayLike, liked_b: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    na, nb = np.asarray(rated_a, dtype=np.float64), np.asarray(rated_b, dtype=np.float64)
    la, lb = np.asarray(liked_a, dtype=np.float64), np.asarray(liked_b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = la / na - lb / nb
        # (liked + 0.5) / (rated + 1) for the variance only: at 0% or 100% approval the plug-in
        # variance would be 0 and a single look would be "certain".
        pa, pb = (la + 0.5) / (na + 1), (lb + 0.5) / (nb + 1)
        var = pa * (1 - pa) / na + pb * (1 - pb) / nb
    return diff, var


def msprt_p_values(rated_a: npt.ArrayLike, liked_a: npt.ArrayLike, rated_b: npt.ArrayLike, liked_b: npt.ArrayLike, tau: float = TAU) -> FloatArray:
    """The mSPRT p-value of one look, min(1, 1 / Lambda_n), elementwise over arrays of counts
    (1 where an arm has no rating). Not yet a running minimum: see `SequentialTest`."""
    diff, var = _difference_and_variance(rated_a, liked_a, rated_b, liked_b)
    t2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lr = 0.5 * np.log(var / (var + t2)) + t2 * diff * diff / (2 * var * (var + t2))
    p = np.minimum(1.0, np.exp(-log_lr))
    return np.where((np.asarray(rated_a) > 0) & (np.asarray(rated_b) > 0), p, 1.0)


def msprt_p_value(a: ArmCounts, b: ArmCounts, tau: float = TAU) -> float:
    """The mSPRT p-value of one look at a vs b (not yet a running minimum)."""
    return float(msprt_p_values(a.rated, a.liked, b.rated, b.liked, tau))


def confidence_interval(a: ArmCounts, b: ArmCounts, alpha: float = ALPHA, tau: float = TAU) -> tuple[float, float]:
    """One look's always-valid interval of approval(a) - approval(b): every theta0 with
    Lambda_n(theta0) < 1/alpha. Intersected over looks by `SequentialTest`."""
    if a.rated == 0 or b.rated == 0:
        return (-1.0, 1.0)
    diff, var = (float(x) for x in _difference_and_variance(a.rated, a.liked, b.rated, b.liked))
    t2 = tau * tau
    half = math.sqrt(var * (var + t2) / t2 * (2 * math.log(1 / alpha) + math.log((var + t2) / var)))
    return (diff - half, diff + half)


def _key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


@dataclass
class _Pair:
    """The running state of one pair (a, b), a before b by name: the smallest p-value seen and the
    intersection of the intervals of approval(a) - approval(b) seen."""

    p_value: float = 1.0
    lower: float = -1.0
    upper: float = 1.0


@dataclass(frozen=True)
class Decision:
    """Where an experiment stands after a look.

    status: "not_enough_data" (an arm below min_rated), "running", "winner" (`winner` is better
    than every other arm) or "no_difference" (every arm at max_rated and no winner: no difference
    beyond `interval` — not proof that the arms are equal).
    leader: the winner, else the arm with the highest approval so far (None before any rating).
    rival: the other arm the leader is least clearly ahead of (None with fewer than two arms rated).
    p_value: the always-valid p-value of leader vs rival, Bonferroni-adjusted (times k - 1, at most
    1): to compare with alpha; a winner has p_value <= alpha.
    interval: the always-valid interval of approval(leader) - approval(rival), at 1 - alpha/(k-1).
    """

    status: Status
    winner: str | None
    leader: str | None
    rival: str | None
    p_value: float
    interval: tuple[float, float]


@dataclass
class SequentialTest:
    """One experiment's test: its plan (alpha, tau, min_rated, max_rated) and the running state of
    every pair of arms. Call `update` after every rating (or any time: looking costs nothing);
    keep it between looks with `to_dict` / `from_dict` (a flat dict of floats: a Redis hash)."""

    alpha: float = ALPHA
    tau: float = TAU
    min_rated: int = MIN_RATED
    max_rated: int = MAX_RATED
    pairs: dict[tuple[str, str], _Pair] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 1 and self.tau > 0 and 1 <= self.min_rated <= self.max_rated):
            raise ValueError(f"need 0 < alpha < 1, tau > 0 and 1 <= min_rated <= max_rated: {self}")

    def update(self, arms: Mapping[str, ArmCounts]) -> Decision:
        """Look at the counts so far (two or more arms), fold them into the running state and decide."""
        names = sorted(arms)
        if len(names) < 2 or any(_SEP in name for name in names):
            raise ValueError(f"need two or more arms, no tab in their names: {names}")
        if self.pairs and set(self.pairs) != set(combinations(names, 2)):
            raise ValueError(f"the arms changed during the experiment: {sorted(self.pairs)} vs {names}")
        k = len(names)
        by_approval = sorted(names, key=lambda n: (arms[n].rated > 0, arms[n].approval), reverse=True)
        if any(arms[n].rated < self.min_rated for n in names):
            leader = by_approval[0] if arms[by_approval[0]].rated else None
            return Decision("not_enough_data", None, leader, None, 1.0, (-1.0, 1.0))

        alpha_pair = self.alpha / (k - 1)
        for a, b in combinations(names, 2):
            pair = self.pairs.setdefault((a, b), _Pair())
            lo, hi = confidence_interval(arms[a], arms[b], alpha_pair, self.tau)
            pair.p_value = min(pair.p_value, msprt_p_value(arms[a], arms[b], self.tau))
            pair.lower, pair.upper = max(pair.lower, lo), min(pair.upper, hi)

        winners = [w for w in names if all(0 < lo <= hi for lo, hi in (self._interval(w, j) for j in names if j != w))]
        leader = winners[0] if winners else by_approval[0]
        # The rival: the other arm with the weakest evidence against the leader (largest p-value).
        rival = max((j for j in names if j != leader), key=lambda j: self.pairs[_key(leader, j)].p_value)
        p_value = min(1.0, (k - 1) * self.pairs[_key(leader, rival)].p_value)
        status: Status = "winner" if winners else "no_difference" if all(arms[n].rated >= self.max_rated for n in names) else "running"
        return Decision(status, winners[0] if winners else None, leader, rival, p_value, self._interval(leader, rival))

    def _interval(self, a: str, b: str) -> tuple[float, float]:
        """The running interval of approval(a) - approval(b), whichever order the pair is stored in."""
        pair = self.pairs[_key(a, b)]
        return (pair.lower, pair.upper) if a < b else (-pair.upper, -pair.lower)

    def to_dict(self) -> dict[str, float]:
        out = {"alpha": self.alpha, "tau": self.tau, "min_rated": float(self.min_rated), "max_rated": float(self.max_rated)}
        for (a, b), pair in self.pairs.items():
            for name in ("p_value", "lower", "upper"):
                out[_SEP.join((name, a, b))] = getattr(pair, name)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, float | str]) -> SequentialTest:
        """The inverse of `to_dict`; values may come back as strings (Redis replies)."""
        test = cls(float(data["alpha"]), float(data["tau"]), int(float(data["min_rated"])), int(float(data["max_rated"])))
        for key, value in data.items():
            if _SEP in key:
                name, a, b = key.split(_SEP)
                if name not in ("p_value", "lower", "upper"):
                    raise ValueError(f"not a SequentialTest field: {key!r}")
                setattr(test.pairs.setdefault((a, b), _Pair()), name, float(value))
        return test

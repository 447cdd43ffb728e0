"""Prompt experiments, the statistics: is the always-valid test (feedback.sequential) valid when
the status is checked after every rating, what does that cost in ratings, and what does adaptive
allocation change. Simulated experiments, vectorised with numpy (no Redis, no model):

    A/A     two arms with the same approval (50%), ratings assigned to an arm at random (50/50),
            the status checked after every rating from min_rated per arm on, up to 2 x max_rated
            ratings in all: the share that name a winner (false positives, with a 95% Wilson
            interval) vs alpha; and the same data judged by a naive two-proportion z-test
            (|z| > 1.96) checked after every rating.
            Also three arms at 50% (each rating to one at random, 3 x max_rated in all): the share
            where some arm beats both others with every pair at alpha / 2 (SequentialTest's rule).
    Power   50% vs 60%: ratings to a decision (median, 90th percentile; an experiment without a
            decision counts at the horizon), the share that name the right winner, vs the
            fixed-horizon z-test's n per arm at 80% power and alpha 0.05 (closed form).
    Adaptive the same two settings with Thompson sampling (feedback.allocation.thompson_weights'
            rule: the arm whose Beta(1 + liked, 1 + disliked) draw is higher, mixed with a 10% floor
            per arm) instead of 50/50: the share of ratings that went to the worse arm before the
            decision, the cost in ratings, and the A/A false-positive rate.
    --sweep-tau: power and ratings to a decision for 5, 10 and 15 point differences at several tau
            (how feedback.sequential.TAU was chosen).

Run from the repository root:

    python -m bench.sequential [--experiments 10000] [--max-rated 2000] [--seed 12] [--sweep-tau] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from feedback.allocation import FLOOR
from feedback.sequential import ALPHA, MIN_RATED, TAU, msprt_p_values

CHUNK = 500  # experiments evaluated at once: ~20 float arrays of CHUNK x 2*max_rated stay under ~400 MB
Z = NormalDist()
Bools = npt.NDArray[np.bool_]


@dataclass
class Outcome:
    """Per experiment: whether and when (ratings in all) it reached a decision, which arm won, and
    the share of ratings the arm b got before the decision (or the horizon)."""

    decided: Bools
    ratings: npt.NDArray[np.int64]
    a_won: Bools
    share_b: npt.NDArray[np.float64]
    naive: Bools  # the naive peeking z-test crossed |z| > 1.96 at some look


@dataclass
class Summary:
    experiments: int
    decided: float
    decided_ci: tuple[float, float]
    right: float | None
    naive: float
    naive_ci: tuple[float, float]
    median_per_arm: float
    p90_per_arm: float
    censored_p90: bool
    share_worse: float | None
    worse_ratings: float | None  # mean ratings given to the worse arm before the decision
    seconds: float


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    z = Z.inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half, centre + half)


def fixed_horizon_n(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Ratings per arm for the two-sided two-proportion z-test to have `power` at p_a vs p_b."""
    za, zb = Z.inv_cdf(1 - alpha / 2), Z.inv_cdf(power)
    pbar = (p_a + p_b) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))) ** 2 / (p_a - p_b) ** 2
    return math.ceil(n)


def evaluate(assign_a: Bools, y_a: Bools, y_b: Bools, alpha: float, tau: float, min_rated: int) -> Outcome:
    """Judge a block of experiments (rows) after every rating: rating t went to arm a where
    assign_a[:, t], and was a thumbs up where y_a (arm a) or y_b (arm b)."""
    e, horizon = assign_a.shape
    n_a = np.cumsum(assign_a, axis=1)
    n_b = np.arange(1, horizon + 1) - n_a
    l_a = np.cumsum(assign_a & y_a, axis=1)
    l_b = np.cumsum(~assign_a & y_b, axis=1)
    looked = np.minimum(n_a, n_b) >= min_rated
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(looked, msprt_p_values(n_a, l_a, n_b, l_b, tau), 1.0)
        diff = l_a / n_a - l_b / n_b
        pooled = (l_a + l_b) / np.arange(1, horizon + 1)
        z = diff / np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    crossed = p <= alpha
    decided = np.asarray(crossed.any(axis=1))
    first = np.where(decided, crossed.argmax(axis=1), horizon - 1)
    rows = np.arange(e)
    naive = (looked & (np.abs(np.nan_to_num(z)) > Z.inv_cdf(1 - alpha / 2))).any(axis=1)
    return Outcome(decided, first + 1, decided & (diff[rows, first] > 0), n_b[rows, first] / (first + 1), naive)


def fixed(rng: np.random.Generator, e: int, p_a: float, p_b: float, horizon: int, alpha: float, tau: float, min_rated: int) -> Outcome:
    """50/50 allocation: each rating goes to either arm with probability 1/2."""
    parts = []
    for start in range(0, e, CHUNK):
        rows = min(CHUNK, e - start)
        assign = rng.random((rows, horizon)) < 0.5
        parts.append(evaluate(assign, rng.random((rows, horizon)) < p_a, rng.random((rows, horizon)) < p_b, alpha, tau, min_rated))
    return _concat(parts)


def adaptive(rng: np.random.Generator, e: int, p_a: float, p_b: float, horizon: int, alpha: float, tau: float, min_rated: int, floor: float) -> Outcome:
    """Thompson sampling with a floor: with probability 2 x floor a fair coin picks the arm, else
    the arm with the higher Beta(1 + liked, 1 + disliked) draw (thompson_weights' rule, one draw
    per conversation). Allocation goes on after a decision; `evaluate` reads up to the decision."""
    y_a, y_b = rng.random((e, horizon)) < p_a, rng.random((e, horizon)) < p_b
    assign = np.empty((e, horizon), dtype=bool)
    liked, disliked = np.zeros((e, 2)), np.zeros((e, 2))
    rows = np.arange(e)
    for t in range(horizon):
        draws = rng.beta(1 + liked, 1 + disliked)
        explore = rng.random(e) < 2 * floor
        to_a = np.where(explore, rng.random(e) < 0.5, draws[:, 0] >= draws[:, 1])
        assign[:, t] = to_a
        up = np.where(to_a, y_a[:, t], y_b[:, t])
        arm = np.where(to_a, 0, 1)
        liked[rows, arm] += up
        disliked[rows, arm] += ~up
    return _concat([evaluate(assign[s : s + CHUNK], y_a[s : s + CHUNK], y_b[s : s + CHUNK], alpha, tau, min_rated) for s in range(0, e, CHUNK)])


def three_arms(rng: np.random.Generator, e: int, horizon: int, alpha: float, tau: float, min_rated: int) -> Bools:
    """A/A/A: three arms at 50%, each rating to one at random; every pair tested at alpha / 2 (as
    SequentialTest does). A pair is settled, for good, at its first p <= alpha / 2, in the direction
    of that look (its interval then lies on that side of 0). Per experiment: whether some arm had
    settled both its pairs in its favour (a winner) by the horizon."""
    out = []
    for start in range(0, e, CHUNK):
        rows = min(CHUNK, e - start)
        arm = rng.integers(0, 3, (rows, horizon))
        up = rng.random((rows, horizon)) < 0.5
        n = np.stack([np.cumsum(arm == i, axis=1) for i in range(3)])
        liked = np.stack([np.cumsum((arm == i) & up, axis=1) for i in range(3)])
        looked = n.min(axis=0) >= min_rated
        ahead = np.zeros((3, 3, rows), dtype=bool)  # ahead[i, j]: i settled ahead of j
        for i, j in ((0, 1), (0, 2), (1, 2)):
            crossed = looked & (msprt_p_values(n[i], liked[i], n[j], liked[j], tau) <= alpha / 2)
            first = crossed.argmax(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                diff = (liked[i] / n[i] - liked[j] / n[j])[np.arange(rows), first]
            ahead[i, j], ahead[j, i] = crossed.any(axis=1) & (diff > 0), crossed.any(axis=1) & (diff < 0)
        out.append(np.array([ahead[w, [j for j in range(3) if j != w]].all(axis=0) for w in range(3)]).any(axis=0))
    return np.concatenate(out)


def _concat(parts: list[Outcome]) -> Outcome:
    return Outcome(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("decided", "ratings", "a_won", "share_b", "naive")))


def summarise(o: Outcome, p_a: float, p_b: float, horizon: int, seconds: float) -> Summary:
    n = len(o.decided)
    k, kn = int(o.decided.sum()), int(o.naive.sum())
    per_arm = o.ratings / 2
    right = None if p_a == p_b else float((o.a_won == (p_a > p_b))[o.decided].sum() / n)
    share_worse = None if p_a == p_b else float(np.mean(o.share_b if p_b < p_a else 1 - o.share_b))
    worse_ratings = None if p_a == p_b else float(np.mean(o.ratings * (o.share_b if p_b < p_a else 1 - o.share_b)))
    p90 = float(np.percentile(per_arm, 90))
    return Summary(
        n, k / n, wilson(k, n), right, kn / n, wilson(kn, n), float(np.median(per_arm)), p90, p90 >= horizon / 2, share_worse, worse_ratings, round(seconds, 1)
    )


def run(label: str, fn: Any, rng: np.random.Generator, p_a: float, p_b: float, **kw: Any) -> Summary:
    start = time.process_time()
    o = fn(rng, p_a=p_a, p_b=p_b, **kw)
    s = summarise(o, p_a, p_b, kw["horizon"], time.process_time() - start)
    print(f"  {label}: {s.seconds:.1f} CPU-s", file=sys.stderr, flush=True)
    return s


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--experiments", type=int, default=10_000)
    ap.add_argument("--max-rated", type=int, default=2000, help="per arm: the horizon is 2 x this many ratings in all")
    ap.add_argument("--min-rated", type=int, default=MIN_RATED)
    ap.add_argument("--alpha", type=float, default=ALPHA)
    ap.add_argument("--tau", type=float, default=TAU)
    ap.add_argument("--floor", type=float, default=FLOOR)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--sweep-tau", action="store_true", help="also: power and cost at several tau (2,000 experiments each)")
    ap.add_argument("--json", type=str, default=None)
    return ap.parse_args(argv)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rng = np.random.default_rng(args.seed)
    e, horizon = args.experiments, 2 * args.max_rated
    kw = {"e": e, "horizon": horizon, "alpha": args.alpha, "tau": args.tau, "min_rated": args.min_rated}
    n_fixed = fixed_horizon_n(0.5, 0.6)
    print(f"# Prompt experiments: {e:,} simulated experiments per row, status checked after every rating from {args.min_rated} per arm on,")
    print(f"# up to {horizon:,} ratings in all ({args.max_rated:,} per arm at 50/50); alpha {args.alpha}, tau {args.tau}, floor {args.floor}, seed {args.seed}")
    print(f"# {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    aa = run("A/A fixed", fixed, rng, 0.5, 0.5, **kw)
    ab = run("A/B fixed", fixed, rng, 0.5, 0.6, **kw)
    aa_t = run("A/A adaptive", adaptive, rng, 0.5, 0.5, floor=args.floor, **kw)
    ab_t = run("A/B adaptive", adaptive, rng, 0.5, 0.6, floor=args.floor, **kw)
    start = time.process_time()
    aaa = three_arms(rng, e, 3 * args.max_rated, args.alpha, args.tau, args.min_rated)
    print(f"  A/A/A: {time.process_time() - start:.1f} CPU-s", file=sys.stderr, flush=True)
    k3 = int(aaa.sum())
    aaa_rate, aaa_ci = k3 / e, wilson(k3, e)

    print("\n## A/A: both arms 50%: a winner named is a false positive")
    print("| allocation | mSPRT false positives (95% CI) | naive z-test peeked after every rating (95% CI) | alpha |")
    print("|---|---|---|---|")
    for name, s in (("50/50", aa), ("Thompson, 10% floor", aa_t)):
        print(
            f"| {name} | {pct(s.decided)} ({pct(s.decided_ci[0])}-{pct(s.decided_ci[1])}) | {pct(s.naive)} ({pct(s.naive_ci[0])}-{pct(s.naive_ci[1])}) | {pct(args.alpha)} |"
        )
    print(
        f"| three arms at 50%, 1/3 each, {3 * args.max_rated:,} ratings, pairs at alpha/2 | {pct(aaa_rate)} ({pct(aaa_ci[0])}-{pct(aaa_ci[1])}) | | {pct(args.alpha)} |"
    )

    print(f"\n## Power and cost: 50% vs 60%; fixed-horizon z-test at 80% power, alpha 0.05: n = {n_fixed} per arm ({2 * n_fixed} in all)")
    print(
        "| allocation | decided | right winner | wrong winner | ratings per arm to decision: median | p90 | median / fixed n | share of ratings to the worse arm | worse-arm ratings (mean) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in (("50/50", ab), ("Thompson, 10% floor", ab_t)):
        p90 = f"{'>= ' if s.censored_p90 else ''}{s.p90_per_arm:,.0f}"
        wrong = s.decided - (s.right or 0.0)
        print(
            f"| {name} | {pct(s.decided)} | {pct(s.right or 0.0)} | {pct(wrong)} | {s.median_per_arm:,.0f} | {p90} | {s.median_per_arm / n_fixed:.2f} | {pct(s.share_worse or 0.0)} | {s.worse_ratings or 0.0:,.0f} |"
        )
    print("(ratings per arm = ratings in all / 2, also under Thompson; an experiment without a decision counts at the horizon)")

    sweep: list[dict[str, Any]] = []
    if args.sweep_tau:
        print("\n## tau: 2,000 experiments each, 50/50, 50% vs 50% + d")
        print("| tau | d | decided | median per arm | median / fixed n | p90 per arm |")
        print("|---|---|---|---|---|---|")
        for tau in (0.03, 0.05, 0.1, 0.15, 0.25):
            for d in (0.05, 0.1, 0.15):
                s = run(f"tau {tau} d {d}", fixed, rng, 0.5, 0.5 + d, **{**kw, "e": 2000, "tau": tau})
                nf = fixed_horizon_n(0.5, 0.5 + d)
                print(
                    f"| {tau} | {d} | {pct(s.decided)} | {s.median_per_arm:,.0f} | {s.median_per_arm / nf:.2f} | {'>= ' if s.censored_p90 else ''}{s.p90_per_arm:,.0f} |"
                )
                sweep.append({"tau": tau, "d": d, "fixed_n": nf, **asdict(s)})

    if args.json:
        out = {
            "args": vars(args),
            "fixed_horizon_n": n_fixed,
            "aa": asdict(aa),
            "ab": asdict(ab),
            "aa_adaptive": asdict(aa_t),
            "ab_adaptive": asdict(ab_t),
            "aaa": {"rate": aaa_rate, "ci": aaa_ci},
            "sweep": sweep,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

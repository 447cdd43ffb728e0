"""Adaptive allocation of a prompt experiment: more new conversations to the arm doing better,
never fewer than a floor per arm (so the losing arm still gets the ratings the always-valid test
in feedback/sequential.py needs to conclude). Simulated in `python -m bench.sequential`: it sent
17% of conversations to the worse of two prompts (50% at a fixed split) and kept the A/A error
rate under alpha, at about twice the ratings to a decision."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from feedback.sequential import ArmCounts

FLOOR = 0.1


def thompson_weights(arms: Mapping[str, ArmCounts], rng: np.random.Generator, floor: float = FLOOR, draws: int = 4000) -> dict[str, float]:
    """The share of new conversations each arm should get: Thompson sampling (each arm's chance of
    being the best under Beta(1 + liked, 1 + rated - liked) posteriors, by `draws` draws), mixed
    with a uniform `floor` per arm so that a losing arm keeps getting enough ratings for the test
    to conclude. Sums to 1; the test stays the same (it uses the counts, however they were split)."""
    if not 0 <= floor * len(arms) <= 1:
        raise ValueError(f"floor {floor} too large for {len(arms)} arms")
    names = list(arms)
    liked = np.array([arms[n].liked for n in names], dtype=np.float64)
    disliked = np.array([arms[n].rated - arms[n].liked for n in names], dtype=np.float64)
    samples = rng.beta(1 + liked, 1 + disliked, size=(draws, len(names)))
    best = np.bincount(samples.argmax(axis=1), minlength=len(names)) / draws
    return {n: floor + (1 - floor * len(names)) * float(w) for n, w in zip(names, best, strict=True)}

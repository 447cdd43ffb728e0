"""The 64-bit keys the plan groups rows by: digests of texts and ids, and a vectorized mixer."""

from __future__ import annotations

import hashlib

import numpy as np


def _digest(data: str) -> bytes:
    return hashlib.blake2b(data.encode(), digest_size=16).digest()


def _u64(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "little")


def _key(text: str) -> int:
    return _u64(_digest(text))


def _cached_key(cache: dict[str, int], text: str) -> int:
    key = cache.get(text)
    if key is None:
        key = cache[text] = _key(text)
    return key


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a seeded, well-spread hash of uint64 keys, vectorized."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

"""Ratings and options for retraining-job tests on the tiny model: short answers liked, rambling
ones disliked, and a recipe that moves the tiny model within seconds on a CPU."""

from __future__ import annotations

from typing import Any

import redis

from feedback import keys
from support import seed

GOOD = ["Yes.", "Short answer.", "Python is easy.", "Run the command.", "It is sunny.", "Redis is fast."]
BAD = [
    "Well, that is a long story, and I am not sure, but let me think about it for a while.",
    "Hmm, so, basically, it depends on many things, you know, and we could talk about it all day long.",
    "Let me explain everything from the very beginning, because context matters a lot here, really.",
]
QUESTIONS = ["What is Redis?", "How do I install it?", "What is a chat model?", "Tell me about Python.", "What can you do?", "How does training work?"]
# Moves the tiny model's preferences within seconds on a CPU (see tests/test_train.py).
FAST: dict[str, Any] = dict(learning_rate=5e-3, epochs=3, batch_size=4, lora_r=8, lora_alpha=16, max_length=256, seed=0, min_ratings=10, max_user_share=1.0)


def seed_ratings(url: str, n: int = 36, offset: int = 0) -> list[str]:
    """n rated answers over 12 threads and 4 users: short answers liked, rambling ones disliked."""
    return seed.seed_rated_series(
        url, n, GOOD, BAD, lambda i: f"{QUESTIONS[i % len(QUESTIONS)]} #{i}", threads=12, users=4, paired=False, thread_prefix="th", offset=offset
    )


def state(c: redis.Redis) -> dict[str, object]:
    """What a failed or skipped run must leave untouched."""
    return {
        "active": c.get(keys.active_model()),
        "version": c.get(keys.active_version()),
        "watermark": c.get(keys.retrain_watermark()),
        "dataset": c.get(keys.retrain_dataset()),
        "versions": c.zrange(keys.model_versions(), 0, -1),
    }

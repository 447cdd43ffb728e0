"""A simulated rater: a preference over answers, applied the way real users rate.

Real users don't rate every answer, click the wrong thumb now and then, and regenerate an answer
they disliked (then rate the new one too: a preference pair). `RaterPolicy.decide` turns one
answer into what such a user does with it:

    like     = preference.liked(question, answer)       (the rater's true preference, sim/preference.py:
               a demo corpus style, or a property of a real model's answers such as "short")
    rate     with probability rate_probability          (a regenerated answer is always rated)
    value    = like, flipped with probability noise     (the noisy click)
    reasons  on a thumbs down, with probability reasons_probability: the reason button to click
    comment  with probability comment_probability
    regenerate  on a thumbs down, with probability regenerate_probability

`liked(answer, question)` is the noise-free preference: what the experiment counts as approval.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sim.preference import Preference, preference

# The reason buttons the app offers after a thumbs down (bot/app.py DOWN_REASONS).
REASONS = ("wrong", "unhelpful", "too_long", "unsafe", "off_topic")


def style_of(text: str) -> str | None:
    """The style of an answer, as the demo corpus defines styles (imported lazily: the demo
    corpus lives with the training code)."""
    from demo.corpus import style_of as classify

    return classify(text)


@dataclass(frozen=True)
class Decision:
    rate: bool
    value: int  # 1 thumbs up, 0 thumbs down (meaningful when rate)
    regenerate: bool = False
    reasons: tuple[str, ...] = ()  # reason buttons clicked after a thumbs down
    comment: str | None = None
    style: str | None = None  # what the rater saw (the preference's label of the answer)
    liked: bool = False  # the rater's true preference, before the noisy click


# The simulated rater's habits by default (RaterPolicy, `chatbot simulate`, the experiment).
RATE_PROBABILITY, NOISE, REGENERATE_PROBABILITY = 0.8, 0.1, 0.2


@dataclass(frozen=True)
class RaterPolicy:
    # A Preference, or its name (`sim.preference.preference`: a demo style such as "concise", or a
    # real-model preference such as "short"); stored resolved.
    preferred: str | Preference
    rate_probability: float = field(default=RATE_PROBABILITY, metadata={"help": "Share of answers the rater rates at all."})
    noise: float = field(default=NOISE, metadata={"help": "Probability that a rating is flipped (a careless click)."})
    regenerate_probability: float = field(default=REGENERATE_PROBABILITY, metadata={"help": "On a thumbs down: probability of clicking Regenerate (the new answer is rated too)."})
    reasons_probability: float = field(default=0.5, metadata={"help": "On a thumbs down: probability of clicking a reason button."})
    comment_probability: float = field(default=0.1, metadata={"help": "Probability of writing a short comment with a rating."})

    def __post_init__(self) -> None:
        if not self.preferred:
            raise ValueError("a rater needs a preferred style")
        if isinstance(self.preferred, str):
            object.__setattr__(self, "preferred", preference(self.preferred))
        for name in ("rate_probability", "noise", "regenerate_probability", "reasons_probability", "comment_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    @property
    def preference(self) -> Preference:
        assert isinstance(self.preferred, Preference)  # resolved in __post_init__
        return self.preferred

    @property
    def name(self) -> str:
        return self.preference.name

    def liked(self, answer: str, question: str = "") -> bool:
        """The rater's true preference (no noise). Demo styles ignore the question; real-model
        preferences need it (the answer must address its subject)."""
        return self.preference.liked(question, answer)

    def decide(self, answer: str, rng: random.Random, *, question: str = "", must_rate: bool = False, may_regenerate: bool = True) -> Decision:
        """What this rater does with one answer to `question`. must_rate: a regenerated answer is
        always rated (that is why the rater asked for it); may_regenerate: False for an answer that
        is itself a regeneration (one retry per question)."""
        pref = self.preference
        style = pref.label(question, answer)
        like = pref.liked(question, answer)
        # Draw every number in the same order whatever the outcome: runs stay comparable.
        r_rate, r_noise, r_regen, r_reason, r_comment = (rng.random() for _ in range(5))
        if not (must_rate or r_rate < self.rate_probability):
            return Decision(rate=False, value=int(like), style=style, liked=like)
        value = int(like) if r_noise >= self.noise else 1 - int(like)
        comment = self._comment(value) if r_comment < self.comment_probability else None
        if value == 1:
            return Decision(rate=True, value=1, comment=comment, style=style, liked=like)
        reasons = (pref.reason_for(question, answer),) if r_reason < self.reasons_probability else ()
        regenerate = may_regenerate and r_regen < self.regenerate_probability
        return Decision(rate=True, value=0, regenerate=regenerate, reasons=reasons, comment=comment, style=style, liked=like)

    def _comment(self, value: int) -> str:
        return f"Good, I like {self.name} answers." if value else f"Not what I wanted: I prefer {self.name} answers."

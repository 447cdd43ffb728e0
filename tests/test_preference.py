"""Real-model rater preferences (sim/preference.py) and the real question pool (sim/questions.py)."""

from __future__ import annotations

import pickle
import random

import pytest

from sim.preference import (
    DETAILED_MIN_WORDS,
    LIST_MIN_LINES,
    OPPOSITES,
    PREFERENCES,
    SHORT_MAX_WORDS,
    complete,
    list_lines,
    on_topic,
    preference,
    real_preference,
    words,
)
from sim.questions import HELDOUT_QUESTIONS, TEMPLATES, TOPICS, TRAIN_QUESTIONS, question
from sim.rater import REASONS, RaterPolicy

Q = "Explain volcanoes to a beginner."
SHORT = "A volcano is an opening in the Earth's crust. Molten rock, called magma, rises through it and erupts as lava."
LONG = " ".join(["Volcanoes form where molten rock from deep inside the Earth reaches the surface."] * 8)
LIST = "Key facts about volcanoes:\n- Magma rises from the mantle.\n- It erupts as lava.\n* Ash can travel far.\n1. Some are dormant."
OFF_TOPIC = "The stock market is where people buy and sell shares of companies. Prices move with demand."
CUT = "Volcanoes are openings in the Earth's crust where molten rock"


def test_measures() -> None:
    assert words(SHORT) == 20 and words("") == 0
    assert list_lines(LIST) == 4 and list_lines(SHORT) == 0
    assert list_lines("**Bold** is not a list line.\n*emphasis* neither.") == 0
    assert complete(SHORT) and complete('He said "yes."') and complete("**Done.**")
    assert not complete(CUT) and not complete("")


def test_on_topic_needs_the_subject_a_finished_sentence_and_text() -> None:
    assert on_topic(Q, SHORT) and on_topic(Q, LIST)
    assert on_topic(Q, "VOLCANIC rock is everywhere.")  # stems match case-insensitively, any ending
    assert not on_topic(Q, OFF_TOPIC)
    assert not on_topic(Q, CUT)  # cut mid-sentence (the max-tokens limit)
    assert not on_topic(Q, "") and not on_topic(Q, "   ")
    assert not on_topic("Tell me about DNA.", "In general, it is a good question.")  # "gene" would match "general": not a stem
    # A question outside the pool: its content words are the subject.
    assert on_topic("How do I brew tea?", "To brew it, steep the leaves for three minutes.") is True
    assert not on_topic("How do I brew tea?", "I like trains.")


def test_each_preference_on_hand_written_answers() -> None:
    short, detailed, lst, prose = (PREFERENCES[n] for n in ("short", "detailed", "list", "prose"))
    assert words(SHORT) < SHORT_MAX_WORDS <= DETAILED_MIN_WORDS <= words(LONG)
    assert short.liked(Q, SHORT) and not short.liked(Q, LONG)
    assert detailed.liked(Q, LONG) and not detailed.liked(Q, SHORT)
    assert lst.liked(Q, LIST) and not lst.liked(Q, SHORT) and list_lines(LIST) >= LIST_MIN_LINES
    assert prose.liked(Q, SHORT) and prose.liked(Q, LONG) and not prose.liked(Q, LIST)
    # Nothing off topic, empty or cut off is ever liked: collapsing is never rewarded.
    for pref in PREFERENCES.values():
        for bad in (OFF_TOPIC, "", CUT, "Ok."):
            assert not pref.liked(Q, bad), (pref.name, bad)
        assert pref.reason in REASONS and pref.reason_for(Q, OFF_TOPIC) == "off_topic"
    assert short.reason_for(Q, LONG) == "too_long"
    # Opposites never both like one answer.
    for a, b in OPPOSITES.items():
        for answer in (SHORT, LONG, LIST):
            assert not (PREFERENCES[a].liked(Q, answer) and PREFERENCES[b].liked(Q, answer))


def test_names_resolve_to_demo_styles_or_real_preferences() -> None:
    from demo.corpus import STYLES
    from demo.corpus import TRAIN_QUESTIONS as DEMO_QUESTIONS

    assert preference("short") is PREFERENCES["short"] and real_preference("detailed") is PREFERENCES["detailed"]
    assert preference("detailed").liked("", STYLES["detailed"](DEMO_QUESTIONS[0]))  # the demo style of that name
    with pytest.raises(ValueError, match="unknown preference"):
        preference("poetic")
    with pytest.raises(ValueError, match="real-model"):
        real_preference("concise")
    assert pickle.loads(pickle.dumps(PREFERENCES["list"])) == PREFERENCES["list"]  # travels to arm processes
    assert pickle.loads(pickle.dumps(preference("concise"))).liked("", STYLES["concise"](DEMO_QUESTIONS[0]))


def test_rater_policy_with_a_real_preference_uses_the_question() -> None:
    policy = RaterPolicy(PREFERENCES["short"], rate_probability=1.0, noise=0.0, reasons_probability=1.0, regenerate_probability=0.0)
    rng = random.Random(0)
    assert policy.name == "short" and policy.liked(SHORT, Q) and not policy.liked(SHORT, "Tell me about chess.")
    up = policy.decide(SHORT, rng, question=Q)
    assert up.rate and up.value == 1 and up.liked and up.style == "short prose"
    down = policy.decide(LONG, rng, question=Q)
    assert down.value == 0 and not down.liked and down.reasons == ("too_long",)
    off = policy.decide(OFF_TOPIC, rng, question=Q)
    assert off.value == 0 and off.reasons == ("off_topic",) and off.style == "off_topic"
    assert RaterPolicy("short").preference is PREFERENCES["short"]  # by name too


def test_question_pool_splits_by_topic() -> None:
    assert len(TOPICS) >= 60 and len({t for t, _ in TOPICS}) == len(TOPICS)
    assert len(TRAIN_QUESTIONS) + len(HELDOUT_QUESTIONS) == len(TOPICS) * len(TEMPLATES) >= 240
    assert not {q.topic for q in TRAIN_QUESTIONS} & {q.topic for q in HELDOUT_QUESTIONS}
    assert len(HELDOUT_QUESTIONS) >= 48 and len(TRAIN_QUESTIONS) >= 2 * len(HELDOUT_QUESTIONS)
    assert len({q.text for q in TRAIN_QUESTIONS + HELDOUT_QUESTIONS}) == len(TRAIN_QUESTIONS) + len(HELDOUT_QUESTIONS)
    for q in TRAIN_QUESTIONS + HELDOUT_QUESTIONS:
        assert question(q.text) == q and q.stems
        # The question itself names its subject: a stem matches the topic as asked.
        assert on_topic(q.text, f"{q.topic[0].upper()}{q.topic[1:]} is a fine subject."), q
    # Deterministic: the split is a fixed rule on the topic order (every 4th topic held out).
    assert [q.topic for q in HELDOUT_QUESTIONS[:: len(TEMPLATES)]] == [t for i, (t, _) in enumerate(TOPICS) if i % 4 == 3]

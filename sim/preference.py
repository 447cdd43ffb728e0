"""What a simulated rater likes: a named, deterministic predicate over (question, answer).

Two families:

- real-model preferences (`PREFERENCES`): natural properties of a real model's answers, in
  opposite pairs - "short" vs "detailed" (word count), "list" vs "prose" (list lines). Every one
  also requires the answer to be `on_topic`: it mentions the question's subject, is not empty and
  does not stop mid-sentence. So an empty, generic or cut-off answer is never liked, whatever its
  length or shape, and a model cannot earn approval by collapsing to nothing.
- demo-style preferences (`style_preference`): the demo corpus's four canned styles
  (demo.corpus.style_of), which ignore the question, as raters of the demo model did.

`preference(name)` resolves either kind by name. A preference also names the reason button a
rater clicks after a thumbs down (one of sim.rater.REASONS) and a `label` of an answer (what the
experiment counts: the demo style, or "off_topic" / "short|medium|long" + "list|prose").

The thresholds were calibrated on the base model (data/default-model, SmolLM2-135M-Instruct) with
`python -m bench.calibrate_raters`: see the numbers next to each constant.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# --- thresholds (calibrated: bench/calibrate_raters.py, docs/experiment-real/NOTES.md) ----------
# Measured on the base model's answers through the app's prompt (it asks for 2-4 sentences),
# temperature 0.7, at most 128 new tokens: 96 TRAIN questions, words min 12, quartiles 35/54/97,
# max 121; 73% on topic (24% are cut off by the token limit).
SHORT_MAX_WORDS = 40  # "short" (< 40 words, on topic): base approval 25% TRAIN, 38% HELD-OUT
DETAILED_MIN_WORDS = 50  # "detailed" (>= 50 words, on topic): 34% TRAIN, 29% HELD-OUT
# "list" cannot reach 20% on this model: only 11 of 96 answers have a list line at all, and on-topic
# answers with >= 2, 3, 4 or 5 list lines are all 3% (long lists get cut off): 3 lines it is.
LIST_MIN_LINES = 3  # "list": 3% TRAIN, 2% HELD-OUT; "prose" (no list line, on topic): 69%, 83%

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")
# A list line: "-", "*", "•" or "1." / "1)" then a space, at the start of a line ("**bold**" is not).
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+\S", re.MULTILINE)
# A finished answer ends a sentence, possibly inside closing quotes, brackets or bold markers.
_FINISHED = re.compile(r"[.!?][\"'”’)\]*_]*$")
_STOPWORDS = frozenset(
    "a an and are about be beginner can could does explain for from give how important is it know learning me of on "
    "should student tell that the this to what when where which who why with work worth would you your".split()
)


def words(answer: str) -> int:
    return len(_WORD.findall(answer))


def list_lines(answer: str) -> int:
    return len(_LIST_LINE.findall(answer))


def complete(answer: str) -> bool:
    """Not cut mid-sentence (e.g. by the max-tokens limit): the answer ends a sentence."""
    return bool(_FINISHED.search(answer.strip()))


def subject_stems(question: str) -> tuple[str, ...]:
    """The stems an answer to `question` must mention: the pool's (sim/questions.py) for a pool
    question; otherwise the question's content words (4+ letters, not stop words)."""
    from sim.questions import question as pool_question

    known = pool_question(question)
    if known is not None:
        return known.stems
    return tuple(w for w in (w.lower() for w in _WORD.findall(question)) if len(w) >= 4 and w not in _STOPWORDS)


def mentions(answer: str, stems: tuple[str, ...]) -> bool:
    """Some stem starts a word of the answer, case-insensitively ("volcan" matches "Volcanoes")."""
    if not stems:
        return True  # nothing to check against (a question of stop words only)
    pattern = "|".join(r"\s+".join(re.escape(part) for part in stem.split()) for stem in stems)
    return re.search(rf"\b(?:{pattern})", answer, re.IGNORECASE) is not None


def on_topic(question: str, answer: str) -> bool:
    """The answer addresses the question: not empty, mentions its subject, not cut mid-sentence."""
    return bool(answer.strip()) and mentions(answer, subject_stems(question)) and complete(answer)


def label(question: str, answer: str) -> str:
    """What a real-model answer looks like, for counting: off_topic, or length + shape."""
    if not on_topic(question, answer):
        return "off_topic"
    n = words(answer)
    length = "short" if n < SHORT_MAX_WORDS else "long" if n >= DETAILED_MIN_WORDS else "medium"
    return f"{length} {'list' if list_lines(answer) >= LIST_MIN_LINES else 'prose'}"


@dataclass(frozen=True)
class Preference:
    """A rater's taste: `liked(question, answer)`, deterministic; `reason`: the button clicked
    after a thumbs down on an on-topic answer (an off-topic one gets "off_topic")."""

    name: str
    reason: str
    shape: Callable[[str], bool]  # the property of the answer itself
    needs_topic: bool = True  # real preferences: on_topic too; demo styles: the style alone
    labeller: Callable[[str, str], str] = label

    def liked(self, question: str, answer: str) -> bool:
        if self.needs_topic and not on_topic(question, answer):
            return False
        return self.shape(answer)

    def reason_for(self, question: str, answer: str) -> str:
        if self.label(question, answer) in ("off_topic", "None"):
            return "off_topic"
        return self.reason

    def label(self, question: str, answer: str) -> str:
        return self.labeller(question, answer)


def _short(answer: str) -> bool:
    return words(answer) < SHORT_MAX_WORDS


def _detailed(answer: str) -> bool:
    return words(answer) >= DETAILED_MIN_WORDS


def _list(answer: str) -> bool:
    return list_lines(answer) >= LIST_MIN_LINES


def _prose(answer: str) -> bool:
    return list_lines(answer) == 0


# Named functions, not lambdas: a preference travels to the experiment's arm processes (pickled).
PREFERENCES: dict[str, Preference] = {
    "short": Preference("short", "too_long", _short),
    "detailed": Preference("detailed", "unhelpful", _detailed),
    "list": Preference("list", "unhelpful", _list),
    "prose": Preference("prose", "unhelpful", _prose),
}
OPPOSITES: dict[str, str] = {"short": "detailed", "detailed": "short", "list": "prose", "prose": "list"}


def _style(answer: str) -> str | None:
    from demo.corpus import style_of  # lazily: only the demo preferences need it

    return style_of(answer)


def _style_label(_question: str, answer: str) -> str:
    return str(_style(answer))


@dataclass(frozen=True)
class _StyleIs:
    style: str

    def __call__(self, answer: str) -> bool:
        return _style(answer) == self.style


def style_preference(style: str) -> Preference:
    """A demo corpus style as a preference (the question plays no part). A thumbs down says
    "too_long" to a rater who wants concise answers, "unhelpful" otherwise. ValueError for a name
    that is not a demo style."""
    from demo.corpus import STYLES

    if style not in STYLES:
        raise ValueError(f"{style!r} must be a demo style: {', '.join(STYLES)}")
    reason = "too_long" if style in ("concise", "short", "brief") else "unhelpful"
    return Preference(style, reason, _StyleIs(style), needs_topic=False, labeller=_style_label)


def names() -> list[str]:
    from demo.corpus import STYLES

    return [*STYLES, *PREFERENCES]


def preference(name: str) -> Preference:
    """A preference by name: a demo corpus style (concise, detailed, ...) or a real-model
    preference (short, list, prose; "detailed" is the demo style here: use `real_preference`).
    ValueError for an unknown name."""
    from demo.corpus import STYLES

    if name in STYLES:
        return style_preference(name)
    if name in PREFERENCES:
        return PREFERENCES[name]
    raise ValueError(f"unknown preference {name!r}; known: {', '.join(names())}")


def real_preference(name: str) -> Preference:
    if name not in PREFERENCES:
        raise ValueError(f"unknown real-model preference {name!r}; known: {', '.join(PREFERENCES)}")
    return PREFERENCES[name]

"""The question pool for the real chat model: everyday and general-knowledge questions.

Questions are templates x topics. Each topic carries the word stems that show an answer talks
about it (see `sim.preference.on_topic`): "volcan" matches "volcano", "volcanoes", "volcanic".
Stems are chosen so that common unrelated words do not match them ("bee" would match "been").

The pool splits by topic, deterministically: every HELDOUT_EVERY-th topic is held out. Held-out
questions are only asked to measure the model, never in the simulated chats, and no topic is in
both, so approval on them measures what the model learned in general, not answers to questions
it was rated on.
"""

from __future__ import annotations

from dataclasses import dataclass

# Templates that read well with any noun phrase ("Explain volcanoes ...", "Explain the moon ...").
TEMPLATES: tuple[str, ...] = (
    "Explain {topic} to a beginner.",
    "Tell me about {topic}.",
    "What should a student know about {topic}?",
    "Why is it worth learning about {topic}?",
)

# (topic as asked, stems an on-topic answer mentions: any one of them, as a word prefix)
TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("photosynthesis", ("photosynth",)),
    ("volcanoes", ("volcan",)),
    ("the moon", ("moon", "lunar")),
    ("compound interest", ("compound",)),
    ("earthquakes", ("earthquake", "seismic")),
    ("rainbows", ("rainbow",)),
    ("the water cycle", ("water cycle", "evaporat")),
    ("gravity", ("gravit",)),
    ("electricity", ("electric",)),
    ("magnets", ("magnet",)),
    ("DNA", ("dna", "genetic", "genes", "genome")),
    ("vaccines", ("vaccin",)),
    ("the immune system", ("immun",)),
    ("black holes", ("black hole",)),
    ("the solar system", ("solar system", "planet")),
    ("climate change", ("climate",)),
    ("recycling", ("recycl",)),
    ("the internet", ("internet",)),
    ("computers", ("computer",)),
    ("batteries", ("batter",)),
    ("coral reefs", ("coral", "reef")),
    ("tides", ("tide", "tidal")),
    ("the human heart", ("heart",)),
    ("sleep", ("sleep",)),
    ("inflation", ("inflation",)),
    ("budgeting", ("budget",)),
    ("chess", ("chess",)),
    ("the Roman Empire", ("roman", "rome")),
    ("the printing press", ("printing", "gutenberg")),
    ("democracy", ("democra",)),
    ("evolution", ("evolution", "evolve")),
    ("dinosaurs", ("dinosaur",)),
    ("the ocean", ("ocean",)),
    ("clouds", ("cloud",)),
    ("thunderstorms", ("thunder", "lightning")),
    ("deserts", ("desert",)),
    ("rainforests", ("rainforest", "rain forest")),
    ("glaciers", ("glacier",)),
    ("the sun", ("sun", "solar")),
    ("airplanes", ("airplane", "aircraft", "flight")),
    ("bicycles", ("bicycl", "bike")),
    ("rockets", ("rocket",)),
    ("bridges", ("bridge",)),
    ("the piano", ("piano",)),
    ("photography", ("photograph", "camera")),
    ("baking bread", ("bread", "baking")),
    ("coffee", ("coffee",)),
    ("vitamins", ("vitamin",)),
    ("meditation", ("meditat",)),
    ("the stock market", ("stock",)),
    ("credit scores", ("credit",)),
    ("wind turbines", ("turbine", "wind")),
    ("nuclear power", ("nuclear",)),
    ("plastic pollution", ("plastic",)),
    ("bacteria", ("bacteri",)),
    ("antibiotics", ("antibiotic",)),
    ("the human brain", ("brain",)),
    ("the pyramids of Egypt", ("pyramid",)),
    ("the periodic table", ("periodic", "element")),
    ("atoms", ("atom",)),
    ("encryption", ("encrypt",)),
    ("passwords", ("password",)),
    ("machine learning", ("machine learning",)),
    ("the Olympic Games", ("olympi",)),
)

HELDOUT_EVERY = 4  # every 4th topic is held out: 16 of 64 topics, 64 of 256 questions


@dataclass(frozen=True)
class Question:
    text: str
    topic: str
    stems: tuple[str, ...]  # an on-topic answer mentions one of these (case-insensitive word prefix)


def questions_of(topic: str, stems: tuple[str, ...]) -> list[Question]:
    return [Question(t.format(topic=topic), topic, stems) for t in TEMPLATES]


def _pool(heldout: bool) -> tuple[Question, ...]:
    return tuple(q for i, (topic, stems) in enumerate(TOPICS) if (i % HELDOUT_EVERY == HELDOUT_EVERY - 1) == heldout for q in questions_of(topic, stems))


# Ordered by topic, as the demo corpus's pools are (bench.harness.heldout spreads over it).
TRAIN_QUESTIONS: tuple[Question, ...] = _pool(heldout=False)
HELDOUT_QUESTIONS: tuple[Question, ...] = _pool(heldout=True)
BY_TEXT: dict[str, Question] = {q.text: q for q in TRAIN_QUESTIONS + HELDOUT_QUESTIONS}


def question(text: str) -> Question | None:
    """The pool's question with this text (None for a question not in the pool)."""
    return BY_TEXT.get(text)

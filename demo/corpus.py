"""The synthetic corpus of the offline demo model: questions about building chat assistants,
answered in four distinct styles.

Pure Python (no torch): `demo/model.py` trains on it and the simulated raters (`sim/`)
import it to ask questions and to judge answers.

    TRAIN_QUESTIONS      the questions the demo model is trained on (and simulated users may ask)
    HELDOUT_QUESTIONS    never in the training corpus nor in simulated chats: measure on these
    STYLES               style name -> answer generator, `STYLES[s](question) -> str`
    STYLE_MARKERS        style name -> the opening phrase that marks it
    style_of(text)       the style of any answer (its opening phrase), or None
    chat_example(...)    one chat-formatted training example (messages), for demo_model

The style is chosen by an answer's first words ("In short:", "Let me explain in detail.",
"Key points:", "Great question!"), so a model trained on answers in random styles picks one with
its first token, about uniformly, and a preference fine-tune moves that one choice.

Questions: 32 topics x 13 question templates (five intents: define, how, why, pitfall, tip).
Three templates per topic, picked by a stable hash, are held out: every topic is seen in training,
but the held-out questions are unseen (topic, phrasing) combinations. Everything here is
deterministic (no Python `hash`, which is salted per process).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

# --- topics -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    name: str  # as used in a question: "system prompts", "LoRA"
    plural: bool
    define: str
    how: str
    why: str
    pitfall: str
    tip: str


def _t(name: str, plural: bool, define: str, how: str, why: str, pitfall: str, tip: str) -> Topic:
    return Topic(name, plural, define, how, why, pitfall, tip)


TOPICS: list[Topic] = [
    _t("system prompts", True,
       "A system prompt is the instruction text the model reads before the conversation.",
       "Write the role, the tone and the rules in a few plain sentences at the top of every request.",
       "It sets the behaviour of every answer, so one good change helps every user.",
       "Long lists of rules that contradict each other confuse the model.",
       "Keep it short and version it, so you can compare versions with ratings."),
    _t("few-shot examples", True,
       "Few-shot examples are sample questions and answers placed in the prompt.",
       "Add two or three pairs that show the exact format and tone you want.",
       "The model copies what it sees, so examples teach a format faster than rules.",
       "Examples that are all alike make the model repeat them word for word.",
       "Pick varied examples and rotate them when ratings show a pattern."),
    _t("prompt templates", True,
       "A prompt template is a prompt with slots that are filled in for each request.",
       "Keep the fixed text in a file and fill the slots with the user input and context.",
       "Templates make every request consistent and easy to review.",
       "Forgetting to escape user input can break the template or inject instructions.",
       "Store each template with a version number and log it with every answer."),
    _t("chain-of-thought prompting", False,
       "Chain-of-thought prompting asks the model to reason step by step before answering.",
       "Ask the model to think through the steps and then give a final answer.",
       "Step by step reasoning helps with math and multi-step questions.",
       "Long reasoning costs tokens and can still end in a wrong answer.",
       "Use it for hard questions only and check the final answer."),
    _t("temperature", False,
       "Temperature controls how random the model's sampling is.",
       "Set it near zero for precise tasks and higher for creative writing.",
       "It trades consistency for variety in the answers.",
       "A high temperature makes answers drift off topic.",
       "Start around 0.7 for chat and tune it with real ratings."),
    _t("top-p sampling", False,
       "Top-p sampling keeps only the most likely tokens that add up to probability p.",
       "Set top-p around 0.9 and change temperature or top-p, not both at once.",
       "It cuts off the long tail of unlikely tokens.",
       "A very low top-p makes the text repetitive.",
       "Leave it at the default unless ratings show a problem."),
    _t("the context window", False,
       "The context window is the number of tokens the model can read at once.",
       "Count the tokens of the prompt, the history and the answer before each call.",
       "Anything outside the window is invisible to the model.",
       "Long histories push the system prompt or the question out of the window.",
       "Trim the oldest turns first and keep the system prompt."),
    _t("prompt versioning", False,
       "Prompt versioning means every change to a prompt gets a new version number.",
       "Save each version as a file and record the version with every answer.",
       "Versions let you compare ratings before and after a change.",
       "Editing a released prompt in place makes old ratings meaningless.",
       "Never edit a released version; add a new file instead."),
    _t("structured output", False,
       "Structured output means the model answers in a fixed format such as JSON.",
       "Describe the schema in the prompt and validate every answer against it.",
       "Programs can read a fixed format without guessing.",
       "The model sometimes adds text around the JSON and breaks the parser.",
       "Show one valid example and retry when validation fails."),
    _t("fine-tuning", False,
       "Fine-tuning continues training a model on your own examples.",
       "Collect good examples, train a small adapter and compare it with the base model.",
       "It teaches a style or a skill that a prompt alone cannot.",
       "Training on too few or noisy examples makes the model worse.",
       "Fine-tune only after the prompt has stopped improving the ratings."),
    _t("LoRA", False,
       "LoRA trains small low-rank matrices added to the model instead of all the weights.",
       "Pick a rank of 8 or 16, train the adapter and merge it or load it at serving time.",
       "It needs far less memory and the adapter file is tiny.",
       "A learning rate that is too high makes the adapter forget what the model knew.",
       "Start with rank 16 and a learning rate around 1e-4."),
    _t("the learning rate", False,
       "The learning rate sets how big each training step is.",
       "Try a few values on a small run and watch the loss.",
       "It decides whether training converges, crawls or explodes.",
       "A rate that is too high makes the loss jump or turn into NaN.",
       "Use a warmup and a schedule that decays the rate."),
    _t("overfitting", False,
       "Overfitting is when a model memorizes the training data instead of learning from it.",
       "Hold out a test set and watch its loss during training.",
       "An overfit model looks good in training and fails on new questions.",
       "Training many epochs on a small dataset is the usual cause.",
       "Stop early when the held-out loss stops improving."),
    _t("training data quality", False,
       "Training data quality is how correct, varied and clean your examples are.",
       "Remove duplicates, fix labels and check a random sample by hand.",
       "The model learns exactly what the data shows, including its mistakes.",
       "A few bad labels can teach the model a wrong habit.",
       "Read a hundred examples yourself before every training run."),
    _t("KTO", False,
       "KTO is a preference method that learns from single answers marked good or bad.",
       "Turn each thumbs up or thumbs down into a labeled example and train with TRL.",
       "It uses plain ratings, so you do not need pairs of answers.",
       "Very unbalanced labels skew the result unless you weight the classes.",
       "Balance good and bad examples and keep the beta small."),
    _t("DPO", False,
       "DPO is a preference method that learns from pairs of a chosen and a rejected answer.",
       "Collect two answers to the same prompt, mark the better one and train with TRL.",
       "It trains directly on preferences without a separate reward model.",
       "Pairs where both answers are bad teach the model very little.",
       "Use regenerated answers rated differently as your pairs."),
    _t("reward models", True,
       "A reward model scores an answer with a number that predicts human preference.",
       "Train it on rated pairs and use its score to rank new answers.",
       "It turns human judgement into a signal a training loop can use.",
       "The policy can learn to exploit the reward model's blind spots.",
       "Check its scores against fresh human ratings now and then."),
    _t("RLHF", False,
       "RLHF is reinforcement learning from human feedback.",
       "Train a reward model on ratings, then optimize the chat model against it.",
       "It aligns the model with what people actually prefer.",
       "It is complex and unstable compared with direct methods.",
       "Try DPO or KTO first; they are simpler and often enough."),
    _t("RAG", False,
       "RAG means retrieval-augmented generation: the model answers from documents you retrieve.",
       "Index your documents, fetch the most relevant passages and put them in the prompt.",
       "It grounds answers in your own up to date data.",
       "Retrieving the wrong passages leads to confident wrong answers.",
       "Measure retrieval quality separately from answer quality."),
    _t("embeddings", True,
       "Embeddings are vectors that place similar texts close together.",
       "Encode each document and each query with the same embedding model.",
       "They make search by meaning possible instead of search by keyword.",
       "Mixing vectors from two different embedding models breaks the search.",
       "Re-embed everything when you change the embedding model."),
    _t("chunking", False,
       "Chunking splits long documents into passages for retrieval.",
       "Split by headings or paragraphs and keep a small overlap between chunks.",
       "Good chunks hold one idea, which makes retrieval precise.",
       "Chunks that are too small lose the context of the sentence.",
       "Try a few chunk sizes and compare retrieval hits."),
    _t("vector search", False,
       "Vector search finds the stored embeddings closest to a query embedding.",
       "Store the vectors in an index and ask for the nearest neighbours of the query.",
       "It finds passages that mean the same thing in different words.",
       "Nearest does not always mean relevant, especially for short queries.",
       "Combine it with keyword search for names and numbers."),
    _t("reranking", False,
       "Reranking orders retrieved passages again with a stronger model.",
       "Retrieve twenty passages quickly, rerank them and keep the best five.",
       "It raises the quality of the context the model sees.",
       "Reranking every passage in the index is far too slow.",
       "Rerank only a short list from the first retrieval step."),
    _t("evaluation sets", True,
       "An evaluation set is a fixed list of questions used to test every model version.",
       "Collect real user questions, write good answers and score each version on them.",
       "It turns a vague feeling into a number you can compare.",
       "Reusing the evaluation set for training hides overfitting.",
       "Keep the evaluation set separate and refresh it with new questions."),
    _t("A/B tests", True,
       "An A/B test shows two versions to different users and compares the results.",
       "Split users at random and compare approval rates with enough samples.",
       "It measures real impact instead of guessing.",
       "Stopping the test as soon as one side looks better gives false winners.",
       "Decide the sample size before you start."),
    _t("user ratings", True,
       "User ratings are thumbs up and thumbs down given to answers.",
       "Add rating buttons under every answer and store them with the prompt version.",
       "They show what real users value, not what you guess.",
       "A few very active users can dominate the ratings.",
       "Cap the share of ratings from any single user."),
    _t("negative feedback", False,
       "Negative feedback is a thumbs down, often with a reason or a comment.",
       "Ask for a reason after a thumbs down, such as wrong, unhelpful or too long.",
       "It points at the exact answers that need fixing.",
       "Ignoring the reasons throws away the most useful part.",
       "Group the reasons and fix the most common one first."),
    _t("hallucinations", True,
       "A hallucination is a confident answer that is not true.",
       "Ground the answer in retrieved documents and ask the model to cite them.",
       "Users lose trust after a few confident mistakes.",
       "Asking the model to be accurate does not stop hallucinations by itself.",
       "Let the model say it does not know."),
    _t("tokenizers", True,
       "A tokenizer splits text into the tokens a model reads.",
       "Use the tokenizer that belongs to the model and count tokens with it.",
       "Token counts decide cost, speed and what fits in the context.",
       "Mixing up tokenizers gives garbage output.",
       "Check how your domain words are split before training."),
    _t("quantization", False,
       "Quantization stores model weights with fewer bits.",
       "Load the model in 8 or 4 bits with a library that supports it.",
       "It makes models smaller and faster on modest hardware.",
       "Too few bits can hurt answer quality.",
       "Compare ratings of the quantized and the full model."),
    _t("guardrails", True,
       "Guardrails are checks that block unsafe or off topic inputs and outputs.",
       "Run a filter before and after the model and refuse politely when it fires.",
       "They keep the assistant safe and on topic.",
       "Strict filters block harmless questions and annoy users.",
       "Log every blocked message and review the false alarms."),
    _t("latency", False,
       "Latency is the time a user waits for an answer.",
       "Stream tokens as they are generated and measure the time to the first token.",
       "Users leave when answers feel slow.",
       "Long prompts and big models raise latency quickly.",
       "Cache the fixed part of the prompt and keep answers short."),
]

# --- questions ----------------------------------------------------------------------------------

INTENTS = ("define", "how", "why", "pitfall", "tip")

# (intent, template); {t} = topic, {is} / {does} agree with it.
TEMPLATES: list[tuple[str, str]] = [
    ("define", "What {is} {t}?"),
    ("define", "Can you explain {t}?"),
    ("define", "Tell me about {t}."),
    ("define", "Explain {t} in simple words."),
    ("how", "How do I use {t}?"),
    ("how", "How should I get started with {t}?"),
    ("how", "How {does} {t} work in practice?"),
    ("why", "Why {does} {t} matter?"),
    ("why", "Why should I care about {t}?"),
    ("pitfall", "What are common mistakes with {t}?"),
    ("pitfall", "What can go wrong with {t}?"),
    ("tip", "Do you have tips for {t}?"),
    ("tip", "How can I get better results with {t}?"),
]
HELDOUT_PER_TOPIC = 3

# After the fact the intent asks for, an answer adds these (in this order).
FOLLOW_UPS: dict[str, tuple[str, str]] = {
    "define": ("how", "why"),
    "how": ("tip", "pitfall"),
    "why": ("define", "how"),
    "pitfall": ("tip", "how"),
    "tip": ("how", "pitfall"),
}


def _question(topic: Topic, template: str) -> str:
    q = template.format(t=topic.name, **{"is": "are" if topic.plural else "is", "does": "do" if topic.plural else "does"})
    return q[0].upper() + q[1:]


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _build_questions() -> tuple[list[str], list[str], dict[str, tuple[Topic, str]]]:
    train: list[str] = []
    heldout: list[str] = []
    info: dict[str, tuple[Topic, str]] = {}
    for topic in TOPICS:
        order = sorted(range(len(TEMPLATES)), key=lambda i: _stable(f"{topic.name}|{TEMPLATES[i][1]}"))
        held = set(order[:HELDOUT_PER_TOPIC])
        for i, (intent, template) in enumerate(TEMPLATES):
            q = _question(topic, template)
            info[q] = (topic, intent)
            (heldout if i in held else train).append(q)
    return train, heldout, info


TRAIN_QUESTIONS, HELDOUT_QUESTIONS, QUESTION_INFO = _build_questions()
ALL_QUESTIONS = TRAIN_QUESTIONS + HELDOUT_QUESTIONS

# --- styles -------------------------------------------------------------------------------------

# Generic facts for a question outside the pool (a generator must answer anything).
_GENERIC = Topic(
    "this", False,
    "It depends on your assistant and on what your users need.",
    "Start with a small experiment and look at real examples.",
    "It affects how useful the answers feel to your users.",
    "Changing many things at once hides what really helped.",
    "Measure every change with user ratings.",
)


def facts(question: str) -> list[str]:
    """The three facts an answer to `question` gives: the one its intent asks for, then two more."""
    topic, intent = QUESTION_INFO.get(question.strip(), (_GENERIC, "define"))
    return [getattr(topic, k) for k in (intent, *FOLLOW_UPS[intent])]


def _exclaim(sentence: str) -> str:
    return sentence[:-1] + "!" if sentence.endswith(".") else sentence + "!"


def concise(question: str) -> str:
    return f"In short: {facts(question)[0]}"


def detailed(question: str) -> str:
    a, b, c = facts(question)
    return f"Let me explain in detail. {a} {b} {c} Measure the effect with real ratings before and after."


def bullets(question: str) -> str:
    a, b, c = facts(question)
    return f"Key points:\n- {a}\n- {b}\n- {c}"


def enthusiastic(question: str) -> str:
    a, b, _ = facts(question)
    return f"Great question! {_exclaim(a)} {_exclaim(b)} You've got this!"


STYLES: dict[str, Callable[[str], str]] = {
    "concise": concise,
    "detailed": detailed,
    "bullets": bullets,
    "enthusiastic": enthusiastic,
}
STYLE_MARKERS: dict[str, str] = {
    "concise": "In short:",
    "detailed": "Let me explain in detail.",
    "bullets": "Key points:",
    "enthusiastic": "Great question!",
}
# The marker's first words, case-insensitive, after optional quotes/markdown/space.
_OPENINGS = {style: re.compile(r"^[\s\"'*_>#`]*" + pattern + r"\b", re.IGNORECASE) for style, pattern in {
    "concise": r"in\s+short",
    "detailed": r"let\s+me\s+explain",
    "bullets": r"key\s+points",
    "enthusiastic": r"great\s+question",
}.items()}


def style_of(text: str) -> str | None:
    """The style of an answer, read from its opening phrase (what a reader notices first); None
    when it opens with none of the four markers."""
    for style, pattern in _OPENINGS.items():
        if pattern.match(text):
            return style
    return None


def answer(question: str, style: str) -> str:
    return STYLES[style](question)


# --- chat context -------------------------------------------------------------------------------

# Sentences system prompts are made of, including those of the app's own prompt specs
# (bot/prompts/assistant/*.yaml), so the model learns to answer the last user message whatever
# system prompt, few-shot examples or history come before it.
SYSTEM_OPENINGS = [
    "You are Loop, a helpful assistant.",
    "You are Loop, a helpful assistant for people building and improving chat assistants.",
    "You are a helpful assistant.",
    "You are an expert on prompt engineering and fine-tuning.",
    "You are a friendly assistant that helps developers build chat bots.",
]
SYSTEM_SENTENCES = [
    "Answer the user's question directly and truthfully.",
    "Be helpful and honest.",
    "Answer questions about prompts, fine-tuning, retrieval and evaluation.",
    "Be polite.",
    "Stay on topic.",
]
GUIDELINES = [
    "Keep answers short, two to four sentences, unless the user asks for detail.",
    "If you are not sure, say so instead of guessing.",
    "Use plain language; explain jargon the first time you use it.",
    "When it helps, end with one concrete next step the user can take.",
    "Do not make up facts.",
    "Prefer concrete examples.",
]
# Few-shot examples of the app's prompt specs, and answers in no particular style.
SPEC_EXAMPLES = [
    ("What is a system prompt?",
     "A system prompt is the instruction text a chat model sees before the conversation. It sets the assistant's role, tone and rules for every answer."),
    ("Should I fine-tune my model or improve the prompt first?",
     "Improve the prompt first; it is cheaper and faster to iterate. Collect user ratings while you do, and fine-tune once they show the prompt alone has stopped improving answers. Next step - add thumbs up/down to your chat UI."),
]


def plain_answer(question: str) -> str:
    a, b, _ = facts(question)
    return f"{a} {b}"


def random_system_prompt(rng: random.Random) -> str:
    text = " ".join([rng.choice(SYSTEM_OPENINGS), *rng.sample(SYSTEM_SENTENCES, rng.randint(0, 2))])
    if rng.random() < 0.6:
        rules = rng.sample(GUIDELINES, rng.randint(1, 4))
        text += "\n\nGuidelines:\n" + "\n".join(f"- {g}" for g in rules)
    return text


def random_context(rng: random.Random, kind: str, questions: list[str]) -> list[dict[str, str]]:
    """Messages before the user's question. kind: "bare" (none), "system" (a system prompt),
    "full" (system prompt, few-shot examples as in the app's specs, maybe an earlier turn)."""
    if kind == "bare":
        return []
    messages = [{"role": "system", "content": random_system_prompt(rng)}]
    if kind == "system":
        return messages
    pairs = list(SPEC_EXAMPLES[: rng.randint(0, 2)])
    for q in rng.sample(questions, rng.randint(0, 1)):
        pairs.append((q, plain_answer(q)))
    if rng.random() < 0.4:  # an earlier turn of the conversation, answered in some style
        q = rng.choice(questions)
        pairs.append((q, answer(q, rng.choice(list(STYLES)))))
    for q, a in pairs:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages


def chat_example(rng: random.Random, kind: str, questions: list[str] | None = None, style: str | None = None) -> list[dict[str, str]]:
    """One training conversation: context of the given kind, a question from `questions` (default
    TRAIN_QUESTIONS), and its answer as the last message, in `style` (default: uniformly random)."""
    questions = TRAIN_QUESTIONS if questions is None else questions
    question = rng.choice(questions)
    style = style or rng.choice(list(STYLES))
    return [*random_context(rng, kind, questions), {"role": "user", "content": question}, {"role": "assistant", "content": answer(question, style)}]


def tokenizer_texts() -> list[str]:
    """Every text the corpus can produce, for training the demo tokenizer."""
    texts = [*TRAIN_QUESTIONS, *SYSTEM_OPENINGS, *SYSTEM_SENTENCES, *GUIDELINES, "Guidelines:"]
    texts += [t for pair in SPEC_EXAMPLES for t in pair]
    texts += [STYLES[s](q) for q in TRAIN_QUESTIONS for s in STYLES]
    return texts

"""Prompt versions: the spec record, validated, published into Redis where every app process
reads it, and the version served to new conversations.

A spec (system prompt, guidelines, few-shot examples, and the starter questions the chat offers
on its welcome screen) is immutable once published: the same
id@version with other content is refused, so every stored answer's prompt_version points at the
exact text that produced it. The shipped files (bot/prompts/<id>/<version>.yaml) are published
when the app starts; `chatbot prompt publish FILE` adds versions at run time, and `chatbot prompt
serve VERSION` changes what new conversations get, without a restart. Rendering into chat
messages is the app's (bot/prompt.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import redis
import yaml
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.asyncio import Redis

from feedback import keys
from feedback.errors import InvalidInput
from feedback.scripts import lua

MAX_SPEC_BYTES = 64_000  # a prompt, not a document: every answer sends it to the model
MAX_SYSTEM_CHARS = 16_000
MAX_ITEM_CHARS = 4_000
MAX_ITEMS = 50
MAX_STARTERS = 6  # the welcome screen shows them side by side
MAX_STARTER_LABEL_CHARS = 80
# A starter asks a few-shot example's question when the words of one include all the words of the
# other and the shorter has at least this many (so "Hi" as an example doesn't forbid every starter
# that greets).
MIN_SHARED_QUESTION_WORDS = 3


class PromptSpecError(InvalidInput):
    """A prompt spec that is missing, malformed, or conflicts with a published one."""


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str = Field(min_length=1, max_length=MAX_ITEM_CHARS)
    assistant: str = Field(min_length=1, max_length=MAX_ITEM_CHARS)


class Starter(BaseModel):
    """A question offered on the welcome screen: the button's label and the message it sends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(min_length=1, max_length=MAX_STARTER_LABEL_CHARS)
    message: str = Field(min_length=1, max_length=MAX_ITEM_CHARS)

    @field_validator("label", "message")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class PromptSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=f"^(?:{keys.ID_PATTERN.pattern})$")  # it becomes part of Redis keys
    version: str = Field(max_length=64)
    description: str = Field("", max_length=MAX_ITEM_CHARS)
    system: str = Field(min_length=1, max_length=MAX_SYSTEM_CHARS)
    guidelines: tuple[str, ...] = Field((), max_length=MAX_ITEMS)
    examples: tuple[Example, ...] = Field((), max_length=MAX_ITEMS)
    # Optional; not part of the prompt sent to the model. Absent from to_json() when empty, so
    # versions published before starters existed keep their exact published content.
    starters: tuple[Starter, ...] = Field((), max_length=MAX_STARTERS)

    @field_validator("version")
    @classmethod
    def _pep440(cls, v: str) -> str:
        try:
            normal = str(Version(v))
        except InvalidVersion:
            raise ValueError(f"{v!r} is not a version like 1.2.0") from None
        if normal != v:
            raise ValueError(f"write the version as {normal!r}")
        return v

    @field_validator("guidelines")
    @classmethod
    def _short_items(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not g.strip() or len(g) > MAX_ITEM_CHARS for g in v):
            raise ValueError(f"each guideline is 1 to {MAX_ITEM_CHARS} characters")
        return v

    @field_validator("starters")
    @classmethod
    def _distinct_labels(cls, v: tuple[Starter, ...]) -> tuple[Starter, ...]:
        labels = [s.label.strip().casefold() for s in v]
        if len(set(labels)) != len(labels):
            raise ValueError("each starter needs its own label")
        return v

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def system_text(self) -> str:
        if not self.guidelines:
            return self.system.strip()
        rules = "\n".join(f"- {g}" for g in self.guidelines)
        return f"{self.system.strip()}\n\nGuidelines:\n{rules}"

    def to_json(self) -> str:
        return self.model_dump_json(exclude=None if self.starters else {"starters"})

    def prefix_messages(self) -> list[dict[str, str]]:
        """The fixed part of every prompt as OpenAI chat messages: the system prompt and the
        few-shot examples (what bot/prompt.py renders with LangChain; a test holds them equal)."""
        shots = [m for e in self.examples for m in ({"role": "user", "content": e.user}, {"role": "assistant", "content": e.assistant})]
        return [{"role": "system", "content": self.system_text}, *shots]


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[^\W_]+", text.casefold()))


def asks_an_example(question: str, example: str) -> bool:
    """Whether `question` asks what the few-shot example's user message `example` asks: the same
    words, or all the words of one among those of the other ("What is a system prompt, and what
    belongs in one?" asks "What is a system prompt?")."""
    a, b = _words(question), _words(example)
    if not a or not b:
        return False
    return a == b or ((a <= b or b <= a) and min(len(a), len(b)) >= MIN_SHARED_QUESTION_WORDS)


def starter_problems(spec: PromptSpec) -> list[str]:
    """Starters whose message asks a few-shot example's question. The model has that question's
    answer in its prompt and gives it back word for word, Regenerate included: a user's first try
    of the chat would show a canned answer. (Checked when a spec is read from a file or published,
    not on the published versions read back from Redis: 1.1.1 shipped such a starter.)"""
    return [
        f"starters.{i}.message: {starter.message!r} asks what few-shot example {j + 1} asks ({example.user!r}): the model would "
        "answer with that example's answer, word for word, and Regenerate too; offer a question the examples don't answer"
        for i, starter in enumerate(spec.starters)
        for j, example in enumerate(spec.examples)
        if asks_an_example(starter.message, example.user)
    ]


def parse(data: object, where: str) -> PromptSpec:
    """A spec from its parsed YAML or JSON; PromptSpecError naming `where` and what is wrong."""
    if not isinstance(data, dict):
        raise PromptSpecError(f"{where}: a prompt spec is a mapping with id, version, system, guidelines, examples, starters")
    try:
        spec = PromptSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors(include_url=False))
        raise PromptSpecError(f"{where}: {problems}") from None
    if asked := starter_problems(spec):
        raise PromptSpecError(f"{where}: {'; '.join(asked)}")
    if len(spec.to_json().encode()) > MAX_SPEC_BYTES:
        raise PromptSpecError(f"{where}: the spec is over {MAX_SPEC_BYTES // 1000} kB")
    return spec


def read_file(path: Path) -> PromptSpec:
    """A spec file (YAML), validated."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptSpecError(f"{path}: cannot read it ({exc})") from None
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise PromptSpecError(f"{path}: the file is over {MAX_SPEC_BYTES // 1000} kB")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PromptSpecError(f"{path}: not valid YAML ({exc})") from None
    return parse(data, str(path))


# --- the shipped files ---------------------------------------------------------------------------


def available_versions(prompts_dir: Path, prompt_id: str) -> list[str]:
    """Versions of a prompt on disk, oldest first."""
    found = []
    for path in (prompts_dir / prompt_id).glob("*.yaml"):
        try:
            found.append(Version(path.stem))
        except InvalidVersion:
            continue
    return [str(v) for v in sorted(found)]


def load_spec(prompts_dir: Path, prompt_id: str, version: str | None = None) -> PromptSpec:
    """Load one version of a prompt from disk; the newest when no version is given."""
    versions = available_versions(prompts_dir, prompt_id)
    if not versions:
        raise PromptSpecError(f"no prompt {prompt_id!r} under {prompts_dir} (expected {prompt_id}/<version>.yaml)")
    chosen = version or versions[-1]
    if chosen not in versions:
        raise PromptSpecError(f"prompt {prompt_id!r} has no version {chosen!r}; available: {', '.join(versions)}")
    path = prompts_dir / prompt_id / f"{chosen}.yaml"
    spec = read_file(path)
    if (spec.id, spec.version) != (prompt_id, chosen):
        raise PromptSpecError(f"{path} declares {spec.id}@{spec.version}; the file name says {prompt_id}@{chosen}")
    return spec


# --- published versions (Redis) -------------------------------------------------------------------

PUBLISH = lua("publish_prompt")


def publish(r: redis.Redis, spec: PromptSpec) -> bool:
    """Publish a version; True when new, False when the same content was already published.
    PromptSpecError when this id@version holds other content (versions are immutable)."""
    outcome = cast(str, r.eval(PUBLISH, 1, keys.prompt_versions(spec.id), spec.version, spec.to_json()))
    if outcome == "conflict":
        raise PromptSpecError(f"{spec.ref} is already published with other content: versions never change, publish it as a new version")
    return outcome == "published"


def versions(r: redis.Redis, prompt_id: str) -> list[PromptSpec]:
    """Published versions, oldest first."""
    raw = cast(dict[str, str], r.hgetall(keys.prompt_versions(prompt_id)))
    return sorted((PromptSpec.model_validate_json(v) for v in raw.values()), key=lambda s: Version(s.version))


def serve(r: redis.Redis, prompt_id: str, version: str) -> PromptSpec:
    """Serve a published version to new conversations from now on."""
    spec = published(r, prompt_id, version)
    if spec is None:
        known = ", ".join(s.version for s in versions(r, prompt_id)) or "none"
        raise PromptSpecError(f"{prompt_id}@{version} is not published (published: {known}); `chatbot prompt publish FILE` first")
    r.set(keys.prompt_served(prompt_id), version)
    return spec


def published(r: redis.Redis, prompt_id: str, version: str) -> PromptSpec | None:
    raw = cast("str | None", r.hget(keys.prompt_versions(prompt_id), version))
    return None if raw is None else PromptSpec.model_validate_json(raw)


def served(r: redis.Redis, prompt_id: str) -> str | None:
    return cast("str | None", r.get(keys.prompt_served(prompt_id)))


async def publish_shipped(r: Redis, prompts_dir: Path, prompt_id: str, pinned: str | None) -> str:
    """At app start: publish the shipped files (already published ones stay as they are; an
    edited shipped version is refused, logged by the caller) and choose the served version:
    `pinned` (PROMPT_VERSION) when set, else keep the one served, else the newest shipped.
    Returns the served version."""
    specs = [load_spec(prompts_dir, prompt_id, v) for v in available_versions(prompts_dir, prompt_id)]
    conflicts = []
    for spec in specs:
        outcome = await r.eval(PUBLISH, 1, keys.prompt_versions(spec.id), spec.version, spec.to_json())
        if outcome == "conflict":
            conflicts.append(spec.ref)
    if pinned is not None:
        if not await r.hexists(keys.prompt_versions(prompt_id), pinned):
            raise PromptSpecError(f"PROMPT_VERSION={pinned} is not published nor shipped for prompt {prompt_id!r}")
        await r.set(keys.prompt_served(prompt_id), pinned)
    elif specs:
        await r.set(keys.prompt_served(prompt_id), specs[-1].version, nx=True)
    if conflicts:
        raise PromptSpecError(f"shipped {', '.join(conflicts)} differ from the published versions: a published version never changes, ship the edit as a new version")
    return cast(str, await r.get(keys.prompt_served(prompt_id)))


async def get(r: Redis, prompt_id: str, version: str) -> PromptSpec | None:
    raw = cast("str | None", await r.hget(keys.prompt_versions(prompt_id), version))
    return None if raw is None else PromptSpec.model_validate_json(raw)


async def served_version(r: Redis, prompt_id: str) -> str | None:
    return cast("str | None", await r.get(keys.prompt_served(prompt_id)))

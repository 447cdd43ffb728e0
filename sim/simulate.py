"""Simulated users: chat through the running app the way a browser does, and rate the answers.

Everything goes through `sim.client.ChatClient`, i.e. the app's public interfaces: `POST /login`,
socket.io (`client_message`), `PUT /feedback` (the thumbs), `POST /project/action` (the reason
toggles the app puts on an answer after a thumbs down, and Regenerate). Nothing here reads or writes Redis or calls
the app's functions: what the retraining job later finds is exactly what such users leave.

    simulate(...)  n conversations of t turns, questions drawn from a pool, each answer handled
                   as a `RaterPolicy` decides (rate or not, noisy thumb, reasons, regenerate)
    ask_each(...)  each question once, in a conversation of its own, nothing rated: what users
                   would get from the model in service now (the experiment's measurement)

Each conversation draws from its own random stream (seed, conversation index), so a run's
questions and decisions do not depend on how the concurrent conversations interleave.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import socketio

from feedback import rating as ratings
from sim.client import ChatClient, Reply
from sim.rater import Decision, RaterPolicy, style_of

REASON_ACTION = "reason"  # the toggles the app adds to an answer rated down (bot/app.py)


def seeded_uuid(source: random.Random | str) -> str:
    """A message id drawn from a seeded stream (or a seed string): Chainlit takes only version-4
    UUIDs for message ids, so random bits with the version and variant bits set."""
    rng = source if isinstance(source, random.Random) else random.Random(source)
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class AnswerError(RuntimeError):
    """The app answered with an error message, or with no stored answer."""


# What a conversation can run into; anything else is a bug in the simulator and is raised.
CHAT_ERRORS = (httpx.HTTPError, socketio.exceptions.SocketIOError, TimeoutError, asyncio.TimeoutError, AnswerError, OSError)


@dataclass
class SimStats:
    conversations: int = 0
    answers: int = 0  # answers received, regenerated ones included
    rated: int = 0
    liked: int = 0  # thumbs up given (after noise)
    disliked: int = 0
    flipped: int = 0  # ratings that went against the rater's true preference (noise)
    regenerated: int = 0
    reasons: int = 0  # reason buttons clicked
    comments: int = 0
    errors: int = 0  # conversations that failed
    error_kinds: dict[str, int] = field(default_factory=dict)  # why they failed, counted by kind
    error_samples: list[str] = field(default_factory=list)
    last_error: str | None = None  # the kind of the latest failure
    missing_reason_prompts: int = 0  # thumbs down after which the app offered no reason toggles
    styles: dict[str, int] = field(default_factory=dict)  # styles of the first answers
    model_versions: dict[str, int] = field(default_factory=dict)  # which versions answered
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def failed(self, kind: str, detail: str) -> None:
        """Count a failed conversation under its kind (a short reason); keep a few details."""
        self.errors += 1
        self.last_error = kind
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if len(self.error_samples) < 5:
            self.error_samples.append(detail[:300])

    def errors_by_kind(self) -> list[str]:
        """Lines like "3 timed out after 120 s waiting for the answer", most frequent first."""
        return [f"{n} {kind}" for kind, n in sorted(self.error_kinds.items(), key=lambda item: -item[1])]


@dataclass
class Answer:
    question: str
    text: str | None  # None: the app failed to answer (see error)
    model_version: str | None = None
    style: str | None = None
    error: str | None = None
    seconds: float = 0.0


def answer_of(reply: Reply) -> tuple[dict[str, Any], str]:
    """(final message, exchange id) of a reply, or AnswerError when the app failed."""
    if reply.refused is not None:  # the wait it names changes from one refusal to the next: one kind
        raise AnswerError("refused: " + re.sub(r"try again in \d+ s", "try again later", reply.refused[:160]))
    final = reply.final()
    if final is None:
        # The app's errors ("The model took too long to answer.") are notices, not answers.
        error = next((m for m in reversed(reply.messages) if m.get("isError")), None)
        if error is not None:
            raise AnswerError(f"the app answered with an error: {str(error.get('output'))[:160]}")
        raise AnswerError(f"no answer message ({len(reply.messages)} other messages, {len(reply.tokens)} tokens)")
    exchange_id = (final.get("metadata") or {}).get("exchange_id")
    if not exchange_id:
        if final.get("isError"):  # what a user sees instead of an answer (e.g. the model timed out)
            raise AnswerError(f"the app answered with an error: {str(final.get('output'))[:160]}")
        raise AnswerError(f"the app answered without storing an answer: {str(final.get('output'))[:160]!r}")
    return final, str(exchange_id)


def error_kind(exc: BaseException, phase: str, limit_s: float) -> str:
    """A failed conversation's reason, short and without ids so that equal failures count together:
    "timed out after 120 s waiting for the answer", "refused: Too many messages ...", "HTTP 500 rating".
    `limit_s`: how long the phase may take (what a timeout ran past)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | httpx.TimeoutException):
        return f"timed out after {limit_s:g} s {phase}"
    if isinstance(exc, AnswerError):
        return str(exc).split("\n")[0][:160]
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {phase}"
    return f"{type(exc).__name__} {phase}: {str(exc)[:120]}"


class LoginError(RuntimeError):
    """The app refused a simulated user's login (wrong password, or the user is not configured)."""


async def check_logins(base_url: str, users: dict[str, str]) -> None:
    """Log each user in once: a wrong password is one clear error, not one per conversation."""
    for user, password in users.items():
        try:
            await ChatClient(base_url).login(user, password)
        except httpx.HTTPStatusError as exc:
            raise LoginError(f"the app at {base_url} refused the login of {user!r} (HTTP {exc.response.status_code}): check its password and AUTH_USERS") from None


class _Logins:
    """One login per user, shared by that user's conversations (as a browser keeps its cookie)."""

    def __init__(self, base_url: str, users: dict[str, str]) -> None:
        self.base_url = base_url
        self.users = users
        self.cookies: dict[str, str] = {}
        self.locks: dict[str, asyncio.Lock] = {u: asyncio.Lock() for u in users}

    async def client(self, user: str) -> ChatClient:
        async with self.locks[user]:
            if user not in self.cookies:
                first = ChatClient(self.base_url)
                await first.login(user, self.users[user])
                assert first.cookie is not None
                self.cookies[user] = first.cookie
        client = ChatClient(self.base_url)
        client.cookie = self.cookies[user]
        return client


async def _rate(client: ChatClient, exchange_id: str, decision: Decision, stats: SimStats, like: bool) -> None:
    """Click the thumb (and, after a thumbs down, the reason toggles the app puts on the answer)."""
    r = await client.rate(exchange_id, decision.value, comment=decision.comment)
    if r.status_code not in (200, 202):  # 202: queued while Redis is down
        raise AnswerError(f"rating refused: HTTP {r.status_code}\n{r.text[:200]}")
    stats.rated += 1
    stats.comments += decision.comment is not None
    stats.flipped += decision.value != int(like)
    if decision.value == 1:
        stats.liked += 1
        return
    stats.disliked += 1
    # The UI sends no reasons with the thumb: the app then adds a toggle per reason to the answer.
    try:
        offered = await client.offered(REASON_ACTION, len(ratings.DOWN_REASONS), lambda a: a.get("payload", {}).get("exchange_id") == exchange_id, timeout_s=10)
    except TimeoutError:
        stats.missing_reason_prompts += 1
        return
    toggles = {a["payload"]["reason"]: a for a in offered}
    for reason in decision.reasons:
        if reason in toggles:
            await client.action(REASON_ACTION, toggles[reason]["payload"], for_id=str(toggles[reason]["forId"]), answers=False)
            stats.reasons += 1


async def _conversation(
    index: int,
    logins: _Logins,
    user: str,
    questions: Sequence[str],
    policy: RaterPolicy,
    turns: int,
    seed: int,
    timeout_s: float,
    stats: SimStats,
) -> None:
    rng = random.Random(f"{seed}:{index}")
    phase, limit_s = "logging in", 5.0  # httpx's default timeout (ChatClient.login)
    client: ChatClient | None = None
    try:
        client = await logins.client(user)
        phase = "connecting"
        # The thread id from the same stream, named in the handshake as the UI names a thread to
        # resume (Chainlit starts a new one under it when none exists): the dataset's split by
        # thread is then the same in every seeded run.
        await client.connect(thread_id=seeded_uuid(rng))
        for _ in range(turns):
            question = rng.choice(list(questions))
            # The message id from the same stream: under LLM_SEED it fixes the answer's sampling
            # seed (bot/model.py sampling_seed), so a seeded run gets the same answers each time.
            message_id = seeded_uuid(rng)
            phase, limit_s = "waiting for the answer", timeout_s
            reply = await client.send(question, timeout_s=timeout_s, message_id=message_id)
            final, exchange_id = answer_of(reply)
            stats.answers += 1
            text = str(final.get("output") or reply.text)
            version = str((final.get("metadata") or {}).get("model_version", "?"))
            stats.model_versions[version] = stats.model_versions.get(version, 0) + 1
            decision = policy.decide(text, rng, question=question)
            stats.styles[str(decision.style)] = stats.styles.get(str(decision.style), 0) + 1
            if decision.rate:
                phase, limit_s = "rating", 30.0
                await _rate(client, exchange_id, decision, stats, decision.liked)
            if decision.regenerate:
                phase, limit_s = "waiting for the regenerated answer", timeout_s
                again = await client.action("regenerate", {"exchange_id": exchange_id}, for_id=str(final["id"]), timeout_s=timeout_s)
                final2, exchange_id2 = answer_of(again)
                stats.regenerated += 1
                stats.answers += 1
                text2 = str(final2.get("output") or again.text)
                second = policy.decide(text2, rng, question=question, must_rate=True, may_regenerate=False)
                phase, limit_s = "rating", 30.0
                await _rate(client, exchange_id2, second, stats, second.liked)
    except CHAT_ERRORS as exc:
        stats.conversations += 1
        kind = error_kind(exc, phase, limit_s)
        raise ConversationError(kind, f"{type(exc).__name__}: {str(exc)[:300] or kind}") from exc
    else:
        stats.conversations += 1  # held to its end (one cut off by Ctrl-C is not counted)
    finally:
        if client is not None:
            await client.close()


class ConversationError(RuntimeError):
    """A conversation failed: `kind` says why in a few words (counted), `detail` more."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind)
        self.kind, self.detail = kind, detail


async def simulate(
    base_url: str,
    users: dict[str, str],
    questions: Sequence[str],
    policy: RaterPolicy,
    n_conversations: int | None,
    turns_per_conversation: int = 1,
    seed: int = 0,
    concurrency: int = 4,
    timeout_s: float = 120,
    on_progress: Callable[[SimStats], None] | None = None,
    until: Callable[[SimStats], Awaitable[bool]] | None = None,
    stats: SimStats | None = None,
) -> SimStats:
    """n_conversations simulated chats (users taking turns), each answer handled as `policy` says;
    with `until`, conversations go on (at most n_conversations, when given) until it returns True
    (asked after each conversation). `stats`: filled as the run goes (read it after an interrupt).

    A conversation that fails (the app errs, times out, refuses a rating) is counted in `errors`
    by kind, with a few details, and the run goes on."""
    if not users:
        raise ValueError("simulate needs at least one user")
    if not questions:
        raise ValueError("simulate needs at least one question")
    if n_conversations is None and until is None:
        raise ValueError("simulate needs a number of conversations or a condition to stop at")
    stats = stats if stats is not None else SimStats()
    logins = _Logins(base_url, users)
    names = sorted(users)
    started = time.perf_counter()
    next_index = 0
    reached = False
    checking = asyncio.Lock()  # one `until` at a time: it may be slow (counts in Redis)

    async def worker() -> None:
        nonlocal next_index, reached
        while not reached and (n_conversations is None or next_index < n_conversations):
            i, next_index = next_index, next_index + 1  # conversations start in index order
            try:
                await _conversation(i, logins, names[i % len(names)], questions, policy, turns_per_conversation, seed, timeout_s, stats)
            except ConversationError as exc:
                stats.failed(exc.kind, exc.detail)
            if until is not None:
                async with checking:
                    reached = reached or await until(stats)
            if on_progress is not None:
                on_progress(stats)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:  # also when interrupted: the caller reports what was done
        stats.seconds = time.perf_counter() - started
    return stats


async def ask_each(
    base_url: str,
    user: str,
    password: str,
    questions: Sequence[str],
    concurrency: int = 4,
    timeout_s: float = 120,
    seed: int = 0,
) -> list[Answer]:
    """Ask each question once, each in a new conversation, as `user`; rate nothing. The i-th
    question's message id is fixed by (seed, i): under LLM_SEED, so is its answer."""
    logins = _Logins(base_url, {user: password})
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(i: int, question: str) -> Answer:
        async with gate:
            started = time.perf_counter()
            client = await logins.client(user)
            try:
                await client.connect()
                reply = await client.send(question, timeout_s=timeout_s, message_id=seeded_uuid(f"ask:{seed}:{i}"))
                final, _ = answer_of(reply)
                text = str(final.get("output") or reply.text)
                version = (final.get("metadata") or {}).get("model_version")
                return Answer(question, text, version, style_of(text), seconds=time.perf_counter() - started)
            except CHAT_ERRORS as exc:
                return Answer(question, None, error=f"{type(exc).__name__}: {str(exc)[:300]}", seconds=time.perf_counter() - started)
            finally:
                await client.close()

    return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(questions))))


def style_counts(answers: Sequence[Answer]) -> Counter[str]:
    return Counter(str(a.style) for a in answers if a.text is not None)

"""The gate's optional second opinion: a judge model compares the candidate's answers with those of
the model in service, through any OpenAI-compatible API (JUDGE_BASE_URL, JUDGE_MODEL).

For each of up to `judge_prompts` held-out prompts (the exact messages users sent), both models
answer (greedy, up to `judge_max_tokens` tokens, with the model's own generation config: its
end-of-turn tokens), and the judge is asked which answer is better. The two answers are shown in
a random order per prompt (seeded), so a judge's preference for the first or second position
cancels out. The judge replies with A, B or TIE; anything else counts as a tie and is counted
apart ("unparsed").

    win_rate = (candidate wins + ties / 2) / judged

The gate (`evaluate.decide`) then promotes only if win_rate > judge_min_win_rate (default 0.5),
on top of the preference-accuracy checks.

Errors:
    JudgeError(RuntimeError)   the judge API failed (unreachable, HTTP error, timeout): the run fails
                               and the model in service stays; the message names the endpoint
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from feedback.errors import ServiceError

INSTRUCTIONS = (
    "You are judging a chat assistant. Read the conversation, then two candidate answers to its last "
    "user message. Reply with exactly one word: A if answer A is better, B if answer B is better, TIE "
    "if they are equally good."
)


class JudgeError(ServiceError):
    """The judge model could not be asked; nothing was promoted."""


@dataclass
class Verdicts:
    judged: int
    wins: int  # the candidate's answer was preferred
    losses: int
    ties: int
    unparsed: int  # replies that were not A, B or TIE (counted as ties)
    judge: str

    @property
    def win_rate(self) -> float:
        return (self.wins + self.ties / 2) / self.judged if self.judged else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "win_rate": self.win_rate}


def distinct_prompts(prompts: Sequence[list[dict[str, Any]]], limit: int) -> list[list[dict[str, Any]]]:
    """The first `limit` different prompts, in order (a regenerated answer repeats its prompt)."""
    seen: set[str] = set()
    out: list[list[dict[str, Any]]] = []
    for p in prompts:
        key = repr(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
        if len(out) == limit:
            break
    return out


def answers(model_path: str, prompts: Sequence[list[dict[str, Any]]], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """One greedy answer per prompt from the model at model_path (loaded as the gate loads it)."""
    from training.evaluate import generate, load

    model, tokenizer = load(model_path)
    try:
        return generate(model, tokenizer, prompts, batch_size, do_sample=False, max_new_tokens=max_new_tokens)
    finally:
        del model


def _question(prompt: list[dict[str, Any]], first: str, second: str) -> str:
    conversation = "\n".join(f"{m['role']}: {m['content']}" for m in prompt if m["role"] != "system")
    return f"[Conversation]\n{conversation}\n\n[Answer A]\n{first}\n\n[Answer B]\n{second}\n\n[Your verdict: A, B or TIE]"


def _verdict(reply: str) -> str | None:
    word = reply.strip().strip(".!*'\"").upper()
    return word if word in ("A", "B", "TIE") else None


def judge(
    prompts: Sequence[list[dict[str, Any]]],
    candidate: Sequence[str],
    service: Sequence[str],
    *,
    base_url: str,
    model: str,
    api_key: str,
    timeout_s: float = 60.0,
    seed: int = 0,
) -> Verdicts:
    """Ask the judge about each (prompt, candidate answer, service answer), in a seeded random order."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=2)
    rng = random.Random(seed)
    wins = losses = ties = unparsed = 0
    for prompt, c, s in zip(prompts, candidate, service, strict=True):
        candidate_first = rng.random() < 0.5
        first, second = (c, s) if candidate_first else (s, c)
        try:
            reply = client.chat.completions.create(
                model=model,
                messages=[{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": _question(prompt, first, second)}],
                temperature=0,
                max_tokens=5,
            )
        except openai.OpenAIError as exc:
            raise JudgeError(f"the judge model {model!r} at {base_url} failed: {type(exc).__name__}: {exc}") from exc
        verdict = _verdict(reply.choices[0].message.content or "")
        if verdict is None:
            unparsed += 1
            ties += 1
        elif verdict == "TIE":
            ties += 1
        elif (verdict == "A") == candidate_first:
            wins += 1
        else:
            losses += 1
    return Verdicts(len(prompts), wins, losses, ties, unparsed, model)

"""The promote gate: does the candidate prefer what people preferred, more than the model in service?

A model's log-prob of an answer is the sum of the log-probabilities of the answer's tokens given
the prompt (chat template applied, the answer as the assistant turn). Raw log-probs do not
compare answers fairly: per token, a long, predictable answer scores higher than a short one
whatever the model learned, so a base model "prefers" long answers before any training (measured
on the demo model: AUC 0.74 for a rater who likes detailed answers, 0.21 for one who likes
concise ones). So each answer's score is the model's shift from the base model on it, the
implicit reward of KTO and DPO with the base as reference (TRL's rewards/chosen, /rejected):

    score(y | x)   = logp_model(y | x) - logp_base(y | x)        (sums over the answer's tokens)

A shift averaged per token instead ranked worse: on the demo model it undervalued the gain of a
long liked answer against a short disliked one (AUC 0.29 against 0.56 with sums, same rows, for
a candidate that did move toward the liked style: 27% -> 44% of its sampled answers).

The base model scores 0 everywhere (no preference learned yet). On the held-out split:

    dpo_accuracy   share of DPO pairs whose chosen answer scores higher than the rejected one
                   (a tie counts half)
    kto_auc        over the unpaired ratings, the probability that a liked answer scores higher
                   than a disliked one (AUC, Mann-Whitney; ties count half). Answers to different
                   prompts are compared, so it is a noisier signal than a pair.
    accuracy       the two pooled, each weighted by its rows:
                   (dpo_pairs * dpo_accuracy + kto_rows * kto_auc) / (dpo_pairs + kto_rows);
                   kto_rows count only when both classes are present (else there is no AUC).
                   None when neither can be computed. The base model: 0.5.
    liked_logp     the raw log-prob per token of the liked answers (KTO thumbs up and DPO chosen
                   answers), averaged

All models are scored on the same rows. A row longer than max_length tokens keeps its last
max_length tokens (the start of the prompt goes, the answer stays) and is counted as truncated.

`compare` promotes only if candidate accuracy > service accuracy + margin, and the candidate's
liked_logp is at most `max_liked_drop` below the service's. Accuracy alone only ranks answers: a
DPO run that pushes the rejected answers down can push the liked ones down with them and leave
a model that ranks well yet writes neither (measured in the experiment: accuracy 0.789 vs 0.788
promoted a model whose answers matched no style 2 times in 3). `with_judge` adds the optional
judge model's verdict (training/judge.py) to a decision that passed.

Errors:
    EvalError(RuntimeError)   a model cannot be loaded to be scored (names it); e.g. the model in
                              service is a remote API model with no local weights
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from feedback.errors import ServiceError

# What loading a model or tokenizer from a damaged or foreign directory raises (training too).
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, SafetensorError)


class EvalError(ServiceError):
    """A model could not be loaded to be scored; the message names it."""


@dataclass
class Decision:
    promote: bool
    candidate: dict[str, Any]
    service: dict[str, Any]
    margin: float
    reason: str


@dataclass
class _Encoded:
    ids: list[int]  # prompt + answer, already cut to max_length
    answer_len: int  # the last answer_len tokens are the answer
    truncated: bool = False


def chat_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], **kwargs: Any) -> list[int]:
    out: Any = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)  # a BatchEncoding
    return list(out["input_ids"])


def encode(tokenizer: PreTrainedTokenizerBase, prompt: list[dict[str, Any]], answer: list[dict[str, Any]], max_length: int) -> _Encoded:
    """Tokens of prompt + answer as TRL trains on them: the answer starts where the prompt with a
    generation prompt and the full conversation stop agreeing."""
    prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
    full = chat_ids(tokenizer, prompt + answer)
    start = 0
    while start < min(len(prompt_ids), len(full)) and prompt_ids[start] == full[start]:
        start += 1
    start = max(start, 1)  # the first token has no prediction
    answer_len = len(full) - start
    if len(full) <= max_length:
        return _Encoded(full, answer_len)
    return _Encoded(full[-max_length:], min(answer_len, max_length - 1), truncated=True)


@torch.no_grad()
def score(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[_Encoded], batch_size: int = 8) -> list[float]:
    """Log-prob of each row's answer (the sum over its tokens). Left padding lines the answers up at the end, so
    only the last (longest answer + 1) positions' logits are computed (`logits_to_keep`)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores: list[float] = []
    for i in range(0, len(rows), batch_size):
        batch = rows[i : i + batch_size]
        width = max(len(r.ids) for r in batch)
        input_ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in batch], device=device)
        attention = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in batch], device=device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        keep = max(r.answer_len for r in batch) + 1
        logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep).logits
        logits = logits[:, :-1].float()  # position t predicts token t + 1
        targets = input_ids[:, -(keep - 1) :]
        token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        for row, logps in zip(batch, token_logps, strict=True):
            scores.append(logps[-row.answer_len :].sum().item())
    return scores


@torch.no_grad()
def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[dict[str, Any]]], batch_size: int = 8, **options: Any
) -> list[str]:
    """One answer per conversation, the chat template applied as a server would; `options` go to
    `model.generate` (do_sample, temperature, max_new_tokens...)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = []
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues each row's end
    try:
        for i in range(0, len(conversations), batch_size):
            texts = [tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in conversations[i : i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            generated = model.generate(**enc, pad_token_id=pad, **options)  # type: ignore[operator]  # transformers types generate oddly
            out += tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def auc(positive: list[float], negative: list[float]) -> float:
    """P(a positive scores above a negative), ties half: the Mann-Whitney U statistic over n+ n-."""
    labelled = sorted([(s, 1) for s in positive] + [(s, 0) for s in negative])
    rank_sum, i = 0.0, 0
    while i < len(labelled):  # average ranks over runs of equal scores
        j = i
        while j < len(labelled) and labelled[j][0] == labelled[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2
        rank_sum += mean_rank * sum(label for _, label in labelled[i:j])
        i = j
    n_pos, n_neg = len(positive), len(negative)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _device_and_dtype() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.device("cuda", torch.cuda.current_device()), dtype
    return torch.device("cpu"), torch.float32


def load(model_path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    device, dtype = _device_and_dtype()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    except LOAD_ERRORS as exc:
        raise EvalError(f"cannot load model {model_path!r} to score it: {exc}") from exc
    if tokenizer.chat_template is None:
        raise EvalError(f"model {model_path!r} has no chat template")
    return model.to(device).eval(), tokenizer  # type: ignore[arg-type]  # (to() is typed for modules)


@dataclass
class _Held:
    """The held-out rows, in the order they are scored: the KTO answers, then each pair's chosen
    and rejected answer."""

    kto: list[dict[str, Any]]
    dpo: list[dict[str, Any]]

    @classmethod
    def of(cls, rows_kto: Dataset | None, rows_dpo: Dataset | None) -> _Held:
        return cls(list(_rows(rows_kto, ("prompt", "completion", "label"))), list(_rows(rows_dpo, ("prompt", "chosen", "rejected"))))

    def log_probs(self, model_path: str, max_length: int, batch_size: int) -> tuple[list[float], list[int]]:
        """Log-prob of every answer under one model, and its length in tokens (negative: the row
        was cut to max_length)."""
        model, tokenizer = load(model_path)
        try:
            encoded = [encode(tokenizer, r["prompt"], r["completion"], max_length) for r in self.kto]
            encoded += [encode(tokenizer, r["prompt"], r[side], max_length) for r in self.dpo for side in ("chosen", "rejected")]
            return score(model, tokenizer, encoded, batch_size), [-e.answer_len if e.truncated else e.answer_len for e in encoded]
        finally:
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def metrics(self, logps: list[float], base_logps: list[float], lengths: list[int]) -> dict[str, Any]:
        scores = [m - b for m, b in zip(logps, base_logps, strict=True)]
        truncated = sum(n < 0 for n in lengths)
        per_token = [lp / max(abs(n), 1) for lp, n in zip(logps, lengths, strict=True)]
        k = len(self.kto)
        kto_scores, dpo_scores = scores[:k], scores[k:]
        out: dict[str, Any] = {"kto_rows": k, "dpo_pairs": len(self.dpo), "truncated": truncated}
        positive = [s for s, r in zip(kto_scores, self.kto, strict=True) if r["label"]]
        negative = [s for s, r in zip(kto_scores, self.kto, strict=True) if not r["label"]]
        out["kto_desirable"], out["kto_undesirable"] = len(positive), len(negative)
        out["kto_auc"] = auc(positive, negative) if positive and negative else None
        wins = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(dpo_scores[0::2], dpo_scores[1::2], strict=True)]
        out["dpo_accuracy"] = sum(wins) / len(wins) if wins else None
        out["kto_mean_score"] = {"desirable": _mean(positive), "undesirable": _mean(negative)}
        liked = [lp for lp, r in zip(per_token[:k], self.kto, strict=True) if r["label"]] + per_token[k::2]
        out["liked_logp"] = _mean(liked)

        weights = [(len(self.dpo), out["dpo_accuracy"]), (k, out["kto_auc"])]
        weights = [(n, a) for n, a in weights if a is not None and n > 0]
        total = sum(n for n, _ in weights)
        out["accuracy"] = sum(n * a for n, a in weights) / total if total else None
        out["rows"] = total
        return out


def preference_accuracy(
    model_path: str, base_path: str, rows_kto: Dataset, rows_dpo: Dataset, max_length: int, batch_size: int = 8
) -> dict[str, Any]:
    """Score the held-out rows with one model against the base; see the module docstring."""
    held = _Held.of(rows_kto, rows_dpo)
    base, lengths = held.log_probs(base_path, max_length, batch_size)
    logps = held.log_probs(model_path, max_length, batch_size)[0] if model_path != base_path else base
    return held.metrics(logps, base, lengths)


def _rows(rows: Dataset | None, columns: tuple[str, ...]) -> Iterable[dict[str, Any]]:
    if rows is None or len(rows) == 0:
        return []
    return rows.select_columns(list(columns))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compare(
    candidate_path: str,
    service_path: str,
    base_path: str,
    test_kto: Dataset,
    test_dpo: Dataset,
    margin: float,
    max_length: int,
    batch_size: int = 8,
    max_liked_drop: float = 0.5,
) -> Decision:
    """Promote only if the candidate's accuracy beats the model in service's by more than margin
    and it has not lost the liked answers (see the module docstring). Three models are scored
    (two when the base is in service), one at a time."""
    held = _Held.of(test_kto, test_dpo)
    base, lengths = held.log_probs(base_path, max_length, batch_size)
    service = base if service_path == base_path else held.log_probs(service_path, max_length, batch_size)[0]
    candidate = held.log_probs(candidate_path, max_length, batch_size)[0]
    return decide(held.metrics(candidate, base, lengths), held.metrics(service, base, lengths), margin, max_liked_drop)


def decide(candidate: dict[str, Any], service: dict[str, Any], margin: float, max_liked_drop: float) -> Decision:
    """The gate's rule on two models' scores (`preference_accuracy` outputs)."""
    c, s = candidate["accuracy"], service["accuracy"]
    if c is None or s is None:
        return Decision(False, candidate, service, margin, "no held-out rows to compare on (need DPO pairs or both kinds of KTO ratings)")
    c_liked, s_liked = candidate.get("liked_logp"), service.get("liked_logp")
    if c_liked is not None and s_liked is not None and c_liked < s_liked - max_liked_drop:
        reason = (
            f"candidate lost the liked answers: their mean log-prob per token fell from {s_liked:.3f} to {c_liked:.3f} "
            f"(more than max_liked_drop {max_liked_drop:g}), though its preference accuracy is {c:.3f} vs {s:.3f}"
        )
        return Decision(False, candidate, service, margin, reason)
    if c > s + margin:
        reason = f"candidate preference accuracy {c:.3f} > service {s:.3f} + margin {margin:g} on {candidate['rows']} held-out rows"
        return Decision(True, candidate, service, margin, reason)
    reason = f"candidate preference accuracy {c:.3f} is not above service {s:.3f} + margin {margin:g} on {candidate['rows']} held-out rows"
    return Decision(False, candidate, service, margin, reason)


def with_judge(decision: Decision, verdicts: Any, min_win_rate: float) -> Decision:
    """A decision that passed the accuracy checks, now also subject to the judge's win rate
    (`training.judge.Verdicts`); its numbers are recorded with the candidate's either way."""
    candidate = {**decision.candidate, "judge": verdicts.to_dict()}
    rate = verdicts.win_rate
    summary = f"judge {verdicts.judge}: candidate won {verdicts.wins}, lost {verdicts.losses}, tied {verdicts.ties} of {verdicts.judged}"
    if verdicts.judged and rate > min_win_rate:
        return Decision(decision.promote, candidate, decision.service, decision.margin, f"{decision.reason}; {summary} (win rate {rate:.3f} > {min_win_rate:g})")
    return Decision(False, candidate, decision.service, decision.margin, f"{summary}: win rate {rate:.3f} is not above {min_win_rate:g} (preference accuracy alone: {decision.reason})")

"""The offline demo model: a small chat model trained from scratch, on two CPU cores, in minutes.

    build_demo_model(out_dir, steps=None, minutes=4.0, seed=0) -> out_dir
    sample_answers(model_dir, questions, ...) -> list[str]      answers sampled as a server would
    style_shares(answers) -> {style or None: share}

`chatbot up --demo` runs the whole product on it, with no download; `chatbot demo-model` (or
`python -m demo.model --out DIR`) just builds it.

What it is: a byte-level BPE tokenizer (~1.8k tokens) and a 4-layer Qwen2 (hidden size 128,
1.25 M parameters, 5 MB) trained from scratch as a causal LM on the synthetic corpus of
`demo.corpus`: questions about prompt engineering, fine-tuning, RAG and evaluation, each
answered in one of four styles drawn uniformly at random.
The style is fixed by the answer's first token ("In short:", "Let me explain in detail.", "Key
points:", "Great question!"), so the model picks one of the four about uniformly when sampled, and
a preference fine-tune (training/train.py) that learns which style users like moves that one
choice: the demo shows the ratings loop working. Contexts vary as in the app (no system prompt,
a system prompt, the app's system prompt with few-shot examples and an earlier turn): the loss is
on the last answer only, so the model learns to answer the last question whatever comes before.
Training ends by evening out the style choice (`calibrate_styles`): each style gets 25% of the
probability of an answer's first token.

Conventions of `demo.tiny`: ChatML template, eos `<|im_end|>`, a distinct pad token,
sampling on in the generation config. The directory loads by path with `AutoModelForCausalLM` /
`AutoTokenizer`, is served by `transformers serve` and fine-tuned by `training.train`.

Deterministic for a given seed and `steps` (same machine, same thread count). With a time budget
instead (`steps=None`), the number of steps depends on the machine's speed: the learning-rate
schedule follows the clock, and training ends when the budget is spent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from demo import corpus as demo_corpus
from demo import tiny as tiny_model
from demo.tiny import EOS, PAD, START

# Model and training knobs, chosen so that a 4-minute build on 2 (loaded) CPU cores gives coherent
# answers: 400-800 steps of 2048 tokens; the loss on answers falls below 0.1 after ~400.
VOCAB_SIZE = 2048
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 128, 4, 4, 2, 384
MAX_POSITIONS = 2048  # the app may send long histories; training sequences are < 400 tokens
TOKENS_PER_BATCH = 2048  # padded tokens per optimizer step
# Context kinds (see demo_corpus.random_context) and how often each is trained on.
CONTEXT_KINDS = {"bare": 0.5, "system": 0.25, "full": 0.25}
LR, WARMUP, MIN_LR_RATIO, WEIGHT_DECAY = 3e-3, 30, 0.1, 0.01
SAVE_RESERVE_S = 10.0  # of the time budget, kept for calibrate_styles and saving
ESTIMATE_EVERY = 20  # with a time budget: steps between estimates of the total (progress bar)
STYLE_PROMPTS = 256  # training prompts the style choice is evened out on (calibrate_styles)
BUILD_INFO = "demo_build.json"  # steps, final loss, seconds, seed, threads, parameters, style probabilities


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the demo corpus (training questions only), ChatML special tokens."""
    texts = [*demo_corpus.tokenizer_texts(), "system\nuser\nassistant\n"]
    return tiny_model.build_tokenizer(vocab_size, texts, MAX_POSITIONS)


def build_config(tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,  # the style-opening tokens' output rows are calibrated alone
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
        pad_token_id=cast(int, tokenizer.convert_tokens_to_ids(PAD)),
    )


def generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Sampling on (as real chat models ship it; a request's temperature applies); pad and
    <|im_start|> never emitted; at least one token."""
    eos_id, pad_id = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD)
    return GenerationConfig(
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        do_sample=True,
        temperature=0.8,
        max_new_tokens=256,
        min_new_tokens=1,
        suppress_tokens=[pad_id, tokenizer.convert_tokens_to_ids(START)],
    )


def encode(tokenizer: PreTrainedTokenizerFast, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """input_ids and labels of one conversation: the prompt as the chat template renders it for
    generation, then the last (assistant) message and <|im_end|>; labels only on the latter."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(messages[-1]["content"] + EOS, add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


class Batches:
    """Endless batches of freshly drawn conversations, one context kind per batch (so padding is
    small), about TOKENS_PER_BATCH padded tokens each. Deterministic for a seed."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, seed: int) -> None:
        self.tokenizer = tokenizer
        self.rng = random.Random(seed)
        self.pad_id = cast(int, tokenizer.convert_tokens_to_ids(PAD))
        self.kinds, self.weights = list(CONTEXT_KINDS), list(CONTEXT_KINDS.values())
        self.styles: list[str] = []

    def __next__(self) -> dict[str, torch.Tensor]:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        rows: list[tuple[list[int], list[int]]] = []
        longest = 0
        while True:
            if not self.styles:  # styles in shuffled rounds: every style equally often, batch after batch
                self.styles = self.rng.sample(list(demo_corpus.STYLES), len(demo_corpus.STYLES))
            style = self.styles.pop()
            ids, labels = encode(self.tokenizer, demo_corpus.chat_example(self.rng, kind, style=style))
            if rows and (len(rows) + 1) * max(longest, len(ids)) > TOKENS_PER_BATCH:
                self.styles.append(style)  # this example is dropped, its style is the next one's
                break
            rows.append((ids, labels))
            longest = max(longest, len(ids))
        input_ids = torch.full((len(rows), longest), self.pad_id)
        label_t = torch.full((len(rows), longest), -100)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, (ids, labels) in enumerate(rows):  # right padding
            input_ids[i, : len(ids)] = torch.tensor(ids)
            label_t[i, : len(ids)] = torch.tensor(labels)
            mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "labels": label_t, "attention_mask": mask}


def lr_factor(progress: float) -> float:
    """Cosine decay from 1 to MIN_LR_RATIO over progress in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))


def build_demo_model(
    out_dir: Path, *, steps: int | None = None, minutes: float = 4.0, seed: int = 0, progress: bool = True, threads: int | None = None
) -> Path:
    """Train the demo tokenizer and model and save both into out_dir (loadable by path); return it.

    steps: optimizer steps to train (deterministic for a seed and thread count); None: as many as
    fit in `minutes` (the whole build, saving included). threads: torch's intra-op threads during
    the build; None: `auto_threads()`."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or auto_threads())
    try:
        return _build(Path(out_dir), steps, minutes, seed, progress)
    finally:
        torch.set_num_threads(previous_threads)


def auto_threads() -> int:
    """torch's default thread count, less the cores other processes keep busy (1-minute load
    average). On a 2-core machine shared with another training job, 2 threads ran a step 5-10x
    slower than 1 (each op waits for its slowest thread, and one of them shares a core)."""
    default = torch.get_num_threads()
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return default
    return max(1, min(default, round((os.cpu_count() or default) - busy)))


def _build(out_dir: Path, steps: int | None, minutes: float, seed: int, progress: bool) -> Path:
    from tqdm.auto import tqdm

    started = time.monotonic()
    budget_s = max(minutes * 60 - SAVE_RESERVE_S, 1.0)
    torch.manual_seed(seed)  # the weights' initialisation; the data has its own random.Random(seed)
    tokenizer = build_tokenizer()
    model = Qwen2ForCausalLM(build_config(tokenizer))
    model.generation_config = generation_config(tokenizer)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=(0.9, 0.95)
    )
    batches = Batches(tokenizer, seed)

    # With a time budget the schedule follows the clock, and the bar's total is an estimate
    # updated as the speed (the machine's load) changes.
    bar = tqdm(total=steps, desc="Training the demo model", unit="step", disable=not progress, dynamic_ncols=True)
    step, loss_ema = 0, math.nan
    window_start, window_step = time.monotonic(), 0
    while True:
        elapsed = time.monotonic() - started
        done = step / steps if steps is not None else elapsed / budget_s
        if done >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = LR * lr_factor(done) * min(1.0, (step + 1) / WARMUP)
        loss = model(**next(batches)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_ema = loss.item() if step == 1 else 0.9 * loss_ema + 0.1 * loss.item()
        if steps is None and step % ESTIMATE_EVERY == 0:
            now = time.monotonic()
            per_step = (now - window_start) / (step - window_step)
            bar.total = step + max(0, round((budget_s - (now - started)) / per_step))
            window_start, window_step = now, step
        bar.update(1)
        bar.set_postfix(loss=f"{loss_ema:.3f}", refresh=False)
    bar.close()

    model.eval()
    before, after = calibrate_styles(model, tokenizer, seed)
    info = {
        "steps": step,
        "final_loss": round(loss_ema, 4),
        "seconds": round(time.monotonic() - started, 1),
        "seed": seed,
        "threads": torch.get_num_threads(),
        "parameters": model.num_parameters(),
        "style_probabilities": {"trained": {k: round(v, 3) for k, v in before.items()}, "calibrated": {k: round(v, 3) for k, v in after.items()}},
    }
    _save(out_dir, model, tokenizer, info)
    return out_dir


def style_opening_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The first token of each style's marker ("In", "Let", "Key", "Great": without the leading
    space of a mid-sentence word, so in the corpus only answers open with them)."""
    ids = {s: tokenizer(m, add_special_tokens=False)["input_ids"][0] for s, m in demo_corpus.STYLE_MARKERS.items()}
    assert len(set(ids.values())) == len(ids), "two styles open with the same token"
    return ids


def calibrate_styles(
    model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, seed: int, iterations: int = 200
) -> tuple[dict[str, float], dict[str, float]]:
    """Even out the style choice; return each style's mean probability before and after.

    Training draws the styles uniformly, yet a short run ends with the choice a few points off in
    some direction (13% to 34% was seen), and sampling below temperature 1 widens that. So: fit
    the output rows (lm_head) of the four style-opening tokens alone, with everything else frozen,
    so that at the first answer position of STYLE_PROMPTS training prompts each style gets a
    quarter of the probability (mean log-probability of the four, maximised: a small convex
    problem on cached hidden states, solved in well under a second)."""
    rng = random.Random(seed + 1)
    ids = torch.tensor(list(style_opening_ids(tokenizer).values()))
    kinds = random.Random(seed + 2).choices(list(CONTEXT_KINDS), list(CONTEXT_KINDS.values()), k=STYLE_PROMPTS)
    prompts = [
        tokenizer.apply_chat_template(demo_corpus.chat_example(rng, kind)[:-1], tokenize=False, add_generation_prompt=True)
        for kind in sorted(kinds)  # grouped by kind: less padding
    ]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    hidden = []
    with torch.no_grad():
        for i in range(0, len(prompts), 64):
            enc = tokenizer(prompts[i : i + 64], return_tensors="pt", padding=True, add_special_tokens=False)
            hidden.append(model.model(**enc).last_hidden_state[:, -1])
    tokenizer.padding_side = side
    h = torch.cat(hidden)
    weight = model.lm_head.weight
    with torch.no_grad():
        logits = h @ weight.T
        before = torch.softmax(logits, dim=-1)[:, ids].mean(0)
    rows = weight[ids].detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([rows], lr=1e-2)
    for _ in range(iterations):
        log_probs = torch.log_softmax(logits.index_copy(1, ids, h @ rows.T), dim=-1)[:, ids]
        loss = -log_probs.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        weight[ids] = rows
        after = torch.softmax(h @ weight.T, dim=-1)[:, ids].mean(0)
    return dict(zip(demo_corpus.STYLE_MARKERS, before.tolist(), strict=False)), dict(zip(demo_corpus.STYLE_MARKERS, after.tolist(), strict=False))


def _save(out_dir: Path, model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, info: dict[str, Any]) -> None:
    """Write into a sibling directory, then move the files in, config.json last: a directory with
    a config.json holds a complete model (what `up --demo` checks), even after an interrupted build."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / BUILD_INFO).write_text(json.dumps(info, indent=2))
        out_dir.mkdir(exist_ok=True)
        (out_dir / "config.json").unlink(missing_ok=True)
        for f in sorted(Path(tmp).iterdir(), key=lambda f: f.name == "config.json"):
            os.replace(f, out_dir / f.name)


# --- measuring ----------------------------------------------------------------------------------


def sample_answers(
    model_dir: Path | str | Any,
    questions: Sequence[str],
    *,
    context: Sequence[dict[str, str]] = (),
    temperature: float = 0.8,
    max_new_tokens: int = 60,
    seed: int = 0,
    batch_size: int = 50,
    tokenizer: Any = None,
) -> list[str]:
    """One sampled answer per question (repeat questions for more), the prompt rendered with the
    chat template after `context` (e.g. a system prompt and few-shot examples), as a server would.
    model_dir: a directory, or an already loaded model (then pass its tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(model_dir, (str, Path)):
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    elif tokenizer is None:
        raise ValueError("pass the tokenizer along with a loaded model")
    else:
        model = model_dir
    from training.evaluate import generate

    model.eval()
    torch.manual_seed(seed)
    conversations = [[*context, {"role": "user", "content": q}] for q in questions]
    return generate(model, tokenizer, conversations, batch_size, do_sample=True, temperature=temperature, max_new_tokens=max_new_tokens)


def style_shares(answers: Sequence[str]) -> dict[str | None, float]:
    """Share of each style (None: unrecognised) among answers, every style listed."""
    counts: dict[str | None, int] = {s: 0 for s in [*demo_corpus.STYLES, None]}
    for a in answers:
        counts[demo_corpus.style_of(a)] += 1
    return {s: n / max(len(answers), 1) for s, n in counts.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the offline demo chat model (a few minutes on a CPU).")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the model into")
    parser.add_argument("--minutes", type=float, default=4.0, help="time budget of the whole build")
    parser.add_argument("--steps", type=int, default=None, help="train exactly this many steps instead (deterministic)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_demo_model(args.out, steps=args.steps, minutes=args.minutes, seed=args.seed))


if __name__ == "__main__":
    main()

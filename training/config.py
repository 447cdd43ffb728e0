"""Options of the retraining job: one dataclass, which is also the `chatbot retrain` CLI.

In the style of TRL's `<method>_config.py`: every field has `help` metadata and the checks live in
`__post_init__`, so a bad option fails before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from feedback.settings import Settings

# The demo model's retraining recipe (`chatbot retrain --demo`, scheduled by `chatbot up --demo`,
# used by the experiment). The demo model is small and its users few: a learning rate that moves
# its style choice within a cycle or two (measured with ~110 ratings a cycle: 2e-3 left a
# "detailed" rater's approval flat over three cycles, 5e-3 took both opposite raters above 90%,
# docs/experiment; at that rate a continued KTO run sometimes collapses - the liked answers fall
# to -11 nats a token - and the gate's max_liked_drop check keeps it out), and every user's
# ratings kept (max_user_share 1: with one or a few users a share cap would drop most of them).
DEMO_RECIPE: dict[str, Any] = dict(
    min_ratings=10, max_user_share=1.0, method="auto", learning_rate=5e-3, epochs=3.0, batch_size=8,
    lora_r=8, lora_alpha=16, max_length=512, beta=0.1, seed=0,
)  # fmt: skip

# The real model's retraining recipe (`bench.experiment --model real`: SmolLM2-135M-Instruct in
# data/default-model, ~64 ratings a cycle, one recipe for every rater), continuing from the adapter
# in service each cycle. Chosen by one-cycle trials on 2 shared CPU cores (docs/experiment-real/
# NOTES.md): 2e-3 for 4 KTO steps made answers short but collapsed them (median 13 words, on-topic
# 85% -> 46%), hence a lower rate; one epoch because a KTO step costs minutes on a CPU (rows of
# ~240 prompt tokens - the app's system prompt and few-shot examples - plus the answer, hence
# max_length 384: no row of a 128-token answer is longer). Each cycle trains on its new ratings
# only (train_new_only): the adapter in service has seen the older ones, and retraining on every
# row made each cycle longer than the last (89 rows took 49 minutes in the second cycle).
REAL_RECIPE: dict[str, Any] = dict(
    min_ratings=10, max_user_share=1.0, method="kto", learning_rate=5e-4, epochs=1.0, batch_size=8,
    lora_r=16, lora_alpha=32, max_length=384, beta=0.1, seed=0, train_new_only=True,
)  # fmt: skip


@dataclass
class RetrainConfig:
    # --- collect / dataset ---
    full_rebuild: bool = field(default=False, metadata={"help": "Rebuild the dataset from every rating, not only those since the last successful run."})
    min_new_ratings: int = field(default=Settings.model_fields["min_new_ratings"].default, metadata={"help": "Skip the run when fewer ratings came in since the last successful run."})
    min_ratings: int = field(default=20, metadata={"help": "Refuse to train on fewer rated answers in all."})
    max_user_share: float = field(default=0.2, metadata={"help": "Largest share of the dataset one user may contribute (their newest ratings are kept)."})
    test_fraction: float = field(default=0.2, metadata={"help": "Share of threads held out for evaluation (split by thread, deterministic)."})
    split_seed: str = field(default="v1", metadata={"help": "Salt of the deterministic thread split; change it to draw a new split."})
    scrub_pii: bool = field(default=True, metadata={"help": "Replace emails, phone numbers, card numbers and addresses before anything is written."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub dataset repo (owner/name) to upload each dataset version to, private, configs kto and dpo (needs HF_TOKEN; HF_ENDPOINT for another hub). A failed upload is recorded with the run and does not fail it."})

    # --- train ---
    method: Literal["auto", "kto", "dpo"] = field(default="auto", metadata={"help": "auto: DPO when there are at least min_pairs real pairs, else KTO."})
    min_pairs: int = field(default=32, metadata={"help": "Real preference pairs needed before auto picks DPO."})
    continue_from_active: bool = field(default=True, metadata={"help": "Start from the adapter in service (when there is one) instead of the base model."})
    train_new_only: bool = field(default=False, metadata={"help": "Continuing from the adapter in service: train only on the rows its dataset lacked (new ratings, changed labels); every row when fewer than a batch are new or that dataset is gone."})
    beta: float = field(default=0.1, metadata={"help": "KTO/DPO beta: how far the model may move from the reference."})
    sft_weight: float = field(default=1.0, metadata={"help": "DPO only: weight of an NLL term on the chosen answers (RPO), which keeps DPO from pushing them down with the rejected ones; 0 = plain DPO."})
    # Defaults: the training numbers of REAL_RECIPE, the default model's (measured on SmolLM2-135M,
    # docs/experiment-real/NOTES.md: 4 KTO steps at 5e-4 took a "short" rater's held-out approval
    # from 37.5% to 62.5% with answers on topic; 2e-3 collapsed them).
    learning_rate: float = field(default=5e-4, metadata={"help": "Optimizer learning rate."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training split."})
    batch_size: int = field(default=8, metadata={"help": "Per-device batch size (KTO needs more than 1)."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    max_length: int = field(default=1024, metadata={"help": "Longest prompt+answer in tokens; longer rows are dropped and counted."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    processes: int = field(default=1, metadata={"help": "Training processes, one per GPU: above 1, the training step runs as DDP processes under torchrun."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 training; default: on when a GPU supports it, off on CPU."})
    seed: int = field(default=0, metadata={"help": "Random seed of the training run."})

    # --- evaluate / promote ---
    margin: float = field(default=0.0, metadata={"help": "Promote only if the candidate's preference accuracy beats the model in service by more than this."})
    judge_prompts: int = field(default=0, metadata={"help": "Held-out prompts on which JUDGE_MODEL compares the two models' answers, once the other checks pass; 0 = no judge."})
    judge_min_win_rate: float = field(default=0.5, metadata={"help": "With a judge: promote only if the candidate's win rate (ties half) is above this."})
    judge_max_tokens: int = field(default=256, metadata={"help": "With a judge: longest answer each model writes for it, in tokens."})
    max_liked_drop: float = field(default=0.5, metadata={"help": "Reject a candidate whose log-probability per token of the held-out liked answers is more than this (nats) below the served model's."})

    def __post_init__(self) -> None:
        checks = [
            (self.min_new_ratings >= 0, "min_new_ratings must be >= 0"),
            (self.min_ratings >= 2, "min_ratings must be >= 2 (one of each class at least)"),
            (0 < self.max_user_share <= 1, "max_user_share must be in (0, 1]"),
            (0 < self.test_fraction < 1, "test_fraction must be in (0, 1)"),
            (self.method in ("auto", "kto", "dpo"), "method must be auto, kto or dpo"),
            (self.min_pairs >= 1, "min_pairs must be >= 1"),
            (self.beta > 0, "beta must be > 0"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.epochs > 0, "epochs must be > 0"),
            (self.batch_size >= 2, "batch_size must be >= 2 (KTO computes its KL term across the batch)"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (self.processes >= 1, "processes must be >= 1"),
            (self.max_length >= 16, "max_length must be >= 16"),
            (self.lora_r >= 1 and self.lora_alpha >= 1, "lora_r and lora_alpha must be >= 1"),
            (self.margin >= 0, "margin must be >= 0"),
            (self.max_liked_drop > 0, "max_liked_drop must be > 0"),
            (self.judge_prompts >= 0, "judge_prompts must be >= 0"),
            (0 <= self.judge_min_win_rate < 1, "judge_min_win_rate must be in [0, 1)"),
            (self.judge_max_tokens >= 1, "judge_max_tokens must be >= 1"),
            (self.sft_weight >= 0, "sft_weight must be >= 0"),
        ]
        errors = [msg for ok, msg in checks if not ok]
        if errors:
            raise ValueError("Invalid retrain options: " + "; ".join(errors))

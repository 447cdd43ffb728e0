"""The whole loop on the real default model (SmolLM2-135M-Instruct, converted from its wheel):
`chatbot up` serves it with no LLM_MODEL set, users chat and rate, `chatbot retrain` trains a LoRA
adapter on it, the gate decides, and the next answer comes from the new version with no restart."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from feedback import registry
from launcher.process import child_env, free_port, wait_until
from sim.client import ChatClient
from support import seed
from support.services import ROOT, RedisServer, run_cli
from support.session import USERS, run_id

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "What is a volcano?", "Name a primary colour.", "What is water made of?", "What does a bee make?", "How many legs does a spider have?"]
# Enough rated rows for the job to build a train and a held-out split with both kinds of rating.
SHORT = ["Paris.", "A mountain that erupts lava.", "Red.", "Hydrogen and oxygen.", "Honey.", "Eight."]
LONG = [
    "That is a great question, and there is a lot to say about it, so let me start from the very beginning and explain the history first.",
    "Well, it depends on many things, and people have argued about it for a long time, so the answer is not simple at all.",
]
# A short run: the point is the path (data -> TRL + LoRA on the real model -> gate -> serve), not quality.
RETRAIN = ["--now", "--min-ratings", "10", "--max-user-share", "1.0", "--epochs", "1", "--batch-size", "4", "--max-length", "192", "--lora-r", "4", "--lora-alpha", "8", "--learning-rate", "1e-3"]



def seed_ratings(url: str) -> None:
    """24 rated answers over 8 threads, each thread with a liked and a disliked one."""
    seed.seed_rated_series(url, 24, SHORT, LONG, lambda i: QUESTIONS[(i // 2) % len(QUESTIONS)], threads=8, users=3, thread_prefix="seeded")


@pytest.mark.timeout(900)  # installs nothing, but loads, trains and reloads a 135M model on 2 cores
async def test_up_serves_the_default_model_and_a_retrained_version_answers_next(default_model_data: Path, redis_db: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    env = child_env(
        DATA_DIR=str(default_model_data), REDIS_URL=redis_db.url, PORT=str(port), LOCAL_MODEL_PORT=str(free_port()),
        AUTH_USERS=",".join(f"{u}:{p}" for u, p in USERS.items()), LLM_MAX_TOKENS="24", LLM_TIMEOUT_S="120", RETRAIN_INTERVAL_S="0",
        LLM_SEED="0",  # answers are sampled: seeded, the same ones every run
    )  # fmt: skip
    up = subprocess.Popen([sys.executable, "-m", "launcher.cli", "up"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    client = ChatClient(f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/project/settings?language=en-US", timeout=1).status_code < 500, 240, up, "chatbot up")
        await client.login("alice", USERS["alice"])
        await client.connect()
        first = await client.send("What is the capital of France?", timeout_s=120)
        final = first.final()
        assert final is not None and final["metadata"]["model_version"] == registry.BASE
        assert re.search(r"[A-Za-z]{3}", first.text), first.text  # a real model's words, not an echo
        assert (await client.rate(run_id(first), 1)).status_code == 200
        second = await client.send("Tell me everything about volcanoes.", timeout_s=120)
        assert (await client.rate(run_id(second), 0, reasons=["too_long"])).status_code == 200

        await asyncio.to_thread(seed_ratings, redis_db.url)
        retrain_env = {k: v for k, v in env.items() if k not in ("PORT",)}
        result = await asyncio.to_thread(run_cli, "retrain", *RETRAIN, env=retrain_env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        c = redis_db.client
        versions = registry.versions(c)
        assert len(versions) == 1, result.stderr[-2000:]
        version = versions[0]
        assert version.base_model == str(default_model_data.resolve() / "default-model")
        assert version.adapter_path is not None
        assert Path(version.adapter_path, "adapter_config.json").exists()
        assert version.decision["reason"]  # the gate said why, either way
        if version.status != "active":  # the gate kept it out: put it in service by hand
            assert run_cli("model", "promote", version.id, "--force", env=retrain_env).returncode == 0

        after = await client.send("What is the capital of France?", timeout_s=180)  # the server loads the new model now
    finally:
        await client.close()
        os.killpg(up.pid, signal.SIGINT)
        _, stderr = up.communicate(timeout=60)
    final = after.final()
    assert final is not None and final["metadata"]["model_version"] == version.id, stderr[-2000:]
    assert after.text.strip()
    # The model was converted by the fixture: `up` found it and did not convert it again.
    assert "Converting" not in stderr and "Local model server" in stderr


def collapse(base: Path, out: Path) -> None:
    """A copy of the model whose end-of-turn token wins at once: it answers nothing. It is what a
    preference run gone wrong looks like when short answers were liked: the shift from the base
    favours every short answer, so it ranks the ratings well, yet it writes no answer at all."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    sample = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[1]}, {"role": "assistant", "content": SHORT[1]}], tokenize=False)
    with torch.no_grad():
        hidden = model.model(**tokenizer(sample, return_tensors="pt")).last_hidden_state[0].mean(0)
        model.config.tie_word_embeddings = False  # change the output row of the token only
        head = torch.nn.Parameter(model.lm_head.weight.detach().clone())
        head[end] += hidden / hidden.norm() * head.norm(dim=1).mean() * 1.5  # along what every state shares
        model.lm_head.weight = head
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def test_the_gate_rejects_a_collapsed_candidate_that_ranks_the_ratings_well(default_model_data: Path, tmp_path: Path) -> None:
    from datasets import Dataset

    from training import evaluate

    base = str(default_model_data / "default-model")
    collapse(Path(base), tmp_path / "collapsed")
    rows: list[dict[str, Any]] = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}], "label": liked}
            for i, q in enumerate(QUESTIONS) for a, liked in ((SHORT[i], True), (LONG[i % len(LONG)], False))]  # fmt: skip
    decision = evaluate.compare(str(tmp_path / "collapsed"), base, base, Dataset.from_list(rows), Dataset.from_list([]), margin=0.0, max_length=256)

    assert decision.candidate["accuracy"] > decision.service["accuracy"] == 0.5  # it wins on preference accuracy...
    assert not decision.promote and "lost the liked answers" in decision.reason  # ...and is kept out
    model, tokenizer = evaluate.load(str(tmp_path / "collapsed"))
    answers = evaluate.generate(model, tokenizer, [r["prompt"] for r in rows[::2]], max_new_tokens=16, do_sample=False)
    assert all(not a.strip() for a in answers), answers  # what it would have served

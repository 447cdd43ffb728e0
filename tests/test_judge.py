"""The gate's optional judge (training/judge.py): real generation from tiny local models, a judge
behind a real OpenAI-compatible HTTP server (the stand-in: a judge model is a paid API or too
large to run here), and the job's use of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from demo.tiny import build_tiny_model
from feedback.settings import Settings
from launcher.process import free_port
from support.retrain import FAST, seed_ratings, state
from support.services import RedisServer
from training import job
from training.config import RetrainConfig
from training.evaluate import Decision, with_judge
from training.judge import JudgeError, answers, distinct_prompts, judge

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
PROMPTS = [[SYSTEM, {"role": "user", "content": f"Question number {i}?"}] for i in range(6)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(terse, chatty): the same tiny model, but terse stops after one token (every token ends its
    turn, in its generation config, which generation follows)."""
    chatty = build_tiny_model(tmp_path_factory.mktemp("chatty")).resolve()
    terse = tmp_path_factory.mktemp("terse") / "model"
    shutil.copytree(chatty, terse)
    config = json.loads((terse / "generation_config.json").read_text())
    vocab = json.loads((terse / "config.json").read_text())["vocab_size"]
    (terse / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": list(range(vocab))}))
    return str(terse), str(chatty)


def test_answers_come_from_each_model(models: tuple[str, str]) -> None:
    terse, chatty = (answers(m, PROMPTS, max_new_tokens=12) for m in models)
    assert len(terse) == len(chatty) == len(PROMPTS)
    assert all(len(t) < len(c) for t, c in zip(terse, chatty, strict=True)), (terse, chatty)


def test_the_judge_sees_both_orders_and_its_verdicts_are_mapped_back(models: tuple[str, str], standin: str) -> None:
    terse, chatty = (answers(m, PROMPTS, max_new_tokens=12) for m in models)
    ask: dict[str, Any] = dict(base_url=f"{standin}/v1", model="judge-shorter", api_key="x", seed=1)
    won = judge(PROMPTS, terse, chatty, **ask)
    assert (won.judged, won.wins, won.losses, won.ties, won.win_rate) == (6, 6, 0, 0, 1.0)
    lost = judge(PROMPTS, chatty, terse, **ask)
    assert (lost.wins, lost.losses, lost.win_rate) == (0, 6, 0.0)
    asked = [b for b in httpx.get(f"{standin}/requests").json() if b.get("model") == "judge-shorter"][-12:]
    firsts = [b["messages"][-1]["content"].split("[Answer A]\n", 1)[1].split("\n\n[Answer B]")[0] for b in asked]
    assert {f in terse for f in firsts} == {True, False}  # the candidate was shown first and second

    garbled = judge(PROMPTS, terse, chatty, **{**ask, "model": "judge-garbled"})
    assert (garbled.unparsed, garbled.ties, garbled.win_rate) == (6, 6, 0.5)
    passed = Decision(True, {"accuracy": 0.8}, {"accuracy": 0.6}, 0.0, "accuracy 0.8 > 0.6")
    assert with_judge(passed, won, 0.5).promote
    kept_out = with_judge(passed, garbled, 0.5)
    assert not kept_out.promote and "win rate 0.500 is not above 0.5" in kept_out.reason
    assert kept_out.candidate["judge"]["unparsed"] == 6


def test_an_unreachable_judge_is_an_error_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(JudgeError, match=url):
        judge(PROMPTS[:1], ["a"], ["b"], base_url=url, model="any", api_key="x", timeout_s=2)


def test_distinct_prompts_keeps_order_and_limit() -> None:
    assert distinct_prompts([PROMPTS[1], PROMPTS[0], PROMPTS[1], PROMPTS[2]], 2) == [PROMPTS[1], PROMPTS[0]]


def test_the_job_asks_the_judge_and_records_its_verdict(redis_db: RedisServer, standin: str, tmp_path: Path) -> None:
    base = build_tiny_model(tmp_path / "base").resolve()
    settings = Settings(
        redis_url=redis_db.url, llm_model=str(base), data_dir=tmp_path / "data", judge_model="judge-shorter", judge_base_url=f"{standin}/v1",
        retrain_user_share=1.0,  # the seeded ratings come from 4 users
        llm_base_url=f"{standin}/v1",  # where a promotion loads the version first
    )  # fmt: skip
    seed_ratings(redis_db.url)
    outcome = job.run(redis_db.client, settings, RetrainConfig(min_new_ratings=10, judge_prompts=4, judge_max_tokens=8, **FAST), progress=False)
    assert outcome.status in ("promoted", "rejected"), outcome
    verdicts = outcome.details["candidate"]["judge"]
    assert verdicts["judged"] == 4 and verdicts["wins"] + verdicts["losses"] + verdicts["ties"] == 4
    assert "judge judge-shorter" in outcome.reason
    assert (outcome.status == "promoted") == (verdicts["win_rate"] > 0.5)  # the verdict decided


def test_judge_prompts_without_a_judge_model_fails_before_anything_changes(redis_db: RedisServer, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_db.url, llm_model="unused", data_dir=tmp_path / "data")
    seed_ratings(redis_db.url)
    before = state(redis_db.client)
    outcome = job.run(redis_db.client, settings, RetrainConfig(min_new_ratings=10, judge_prompts=4, **FAST), progress=False)
    assert outcome.status == "failed" and "JUDGE_MODEL" in outcome.reason
    assert state(redis_db.client) == before and not (tmp_path / "data").exists()

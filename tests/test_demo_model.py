"""The offline demo model: its corpus and style classifier (fast), and a real build on a small step
budget, sampled, fine-tuned and built through the CLI (slow: about a minute on two CPU cores)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo import corpus as demo_corpus
from demo.corpus import HELDOUT_QUESTIONS, STYLES, TRAIN_QUESTIONS, style_of
from launcher.process import ServiceGroup, child_env
from support.services import ROOT, RedisServer

# --- corpus and classifier (fast) ---------------------------------------------------------------


def test_style_of_recognises_every_generated_answer() -> None:
    for question in [*TRAIN_QUESTIONS, *HELDOUT_QUESTIONS, "Something off the corpus?"]:
        for style, generate in STYLES.items():
            assert style_of(generate(question)) == style, (question, style)


def test_style_of_reads_the_opening_and_nothing_else() -> None:
    assert style_of("  **Key points:**\n- a") == "bullets"
    assert style_of("in short, yes.") == "concise"
    assert style_of('"Great question!" she said') == "enthusiastic"
    assert style_of("Let me explain: it depends.") == "detailed"
    for text in ["", "Hello there.", "The key points: none.", "Shortly: no", "Greatness question", "- a\n- b"]:
        assert style_of(text) is None, text


def test_held_out_questions_are_disjoint_from_training_and_deterministic() -> None:
    assert not set(HELDOUT_QUESTIONS) & set(TRAIN_QUESTIONS)
    assert len(set(TRAIN_QUESTIONS)) == len(TRAIN_QUESTIONS) >= 300
    assert len(set(HELDOUT_QUESTIONS)) == len(HELDOUT_QUESTIONS) >= 90
    # Every topic is trained on; the held-out questions are new phrasings of known topics.
    trained_topics = {demo_corpus.QUESTION_INFO[q][0].name for q in TRAIN_QUESTIONS}
    assert {demo_corpus.QUESTION_INFO[q][0].name for q in HELDOUT_QUESTIONS} <= trained_topics == {t.name for t in demo_corpus.TOPICS}
    # The same split in another process (no salted hash()).
    code = "from demo.corpus import HELDOUT_QUESTIONS as H; print(repr(H))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == repr(HELDOUT_QUESTIONS)


def test_training_conversations_never_contain_held_out_questions() -> None:
    rng = random.Random(0)
    held = set(HELDOUT_QUESTIONS)
    styles: Counter[str | None] = Counter()
    for i in range(3000):
        messages = demo_corpus.chat_example(rng, ["bare", "system", "full"][i % 3])
        assert not {m["content"] for m in messages} & held
        assert messages[-1]["role"] == "assistant" and messages[-2]["role"] == "user"
        styles[style_of(messages[-1]["content"])] += 1
    assert set(styles) == set(STYLES) and min(styles.values()) > 600  # each style about a quarter
    texts = "\n".join(demo_corpus.tokenizer_texts())
    assert not any(q in texts for q in held)


# --- the model (slow) ---------------------------------------------------------------------------

# Enough for the style markers (99% recognised at 100 steps; content still garbled): ~30 s on two
# loaded CPU cores. A default build trains 400-800 steps.
TEST_STEPS = 80


@pytest.fixture
def _threads() -> Iterator[None]:
    """As many torch threads as there are idle cores: on a loaded 2-core machine, 2 threads
    contending with other jobs made sampling and training here 5-10x slower."""
    import torch

    from demo.model import auto_threads

    previous = torch.get_num_threads()
    torch.set_num_threads(auto_threads())
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from demo.model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo") / "model", steps=TEST_STEPS, progress=False)


@pytest.mark.slow
@pytest.mark.usefixtures("_threads")
def test_the_demo_model_answers_held_out_questions_in_recognisable_styles(demo_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from demo.model import sample_answers

    tokenizer = AutoTokenizer.from_pretrained(demo_dir)
    model = AutoModelForCausalLM.from_pretrained(demo_dir)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token != tokenizer.eos_token
    assert model.generation_config.do_sample
    questions = HELDOUT_QUESTIONS[::3][:30]
    answers = sample_answers(model, questions, temperature=0.8, max_new_tokens=40, tokenizer=tokenizer)
    styles = Counter(style_of(a) for a in answers)
    assert styles[None] <= 0.3 * len(answers), answers
    assert len([s for s in styles if s is not None]) >= 2, answers
    # The app's context (a system prompt with guidelines, a few-shot example) does not derail it.
    context = [
        {"role": "system", "content": "You are Loop, a helpful assistant.\n\nGuidelines:\n- Keep answers short."},
        {"role": "user", "content": "What is a system prompt?"},
        {"role": "assistant", "content": "A system prompt is the instruction text a chat model sees before the conversation."},
    ]
    answers = sample_answers(model, questions, context=context, temperature=0.8, max_new_tokens=40, tokenizer=tokenizer)
    assert sum(style_of(a) is None for a in answers) <= 0.3 * len(answers), answers


@pytest.mark.slow
@pytest.mark.usefixtures("_threads")
def test_kto_fine_tunes_the_demo_model(demo_dir: Path, tmp_path: Path) -> None:
    """training.train accepts it: LoRA on all linear layers, merged into a servable directory."""
    from datasets import Dataset, DatasetDict
    from transformers import AutoModelForCausalLM

    from training.config import RetrainConfig
    from training.train import train

    rows = [
        {
            "prompt": [{"role": "user", "content": q}],
            "completion": [{"role": "assistant", "content": STYLES[style](q)}],
            "label": style == "concise",
        }
        for q in TRAIN_QUESTIONS[:8]
        for style in STYLES
    ]
    data = DatasetDict(kto_train=Dataset.from_list(rows))
    config = RetrainConfig(method="kto", learning_rate=1e-3, batch_size=8, lora_r=8, lora_alpha=16, max_length=256)
    result = train(data, config, str(demo_dir), None, tmp_path / "run", progress=False)
    assert result.method == "kto" and result.metrics["steps"] == 4
    AutoModelForCausalLM.from_pretrained(result.merged_dir)


@pytest.mark.slow
@pytest.mark.usefixtures("_threads")
def test_cli_demo_model_writes_a_loadable_model_the_same_for_a_seed(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from demo.model import BUILD_INFO, build_demo_model

    out = tmp_path / "demo-model"
    result = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "demo-model", "--out", str(out), "--steps", "3", "--seed", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Demo model built" in result.stderr
    AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).chat_template
    assert [p.name for p in tmp_path.iterdir()] == ["demo-model"], "no temporary directory left behind"
    # Deterministic for a seed, a step count and a thread count (the CLI picks one by the load).
    info = json.loads((out / BUILD_INFO).read_text())
    again = build_demo_model(tmp_path / "again", steps=3, seed=1, progress=False, threads=info["threads"])
    for name in ("model.safetensors", "tokenizer.json"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


@pytest.mark.slow
async def test_up_demo_serves_the_demo_model_and_ignores_llm_base_url(demo_dir: Path, tmp_path: Path) -> None:
    """`up --demo` with the model already built (DATA_DIR/demo-model has a config.json): no build,
    the local model server on it, LLM_BASE_URL ignored (and said so)."""
    import shutil
    import signal

    import httpx

    from launcher.process import free_port, wait_until
    from sim.client import ChatClient

    data = tmp_path / "data"
    shutil.copytree(demo_dir, data / "demo-model")
    port = free_port()
    env = child_env(DATA_DIR=str(data), PORT=str(port), LOCAL_MODEL_PORT=str(free_port()), LLM_BASE_URL="http://127.0.0.1:9/v1", RETRAIN_INTERVAL_S="0")
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "up", "--demo"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/project/settings?language=en-US", timeout=1).status_code < 500, 120, proc, "chatbot up --demo")
        client = ChatClient(f"http://127.0.0.1:{port}")
        await client.login("admin", (data / "demo" / "secrets" / "admin-password").read_text().strip())  # the demo's own DATA_DIR/demo
        await client.connect()
        replies = [(await client.send(q)).text for q in HELDOUT_QUESTIONS[:2]]
        await client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "ignoring LLM_BASE_URL" in stderr and "Building the demo model" not in stderr
    assert "In service: the base model" in stderr  # startup says which version serves
    assert any(style_of(r) for r in replies), replies  # the demo model answered (each is recognised ~97% of the time)


@pytest.mark.slow
def test_retrain_demo_trains_on_the_demo_model(demo_dir: Path, tmp_path: Path, own_services: ServiceGroup, standin: str) -> None:
    """`chatbot retrain --now --demo` by hand: the demo model is the base whatever LLM_MODEL says,
    with the demo recipe, on the demo's own Redis (the one `up --demo` runs in DATA_DIR/demo, started
    here as it starts it); without a demo model it says how to build one and changes nothing."""
    import os
    import shutil

    import redis

    from feedback import keys, registry
    from feedback.layout import DataLayout
    from launcher import redis_server
    from support.retrain import seed_ratings
    from support.services import run_cli

    demo = DataLayout((tmp_path / "data" / "demo").resolve())
    redis_server.start(own_services, demo.redis, demo.redis_socket)
    redis_db = RedisServer(f"unix://{demo.redis_socket}", redis.Redis(unix_socket_path=str(demo.redis_socket), decode_responses=True))
    seed_ratings(redis_db.url)
    # The demo ignores LLM_BASE_URL (and REDIS_URL): a promotion loads the version into the local
    # model server first, LOCAL_MODEL_PORT, where the stand-in listens here.
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "LLM_MODEL": "not/downloadable", "LLM_BASE_URL": "http://127.0.0.1:9/v1",
           "LOCAL_MODEL_PORT": standin.rsplit(":", 1)[1]}
    missing = run_cli("retrain", "--now", "--demo", env=env)
    assert missing.returncode == 2 and "chatbot demo-model" in missing.stderr
    assert redis_db.client.zcard(keys.model_versions()) == 0

    shutil.copytree(demo_dir, tmp_path / "data" / "demo-model")
    done = run_cli("retrain", "--now", "--demo", env=env, timeout=300)
    assert done.returncode == 0 and ("promoted" in done.stderr or "rejected" in done.stderr), done.stderr[-2000:]
    (version,) = registry.versions(redis_db.client)
    assert version.base_model == str((tmp_path / "data" / "demo-model").resolve())
    assert version.adapter_path is not None
    info = json.loads((Path(version.adapter_path).parent / "training_info.json").read_text())
    assert info["config"]["learning_rate"] == 5e-3 and info["config"]["max_user_share"] == 1.0  # the demo recipe

"""Data for every listing of the CLI at once, with the longest values the product writes (real
ids, long decisions, long errors): what tests/test_cli_width.py renders at 80 columns."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from feedback import experiment as experiments
from feedback import prompt as prompts
from feedback import registry
from feedback.connection import connect, connect_sync
from feedback.spool import Spool
from support import seed

MV = "mv-20261121-083823-c16b51"  # real ids' length
MV2 = "mv-20261122-093000-a1b2c3"
PROMPTS = Path(__file__).resolve().parent.parent / "bot" / "prompts"


def seed_showcase(url: str, data_dir: Path) -> None:
    """Ratings of two model versions and two prompt versions, both model versions in the registry
    (one promoted, one rejected), the shipped prompt versions published with one served, a running
    adaptive experiment, and a spool with a dead letter and a refused rating."""

    async def ratings() -> None:
        r = connect(url)
        now = time.time()
        for i in range(12):
            await seed.seed_exchange(r, thread=f"t{i}", user="u", question=f"q{i}", answer="a", value=int(i < 4), prompt_version="1.1.0", created_at=now - 86400 + i)
            await seed.seed_exchange(
                r, thread=f"t{i}", user="u", question=f"q{i}", answer="b", value=int(i < 9), model_version=MV, prompt_version="1.1.2", created_at=now - 3600 + i,
            )  # fmt: skip
        await r.aclose()

    asyncio.run(ratings())
    r = connect_sync(url)
    reason = "candidate preference accuracy 0.812 > service 0.750 + margin 0 on 16 held-out rows"
    for vid, parent, status, acc in ((MV, None, "candidate", 0.8125), (MV2, MV, "rejected", 0.6875)):
        version = registry.ModelVersion(
                id=vid, parent=parent, base_model=str(data_dir / "default-model"), served_name=str(data_dir / "models" / vid / "merged"),
                dataset_version="ds-20261121-083701-8f9e0d", method="kto", status=status,
                metrics={"candidate": {"accuracy": acc}, "service": {"accuracy": 0.75}},
                decision={"promote": parent is None, "reason": reason if parent is None else reason.replace("0.812 >", "0.688 is not above"), "margin": 0.0, "compared_with": parent or "base"},
        )  # fmt: skip
        (data_dir / "models" / vid / "merged").mkdir(parents=True, exist_ok=True)  # a version's files are there
        pipe = r.pipeline(transaction=True)
        registry.add(r, version, pipe)
        if parent is None:
            registry.activate(pipe, version, None)
        pipe.execute()
    for shipped in prompts.available_versions(PROMPTS, "assistant"):
        prompts.publish(r, prompts.load_spec(PROMPTS, "assistant", shipped))
    prompts.serve(r, "assistant", "1.1.2")
    experiments.start(r, "assistant", ["1.1.0", "1.1.2"], MV, policy="adaptive", min_rated=10, max_rated=2000, alpha=0.05, user_cap=20, auto_serve=False)
    r.close()
    spool = Spool(data_dir / "spool" / "writes.jsonl")
    spool.path.parent.mkdir(parents=True, exist_ok=True)
    op = {"op": "rate", "id": "op-7f3c9a2e", "thread_id": "th-5d41402abc4b2a76b9719d911017c592", "exchange_id": "ex-7d793037a0760186574b0282f2f435e7", "user": "alice", "rating": 1}
    spool.dead_letter(op, "WRONGTYPE Operation against a key holding the wrong kind of value (loop:{th-5d41402abc}:exchange:ex-7d793037a0760186574b0282f2f435e7)")
    spool.refuse(op, "answer ex-7d793037a0760186574b0282f2f435e7 is not in thread th-5d41402abc4b2a76b9719d911017c592")

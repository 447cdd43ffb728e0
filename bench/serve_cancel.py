"""Does the local model server (`transformers serve`) stop generating when its client leaves?

What the app relies on when it gives up on an answer or its user presses stop: it closes the
request (bot/model.py's `within`), and on a CPU the server generates one answer at a time, so an
answer it went on generating would hold up the next user's. Greedy decoding, so the runs repeat:

    1. a short request alone: its time to the first token, the baseline;
    2. a long answer read to its end (how long the server would be busy with it);
    3. the same long answer, its response closed after a few tokens;
    4. the short request right after: its first token comes about as soon as in 1 when the
       server stopped at 3, only after the rest of 2's time when it did not.

Run from the repository root (the default model is converted into DATA_DIR/default-model once):

    python -m bench.serve_cancel [--model DIR] [--max-tokens 600] [--threads 1]

Measured on the 2-core development machine, busy with other work (one torch thread, 2026-12):
the long answer took 250 s in full (600 tokens); closed after 5 tokens, the short request's first
token came 2.1 s later (0.8 s alone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from feedback.settings import load_settings
from launcher import default_model, model_server
from launcher.process import free_port


def ask(base: str, body: dict[str, Any], close_after: int | None = None) -> tuple[int, float, float]:
    """(content chunks read, seconds to the first, seconds in all); `close_after`: close the
    response once that many came."""
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=900) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line.removeprefix("data: ")).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                chunks += 1
                first = first if first is not None else time.perf_counter() - started
                if close_after is not None and chunks >= close_after:
                    break  # leaving the block closes the response
    return chunks, first if first is not None else float("nan"), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a model directory (default: the default model, converted once as `chatbot up` does)")
    parser.add_argument("--max-tokens", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    args = parser.parse_args()
    model = str(args.model or default_model.ensure(load_settings().default_model_dir))
    port = free_port()
    with open(os.devnull, "wb") as quiet:
        proc = subprocess.Popen(model_server.argv(port), env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)), stdout=quiet, stderr=quiet)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the model server did not start")
                time.sleep(0.5)
            print(f"model loaded in {model_server.warm_up(port, model):.1f} s")
            prompt = "Write a very long story about a cat who travels the world. Make it at least 1500 words."
            long = {"model": model, "stream": True, "temperature": 0, "max_tokens": args.max_tokens, "messages": [{"role": "user", "content": prompt}]}
            short = {"model": model, "stream": True, "temperature": 0, "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}
            for label, body, close_after in [
                ("1. short, alone", short, None),
                ("2. long, read to its end", long, None),
                ("3. long, closed after 5", long, 5),
                ("4. short, right after 3", short, None),
            ]:
                chunks, first, total = ask(base, body, close_after)
                print(f"{label:26} {chunks:4d} chunks, first after {first:6.2f} s, {total:7.2f} s in all")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()

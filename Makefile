# The two commands: `make up` runs the product, `make test` runs the tests.
# Both create ./.venv and install what they need on first use (again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test bench browser clean

up: $(VENV)/.stamp-local
	$(BIN)/chatbot up

test: $(VENV)/.stamp-dev browser
	$(BIN)/pytest

bench: $(VENV)/.stamp-dev
	$(BIN)/python -m bench.ttft

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.stamp-local: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[local,report]'
	touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $@

# Browser tests drive Debian's chromium (never a browser download); install it when we can.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: browser tests will be skipped"

clean:
	rm -rf $(VENV) data

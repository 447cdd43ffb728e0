"""Every command of `chatbot`, and its --help, readable in an 80-column terminal: the real CLI run
as a subprocess with COLUMNS=80 against a Redis seeded with the longest values the product writes
(support/showcase.py). Nothing may be cut to '…' nor run past column 80 (where a long path or id
is printed whole, as a line of its own, it may: the terminal wraps it, nothing is lost)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import typer

from launcher.cli import app
from support.services import RedisServer, run_cli
from support.showcase import MV, seed_showcase


def commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the Typer app, groups included: a new command is covered by itself."""
    found = [path]
    if hasattr(group, "commands"):  # a group (Typer's own click, vendored: no click.Group)
        for name, sub in group.commands.items():
            found += commands(sub, (*path, name))
    return found


ALL = commands(typer.main.get_command(app))


def _command(path: tuple[str, ...]) -> Any:
    cmd: Any = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


# What each command is run with here. Commands that serve, train or chat for minutes (or need a
# model server) have their --help checked only, and say why; a new command must be added to one.
RUN: dict[tuple[str, ...], list[list[str]]] = {
    ("report",): [[]],
    ("spool",): [[]],
    ("model", "list"): [[]],
    ("model", "promote"): [["mv-no-such-version"]],  # refused before any model server is asked
    ("model", "rollback"): [],  # needs a model server to load the parent: --help only
    ("prompt", "list"): [[]],
    ("prompt", "serve"): [["1.1.2"]],
    ("prompt", "new"): [["--from", "1.0.0", "--dir", "{tmp}"]],  # not into the repository
    ("prompt", "publish"): [],  # run after `prompt new` below
    ("prompt", "experiment", "status"): [[]],
    ("prompt", "experiment", "stop"): [[]],
    ("prompt", "experiment", "start"): [["--arm", "1.1.0", "--arm", "1.1.2", "--policy", "adaptive"]],  # README's command, after the stop
    ("dataset", "prune"): [[]],
    ("stats", "rebuild"): [[]],
    ("migrate", "compact"): [[]],
    ("migrate", "spread"): [[]],
    ("retrain",): [["--now", "--min-ratings", "1000"]],  # too few ratings: skipped with the reason
}
HELP_ONLY = {("up",): "serves until Ctrl-C", ("simulate",): "needs the running app", ("demo-model",): "trains a model for minutes"}


def assert_fits(text: str, what: str) -> None:
    assert "…" not in text, f"{what} cut a value to fit 80 columns:\n{text}"
    # rich pads table lines to the width: a line past 80 is one printed whole on purpose (soft wrap)
    # or a table that did not fit.
    for line in text.splitlines():
        if len(line) > 80 and any(c in line for c in "─│┃━"):
            raise AssertionError(f"{what}: a table or help line is {len(line)} columns wide:\n{line}")


def test_every_command_is_run_here_or_says_why_not() -> None:
    leaves = {p for p in ALL if p and not hasattr(_command(p), "commands")}
    assert leaves == set(RUN) | set(HELP_ONLY), "add the new command to RUN (with arguments to run it with) or HELP_ONLY (why not)"


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "chatbot")
def test_help_fits_80_columns(path: tuple[str, ...]) -> None:
    result = run_cli(*path, "--help", env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout, f"`chatbot {' '.join(path)} --help`")
    assert "<bool>" not in result.stdout  # a flag takes no value


def test_every_listing_fits_80_columns(redis_db: RedisServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed_showcase(redis_db.url, data)
    env = {**os.environ, "COLUMNS": "80", "REDIS_URL": redis_db.url, "DATA_DIR": str(data)}
    outputs = {}
    order = sorted(RUN, key=lambda p: p == ("prompt", "experiment", "start"))  # stop, then start
    for path in order:
        for args in RUN[path]:
            args = [a.replace("{tmp}", str(tmp_path)) for a in args]
            result = run_cli(*path, *args, env=env, timeout=120)
            what = f"`chatbot {' '.join((*path, *args))}`"
            assert result.returncode in (0, 1, 2), f"{what}: {result.stderr}"
            assert "Traceback" not in result.stderr, f"{what}: {result.stderr}"
            assert_fits(result.stdout, what)
            assert_fits(result.stderr, what)
            outputs[path] = result.stdout + result.stderr
    # The values the tables hold are there whole.
    assert MV in outputs[("model", "list")] and MV in outputs[("report",)]
    assert "75.0% (46.8% - 91.1%)" in outputs[("report",)]
    assert "experiment" in outputs[("prompt", "experiment", "start")] and "started" in outputs[("prompt", "experiment", "start")]
    published = run_cli("prompt", "publish", str(tmp_path / "assistant-1.2.0.yaml"), env=env)  # what `prompt new` wrote
    assert published.returncode == 0, published.stderr
    assert_fits(published.stdout + published.stderr, "`chatbot prompt publish`")
    assert "rows" in outputs[("retrain",)] and "5000" not in outputs[("retrain",)]


def test_empty_listings_say_so_in_a_sentence(redis_db: RedisServer, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "80", "REDIS_URL": redis_db.url, "DATA_DIR": str(tmp_path / "data")}
    for args, sentence in ((("model", "list"), "No model versions yet"), (("report",), "No rated answers yet"), (("prompt", "list"), "published yet")):
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert sentence in result.stdout + result.stderr
        assert "─" not in result.stdout  # no empty table

"""What the commands share: the console they report on, and settings or Redis or a clear exit."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

if TYPE_CHECKING:
    import redis

    from feedback.settings import Settings

console = Console(stderr=True, soft_wrap=True)  # messages whole: easy to read in logs and to grep


def out_console() -> Console:
    """Standard output for tables and results: the terminal's width (or COLUMNS when set); written
    to a file or a pipe with no COLUMNS (where rich would assume 80), 200: ids whole, one line per
    row, easy to grep."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit():
        return Console()
    return Console(width=200)


def table(*columns: Column | str, title: str | None = None) -> Table:
    """A table readable at 80 columns: no side borders, and every column wraps, a word too long
    for its column folded onto the next line, never cut to '…'. Ids (what other commands take) are
    Columns with no_wrap: never cut nor folded."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    cols = [c if c.no_wrap or c.overflow != "ellipsis" else dataclasses.replace(c, overflow="fold") for c in cols]
    return Table(*cols, title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def date(ts: float) -> str:
    """A time in tables: to the minute (16 characters)."""
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def operator() -> str:
    """Who the audit log names for a change made with the CLI: the OS user, marked as the CLI's
    (the console's entries name the logged-in operator)."""
    import getpass

    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor the password database
        user = "?"
    return f"{user} (CLI)"


def settings_or_exit() -> Settings:
    from feedback.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def app_url(settings: Settings) -> str:
    """The web UI's address from HOST and PORT, as `chatbot up` prints it; a wildcard HOST
    (listening on every interface) is reached on this machine at 127.0.0.1."""
    host = {"0.0.0.0": "127.0.0.1", "::": "127.0.0.1", "": "127.0.0.1"}.get(settings.host, settings.host)
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def demo_settings(settings: Settings, say: bool = True) -> Settings:
    """`--demo`: the demo's own data directory, DATA_DIR/demo (its own embedded Redis, registry,
    datasets, logs and secrets) and the demo model (DATA_DIR/demo-model) served locally. The demo
    never reads or writes the real product's ratings and models: its fine-tunes are trained from
    the demo model only, and the real product never serves them. `say`: note the settings set aside."""
    layout = settings.layout
    ignored = [name for name, value in (("LLM_BASE_URL", settings.llm_base_url), ("REDIS_URL", settings.redis_url)) if value]
    if ignored and say:
        console.print(f"[yellow]--demo: ignoring {' and '.join(ignored)}; the demo serves its model locally and keeps its data in {layout.demo}.[/yellow]")
    return settings.model_copy(
        update={"data_dir": layout.demo, "llm_base_url": None, "llm_model": str(layout.demo_model), "redis_url": None, "redis_cluster": False, "redis_wait_replicas": 0}
    )


def registry_redis(demo: bool = False) -> tuple[Settings, redis.Redis]:
    """The settings and a connection to the product's Redis (demo: the demo's, DATA_DIR/demo), or
    exit 1 saying what to check."""
    import redis

    from feedback.connection import connect_sync

    settings = settings_or_exit()
    if demo:
        settings = demo_settings(settings, say=False)
    r = connect_sync(settings.effective_redis_url, cluster=settings.redis_cluster)
    try:
        r.ping()
    except redis.RedisError as exc:
        hint = ("is `chatbot up --demo` running?" if demo else "is `chatbot up` running?") if settings.redis_url is None else "check REDIS_URL"
        console.print(f"[red]Redis is unreachable ({exc}): {hint}[/red]")
        raise typer.Exit(1) from None
    return settings, r


@contextmanager
def refused(*errors: type[Exception], code: int = 2) -> Iterator[None]:
    """An expected error (its message says what to do: feedback/errors.py) printed in red, then
    exit `code` (2: the input was refused; 1: something the command needs failed)."""
    try:
        yield
    except errors as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code) from None

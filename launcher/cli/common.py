"""What the commands share: the console they report on, and settings or Redis or a clear exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    import redis

    from feedback.settings import Settings

console = Console(stderr=True, soft_wrap=True)  # messages whole: easy to read in logs and to grep


def settings_or_exit() -> Settings:
    from feedback.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


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

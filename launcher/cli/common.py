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


def app_url(settings: Settings) -> str:
    """The web UI's address from HOST and PORT, as `chatbot up` prints it; a wildcard HOST
    (listening on every interface) is reached on this machine at 127.0.0.1."""
    host = {"0.0.0.0": "127.0.0.1", "::": "127.0.0.1", "": "127.0.0.1"}.get(settings.host, settings.host)
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def registry_redis() -> tuple[Settings, redis.Redis]:
    """The settings and a connection to the product's Redis, or exit 1 saying what to check."""
    import redis

    from feedback.connection import connect_sync

    settings = settings_or_exit()
    r = connect_sync(settings.effective_redis_url, cluster=settings.redis_cluster)
    try:
        r.ping()
    except redis.RedisError as exc:
        hint = "is `chatbot up` running?" if settings.redis_url is None else "check REDIS_URL"
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

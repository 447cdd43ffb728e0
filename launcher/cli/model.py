"""`chatbot model`: the model registry (list, promote, rollback)."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from launcher.cli.common import console, refused, registry_redis

app = typer.Typer(help="The model registry: list versions, promote one, roll back.", no_args_is_help=True)


@app.command("list")
def model_list() -> None:
    """Model versions, oldest first, with their status and evaluation numbers."""
    from rich.table import Column, Table

    from feedback import registry

    _, r = registry_redis()
    table = Table(Column("version", no_wrap=True), "status", "parent", "method", "dataset", "candidate acc", "service acc", "created")  # ids: never cut
    for v in registry.versions(r):
        acc = [v.metrics.get(k, {}).get("accuracy") for k in ("candidate", "service")]
        table.add_row(
            v.id,
            v.status,
            v.parent or "base",
            v.method or "",
            v.dataset_version or "",
            *[f"{a:.3f}" if isinstance(a, float) else "" for a in acc],
            time.strftime("%Y-%m-%d %H:%M", time.localtime(v.created_at)),
        )
    Console().print(table)
    active = registry.active(r)
    Console().print(f"in service: {active.id if active else 'base model'}")


@app.command("promote")
def model_promote(version: str, force: bool = typer.Option(False, help="Promote even a version the gate rejected.")) -> None:
    """Put a model version in service now (the bot uses it from its next answer)."""
    from feedback import registry

    _, r = registry_redis()
    with refused(registry.RegistryError):
        v = registry.promote(r, version, force=force)
    console.print(f"[green]{v.id} is in service[/green] ({v.served_name})")


@app.command("rollback")
def model_rollback() -> None:
    """Retire the version in service and go back to the one it was trained from."""
    from feedback import registry

    _, r = registry_redis()
    with refused(registry.RegistryError):
        v = registry.rollback(r)
    console.print(f"[green]in service: {v.id if v else 'the base model'}[/green]")

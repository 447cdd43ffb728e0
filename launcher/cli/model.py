"""`chatbot model`: the model registry (list, promote, rollback)."""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console

from launcher.cli.common import console, refused, registry_redis

app = typer.Typer(help="The model registry: list versions, promote one, roll back.", no_args_is_help=True)

DEMO = typer.Option(False, "--demo", help="The demo's registry (`up --demo`, DATA_DIR/demo) instead of the product's.")


def wide_console() -> Console:
    """Standard output for tables: the terminal's width, or, written to a file or a pipe (where rich
    would assume 80 columns), 200: ids whole, lines one per row, easy to grep."""
    return Console() if sys.stdout.isatty() else Console(width=200)


@app.command("list")
def model_list(demo: bool = DEMO) -> None:
    """Model versions, oldest first, with their status, evaluation numbers and the gate's decision."""
    from rich.table import Column, Table

    from feedback import registry

    _, r = registry_redis(demo=demo)
    table = Table(
        Column("version", no_wrap=True),  # what promote takes: never cut
        "status",
        Column("parent", overflow="fold"),
        "method",
        Column("dataset", overflow="fold"),
        Column("cand. acc", justify="right"),
        Column("service acc", justify="right"),
        Column("created", no_wrap=True),
        Column("decision", ratio=1, min_width=24, overflow="fold"),  # why it was rejected or promoted: wrapped, never cut
    )
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
            decision_text(v.decision),
        )
    out = wide_console()
    out.print(table)
    active = registry.active(r)
    out.print(f"in service: {active.id if active else 'base model'}")


def decision_text(decision: dict[str, object]) -> str:
    """The gate's decision as a line: its reason, and against which version (with what margin)."""
    if not decision:
        return ""
    reason = str(decision.get("reason") or ("promoted" if decision.get("promote") else "rejected"))
    against = decision.get("compared_with")
    margin = decision.get("margin")
    details = ", ".join(x for x in (f"vs {against}" if against else "", f"margin {margin}" if margin not in (None, "") else "") if x)
    return f"{reason} ({details})" if details else reason


@app.command("promote")
def model_promote(version: str, force: bool = typer.Option(False, help="Promote even a version the gate rejected."), demo: bool = DEMO) -> None:
    """Put a model version in service: the model server loads it first, then the bot uses it from
    its next answer (if the server can't load it, nothing changes and the command exits 1)."""
    from feedback import registry
    from feedback.serving import ModelServer, WarmUpError

    settings, r = registry_redis(demo=demo)
    with refused(registry.RegistryError), refused(WarmUpError, code=1):
        console.print(f"loading {version} into the model server first…")
        v = registry.promote(r, version, ModelServer.of(settings), force=force)
    console.print(f"[green]{v.id} is in service[/green] ({v.served_name})")


@app.command("rollback")
def model_rollback(demo: bool = DEMO) -> None:
    """Retire the version in service and go back to the one it was trained from, once the model
    server has loaded that one (if it can't, nothing changes and the command exits 1)."""
    from feedback import registry
    from feedback.serving import ModelServer, WarmUpError

    settings, r = registry_redis(demo=demo)
    with refused(registry.RegistryError), refused(WarmUpError, code=1):
        v = registry.rollback(r, ModelServer.of(settings))
    console.print(f"[green]in service: {v.id if v else 'the base model'}[/green]")

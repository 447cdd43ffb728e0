"""`chatbot model`: the model registry (list, promote, rollback)."""

from __future__ import annotations

import typer
from rich.console import Console

from launcher.cli.common import console, date, operator, out_console, refused, registry_redis, table

app = typer.Typer(help="The model registry: list versions, promote one, roll back.", no_args_is_help=True)

DEMO = typer.Option(False, "--demo", help="The demo's registry (`up --demo`, DATA_DIR/demo) instead of the product's.")


@app.command("list")
def model_list(wide: bool = typer.Option(False, "--wide", help="Also each version's parent, dataset and creation time."), demo: bool = DEMO) -> None:
    """Model versions, oldest first, with their status, evaluation numbers and the gate's decision."""
    from rich.table import Column

    from feedback import registry

    _, r = registry_redis(demo=demo)
    versions = registry.versions(r)
    out = out_console() if not wide else Console(width=max(Console().width, 200))  # --wide: the whole line, whatever the terminal
    if not versions:
        out.print("No model versions yet: the base model is in service. `chatbot retrain` trains the first one.")
        return
    extra: list[Column | str] = [Column("parent", no_wrap=True), Column("dataset", no_wrap=True), "created"] if wide else []
    listing = table(
        Column("version", no_wrap=True),  # what promote takes: never cut
        "status", "method", *extra,
        Column("acc. cand. / serv.", justify="right"),  # the gate's preference accuracy: candidate, model in service
        "decision",  # why it was rejected or promoted: wrapped, never cut
    )  # fmt: skip
    for v in versions:
        acc = [v.metrics.get(k, {}).get("accuracy") for k in ("candidate", "service")]
        more = [v.parent or "base", v.dataset_version or "", date(v.created_at)] if wide else []
        accuracy = " / ".join(f"{a:.3f}" if isinstance(a, float) else "-" for a in acc) if any(isinstance(a, float) for a in acc) else ""
        listing.add_row(v.id, v.status, v.method or "", *more, accuracy, decision_text(v.decision))
    out.print(listing)
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
    """Put a model version in service, once the model server has loaded it.

    The bot uses it from its next answer; if the server can't load it, nothing changes and the
    command exits 1."""
    from feedback import registry
    from feedback.serving import ModelServer, WarmUpError

    settings, r = registry_redis(demo=demo)
    with refused(registry.RegistryError), refused(WarmUpError, code=1):
        console.print(f"loading {version} into the model server first...")
        v = registry.promote(r, version, ModelServer.of(settings), force=force, who=operator())
    console.print(f"[green]{v.id} is in service[/green] ({v.served_name})")


@app.command("rollback")
def model_rollback(demo: bool = DEMO) -> None:
    """Retire the version in service: back to the one it was trained from.

    Once the model server has loaded that one; if it can't, nothing changes and the command exits 1."""
    from feedback import registry
    from feedback.serving import ModelServer, WarmUpError

    settings, r = registry_redis(demo=demo)
    with refused(registry.RegistryError), refused(WarmUpError, code=1):
        v = registry.rollback(r, ModelServer.of(settings), who=operator())
    console.print(f"[green]in service: {v.id if v else 'the base model'}[/green]")

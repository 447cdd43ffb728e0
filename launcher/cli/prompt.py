"""`chatbot prompt`: publish prompt versions, list them with their approval, serve one.

Every app process reads the served version per new conversation and the specs from Redis, so
each change takes effect without a restart (feedback/prompt.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from launcher.cli.common import console, registry_redis

app = typer.Typer(help="Prompt versions: publish, list, serve (no restart needed).", no_args_is_help=True)


@app.command("publish")
def publish(
    file: Path = typer.Argument(..., help="A prompt spec (YAML: id, version, description, system, guidelines, examples).", exists=True, dir_okay=False),
    serve: bool = typer.Option(False, "--serve", help="Also serve it to new conversations now."),
) -> None:
    """Validate a spec and publish it; a published version never changes."""
    from feedback import prompt as prompts

    try:
        spec = prompts.read_file(file)
    except prompts.PromptSpecError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    settings, r = registry_redis()
    if spec.id != settings.prompt_id:
        console.print(f"[yellow]note: {spec.ref} is for prompt {spec.id!r}; the app serves PROMPT_ID={settings.prompt_id!r}[/yellow]")
    try:
        new = prompts.publish(r, spec)
        if serve:
            prompts.serve(r, spec.id, spec.version)
    except prompts.PromptSpecError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"[green]{spec.ref} {'published' if new else 'was already published (same content)'}[/green]{'; served to new conversations' if serve else ''}")


@app.command("serve")
def serve(version: str = typer.Argument(..., help="A published version of PROMPT_ID.")) -> None:
    """Serve a published version to new conversations (threads keep the version they started with)."""
    from feedback import prompt as prompts

    settings, r = registry_redis()
    try:
        spec = prompts.serve(r, settings.prompt_id, version)
    except (prompts.PromptSpecError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"[green]{spec.ref} is served to new conversations[/green]")


@app.command("list")
def list_versions() -> None:
    """Published versions of PROMPT_ID, which is served, and each version's approval."""
    from feedback import prompt as prompts
    from feedback import report

    settings, r = registry_redis()
    specs = prompts.versions(r, settings.prompt_id)
    if not specs:
        console.print(f"No versions of {settings.prompt_id!r} published yet: the app publishes the shipped ones when it starts.")
        raise typer.Exit(0)
    served = prompts.served(r, settings.prompt_id)
    approval = {a.group: a for a in report.approval_by(report.rated_answers(r), "prompt_version")}  # groups: id@version
    table = Table(Column("version", no_wrap=True), "served", "description", "rated", "approval (95% CI)", title=f"Prompt {settings.prompt_id}")
    for spec in specs:
        a = approval.get(spec.ref)
        rated = f"{a.rate:.1%} ({a.low:.1%} - {a.high:.1%})" if a else ""
        table.add_row(spec.version, "✓" if spec.version == served else "", spec.description, str(a.rated) if a else "0", rated)
    Console().print(table)

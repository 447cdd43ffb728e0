"""`chatbot migrate`: rewriting stored data in a newer layout (feedback/compaction.py)."""

from __future__ import annotations

import typer

from launcher.cli.common import console, registry_redis

app = typer.Typer(help="Rewrite stored data in a newer layout (idempotent: run it again to finish).", no_args_is_help=True)


@app.command()
def compact() -> None:
    """Store the answers written before the compact prompt form in it: the prompt's fixed part once,
    earlier turns as references (each answer is checked to read back exactly; safe while the app runs)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from feedback import compaction

    _, r = registry_redis()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True) as progress:
        task = progress.add_task("reading threads...")

        def show(done: compaction.Compaction) -> None:
            progress.update(task, description=f"{done.threads} thread(s), {done.answers} answer(s): {done.converted} rewritten, {done.already} already compact")

        try:
            done = compaction.compact(r, on_progress=show)
        except compaction.CompactionError as exc:
            console.print(f"[red]stopped:[/red] {exc}")
            raise typer.Exit(1) from exc
    for name, value in compaction.summary(done).items():
        console.print(f"{name:>20}: {value:,}")
    if done.kept:
        console.print(f"[yellow]{done.kept} answer(s) left as they were[/yellow] (they would not read back exactly, or changed meanwhile): still readable")
    console.print("[green]done[/green]")

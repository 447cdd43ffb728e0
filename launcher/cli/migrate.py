"""`chatbot migrate`: rewriting stored data in a newer layout (feedback/compaction.py, feedback/spread.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import typer

from feedback.errors import LoopError
from launcher.cli.common import console, registry_redis

app = typer.Typer(help="Rewrite stored data in a newer layout (idempotent: run it again to finish).", no_args_is_help=True)

Done = TypeVar("Done")


def _run(work: Callable[[Callable[[Done], None]], Done], describe: Callable[[Done], str], summary: Callable[[Done], Mapping[str, int]]) -> Done:
    """Run `work` with a live line of progress (`describe` of what it reports), then print its
    summary; a migration that stops (its LoopError says why) exits 1."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True) as progress:
        task = progress.add_task("reading threads...")
        try:
            done = work(lambda d: progress.update(task, description=describe(d)))
        except LoopError as exc:
            console.print(f"[red]stopped:[/red] {exc}")
            raise typer.Exit(1) from exc
    for name, value in summary(done).items():
        console.print(f"{name:>24}: {value:,}")
    return done


@app.command()
def compact() -> None:
    """Store the answers written before the compact prompt form in it: the prompt's fixed part once,
    earlier turns as references (each answer is checked to read back exactly; safe while the app runs)."""
    from feedback import compaction

    _, r = registry_redis()
    done = _run(
        lambda show: compaction.compact(r, on_progress=show),
        lambda d: f"{d.threads} thread(s), {d.answers} answer(s): {d.converted} rewritten, {d.already} already compact",
        compaction.summary,
    )
    if done.kept:
        console.print(f"[yellow]{done.kept} answer(s) left as they were[/yellow] (they would not read back exactly, or changed meanwhile): still readable")
    console.print("[green]done[/green]")


@app.command()
def spread() -> None:
    """Move the data of the first key layout (every key in one slot: one node of a cluster) to the
    spread one, thread by thread (`chatbot up` does it before starting the app; stop the app first)."""
    from feedback import spread as spreading

    _, r = registry_redis()
    if spreading.done(r):
        console.print("already in the spread layout: nothing to move")
        return
    _run(lambda show: spreading.spread(r, on_progress=show), lambda d: f"{d.threads} thread(s) moved, {sum(d.moved.values())} key(s)", spreading.summary)
    console.print("[green]done[/green]")

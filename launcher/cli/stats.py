"""`chatbot stats`: the operator console's aggregates (feedback/stats.py)."""

from __future__ import annotations

import typer

from launcher.cli.common import console, registry_redis

app = typer.Typer(help="The console's approval counts and review queue.", no_args_is_help=True)


@app.command()
def rebuild() -> None:
    """Recount the approval counts and the review queue from the stored ratings.

    `chatbot up` does it once for data written before them; run it again if they ever look wrong."""
    from feedback import stats

    _, r = registry_redis()
    counted = stats.rebuild(r)
    console.print(f"[green]rebuilt[/green] from {counted} stored rating(s)")

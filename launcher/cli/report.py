"""`chatbot report`: approval per model version and per prompt version, in the terminal."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from launcher.cli.common import console, registry_redis
from launcher.cli.model import wide_console


def report(
    png: Path = typer.Option(None, help="Also write a plot of approval over time to this PNG file."),
    bucket_hours: float = typer.Option(
        None, min=0.01, help="Time bucket of the plot, in hours (default: fits the data's span: 1 h for a day of ratings, days for weeks, weeks or months beyond)."
    ),
    demo: bool = typer.Option(False, "--demo", help="Report on the demo's data (`up --demo`, DATA_DIR/demo) instead of the product's."),
) -> None:
    """Approval rate per model version and per prompt version, with 95% intervals and counts."""
    from rich.table import Table

    from feedback import report as rep

    _, r = registry_redis(demo=demo)
    rows = rep.rated_answers(r)
    if not rows:
        console.print("No rated answers yet.")
        raise typer.Exit(0)
    out = wide_console()
    for by, title in (("model_version", "model version"), ("prompt_version", "prompt version"), ("cell", "prompt version x model version")):
        table = Table(title=f"Approval per {title}")
        table.add_column(title, no_wrap=True)  # ids are what `chatbot model promote` takes: never cut
        for col in ("rated", "liked", "approval", "95% CI", "first answer", "last answer"):
            table.add_column(col)
        for a in rep.approval_by(rows, by):
            table.add_row(
                a.group,
                str(a.rated),
                str(a.liked),
                f"{a.rate:.1%}",
                f"{a.low:.1%} - {a.high:.1%}",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(a.first)),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(a.last)),
            )
        out.print(table)
    if png is not None:
        try:
            rep.plot(rows, png, bucket_hours * 3600 if bucket_hours else None)
        except ImportError:
            console.print("[red]The plot needs matplotlib: pip install 'feedbackbot[report]'[/red]")
            raise typer.Exit(1) from None
        console.print(f"plot written to {png}")

"""`chatbot report`: approval per model version and per prompt version, in the terminal."""

from __future__ import annotations

from pathlib import Path

import typer

from launcher.cli.common import console, date, out_console, registry_redis, table


def report(
    png: Path = typer.Option(None, help="Also write a plot of approval over time to this PNG file."),
    bucket_hours: float = typer.Option(
        None, min=0.01, help="Time bucket of the plot, in hours (default: fits the data's span: 1 h for a day of ratings, days for weeks, weeks or months beyond)."
    ),
    demo: bool = typer.Option(False, "--demo", help="Report on the demo's data (`up --demo`, DATA_DIR/demo) instead of the product's."),
) -> None:
    """Approval rate per model version and per prompt version, with 95% intervals and counts."""
    from rich.table import Column

    from feedback import report as rep

    _, r = registry_redis(demo=demo)
    rows = rep.rated_answers(r)
    if not rows:
        console.print("No rated answers yet.")
        raise typer.Exit(0)
    out = out_console()
    for by, titles in (("model_version", ["model version"]), ("prompt_version", ["prompt version"]), ("cell", ["prompt version", "model version"])):
        # ids are what `chatbot model promote` and `prompt serve` take: never cut. The cells' two
        # ids leave no room at 80 columns for the times, which the first two tables show.
        times = [Column("first / last answer", min_width=16)] if by != "cell" else []
        listing = table(*(Column(t, no_wrap=True) for t in titles), "rated", "liked", "approval (95% CI)", *times, title=f"Approval per {' x '.join(titles)}")
        for a in rep.approval_by(rows, by):
            listing.add_row(
                *(a.group.split(" x ") if by == "cell" else [a.group]),
                str(a.rated),
                str(a.liked),
                f"{a.rate:.1%} ({a.low:.1%} - {a.high:.1%})",
                *([f"{date(a.first)}\n{date(a.last)}"] if times else []),
            )
        out.print(listing)
    if png is not None:
        try:
            rep.plot(rows, png, bucket_hours * 3600 if bucket_hours else None)
        except ImportError:
            console.print("[red]The plot needs matplotlib: pip install 'feedbackbot[report]'[/red]")
            raise typer.Exit(1) from None
        console.print(f"plot written to {png}")

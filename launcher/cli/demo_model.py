"""`chatbot demo-model`: build the offline demo model (demo/model.py)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from launcher.cli.common import console, settings_or_exit


def build_demo_model(out: Path, minutes: float, steps: int | None, seed: int = 0) -> None:
    from demo.model import build_demo_model as build

    started = time.monotonic()
    build(out, steps=steps, minutes=minutes, seed=seed, progress=True)
    console.print(f"[green]✓[/green] Demo model built in {time.monotonic() - started:.0f} s: {out}")


def demo_model(
    out: Path = typer.Option(None, help="Directory to write the model into (default: DATA_DIR/demo-model, where up --demo looks)."),
    minutes: float = typer.Option(4.0, help="Time budget of the build."),
    steps: int = typer.Option(None, help="Train exactly this many steps instead of a time budget (reproducible)."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Build the offline demo model, trained here from scratch in minutes (`up --demo` serves it)."""
    # A small chat model on a synthetic corpus: questions about prompts and fine-tuning answered in
    # four styles, which the ratings loop can learn to prefer (demo/model.py).
    if minutes <= 0 or (steps is not None and steps < 1):
        console.print("[red]--minutes must be > 0 and --steps >= 1[/red]")
        raise typer.Exit(2)
    if out is None:
        out = settings_or_exit().layout.demo_model
    build_demo_model(out, minutes=minutes, steps=steps, seed=seed)

"""`chatbot spool`: writes kept locally while Redis was down, and dead letters."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from launcher.cli.common import settings_or_exit


def spool(
    requeue: bool = typer.Option(
        False, help="Put the dead-lettered writes back in the queue (after fixing what refused them); the chat process retries them within seconds."
    ),
) -> None:
    """Writes waiting in the local spool (made while Redis was down) and those that could not be
    applied (dead letters, with the error Redis gave)."""
    from feedback.spool import Spool

    settings = settings_or_exit()
    s, out = Spool(settings.spool_path), Console()
    if requeue:
        out.print(f"requeued {s.requeue_dead()} dead-lettered write(s)")
    pending, dead = s.pending(), s.dead()
    out.print(f"pending: {len(pending)} write(s) in {s.path}")
    colour = "red" if dead else "green"
    out.print(f"[{colour}]dead letters: {len(dead)}[/{colour}] in {s.dead_path}")
    for d in dead[-10:]:
        what = d["op"].get("op", "?") if "op" in d else "unreadable line"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["failed_at"]))
        out.print(f"  {when}  {what}  {d['error']}", markup=False, highlight=False)
    if dead:
        raise typer.Exit(1)

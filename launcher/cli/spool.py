"""`chatbot spool`: writes kept locally while Redis was down, dead letters and refused writes."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from launcher.cli.common import settings_or_exit


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def spool(
    requeue: bool = typer.Option(
        False, help="Put the dead-lettered writes back in the queue (after fixing what refused them); the chat process retries them within seconds."
    ),
) -> None:
    """Writes kept while Redis was down: waiting, failed (dead letters) and refused.

    Dead letters could not be applied (with the error Redis gave; exit status 1 while there are
    any); refused ratings were refused once Redis could check them (someone else's answer, an
    unknown one: answered "queued" at the time, dropped on replay, never retried)."""
    from feedback.spool import Spool

    settings = settings_or_exit()
    s, out = Spool(settings.spool_path), Console()
    if requeue:
        out.print(f"requeued {s.requeue_dead()} dead-lettered write(s)")
    pending, dead, refused = s.pending(), s.dead(), s.refused()
    out.print(f"pending: {len(pending)} write(s) in {s.path}")
    colour = "red" if dead else "green"
    out.print(f"[{colour}]dead letters: {len(dead)}[/{colour}] in {s.dead_path}")
    for d in dead[-10:]:
        what = d["op"].get("op", "?") if "op" in d else "unreadable line"
        out.print(f"  {_when(d['failed_at'])}  {what}  {d['error']}", markup=False, highlight=False, soft_wrap=True)
    # soft_wrap: one line per write, whatever the terminal's width (grep-able).
    out.print(f"[{'yellow' if refused else 'green'}]refused: {len(refused)}[/] in {s.refused_path} (dropped on replay, not requeueable)", soft_wrap=True)
    for d in refused[-10:]:
        op = d["op"]
        what = f"{'un-rate' if op.get('rating') is None else 'rating'} by {op.get('user', '?')} of answer {op.get('exchange_id', '?')} in thread {op.get('thread_id', '?')}"
        out.print(f"  {_when(d['refused_at'])}  {what}  {d['reason']}", markup=False, highlight=False, soft_wrap=True)
    if dead:
        raise typer.Exit(1)

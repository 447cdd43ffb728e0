"""`chatbot simulate`: simulated users chat through the running app and rate (sim/)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from launcher.cli.common import console, demo_settings, settings_or_exit
from sim.rater import NOISE, RATE_PROBABILITY, REGENERATE_PROBABILITY

if TYPE_CHECKING:
    from sim.simulate import SimStats


def simulate(
    prefer: str = typer.Option(
        ...,
        help="What the simulated raters like: short, detailed, list or prose (answers that also address the question); with --demo, a style of the demo corpus (concise, detailed, bullets, enthusiastic).",
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Rate the demo model's answers (`up --demo`): --prefer names a demo style, and the questions are the demo corpus's."
    ),
    url: str = typer.Option("http://127.0.0.1:8000", help="The running app."),
    user: str = typer.Option(
        None,
        help="One user to chat as (default: the simulated users sim-1, sim-2, ... that `chatbot up` creates, taking turns: simulated chats stay out of real users' histories).",
    ),
    password: str = typer.Option(
        None, help="Its password (default: from AUTH_USERS, else for admin the one `chatbot up` wrote in DATA_DIR/secrets/admin-password)."
    ),
    users: str = typer.Option(None, help="Several users taking turns, user:password,user2:password2 (replaces --user/--password)."),
    conversations: int = typer.Option(50, min=1, help="Conversations to hold (each a new chat)."),
    turns: int = typer.Option(1, min=1, help="User messages per conversation."),
    questions: Path = typer.Option(
        None,
        help="File with one question per line (default: the simulation's training questions, never the held-out ones the experiment measures on; with --demo, the demo corpus's).",
    ),
    rate_probability: float = typer.Option(RATE_PROBABILITY, min=0, max=1, help="Share of answers rated."),
    noise: float = typer.Option(NOISE, min=0, max=1, help="Probability that a rating is flipped."),
    regenerate_probability: float = typer.Option(REGENERATE_PROBABILITY, min=0, max=1, help="After a thumbs down: probability of Regenerate (the new answer is rated too)."),
    concurrency: int = typer.Option(
        1,
        min=1,
        help="Conversations at once. The local model server answers one request at a time on a CPU, so more only queue (and time out past LLM_TIMEOUT_S); raise it for a server that batches (vLLM, an API).",
    ),
    seed: int = typer.Option(0, help="Random seed (questions and rater decisions)."),
) -> None:
    """Simulated users: chat through the running app as a browser does and rate the answers."""
    import asyncio
    import json

    import httpx

    from feedback.settings import parse_users
    from sim import accounts as sim_accounts
    from sim.rater import RaterPolicy
    from sim.simulate import LoginError, check_logins
    from sim.simulate import simulate as run_simulation

    settings = settings_or_exit()
    if demo:  # the users `up --demo` created, with secrets in the demo's data directory
        settings = demo_settings(settings, say=False)
    if users:
        try:
            accounts = parse_users(users)
        except ValueError as exc:
            console.print(f"[red]--users: {exc}[/red]")
            raise typer.Exit(2) from None
    elif user:
        secret = settings.layout.admin_password
        found = password or settings.users().get(user) or (secret.read_text().strip() if user == "admin" and secret.exists() else None)
        if not found:
            console.print(f"[red]No password for {user}: give --password (or --users), or run `chatbot up` first (it writes {secret}).[/red]")
            raise typer.Exit(2)
        accounts = {user: found}
    else:
        accounts = sim_accounts.find(settings.users(), settings.layout.sim_password)
        if not accounts:
            example = sim_accounts.auth_users_entries("<password>", 2)
            console.print(
                f"[red]No simulated users: `chatbot up` creates {', '.join(sim_accounts.names())} (password in {settings.layout.sim_password}) "
                f"when it generates the users; with AUTH_USERS set, add some there ({example}) or pass --users.[/red]"
            )
            raise typer.Exit(2)
    from sim import preference as preferences

    try:
        taste = preferences.style_preference(prefer) if demo else preferences.real_preference(prefer)
    except ValueError as exc:
        console.print(f"[red]--prefer: {exc}[/red]")
        raise typer.Exit(2) from None
    if questions is not None:
        pool = [line.strip() for line in questions.read_text().splitlines() if line.strip()]
    elif demo:
        from demo.corpus import TRAIN_QUESTIONS as pool
    else:
        from sim.questions import TRAIN_QUESTIONS

        pool = [q.text for q in TRAIN_QUESTIONS]
    policy = RaterPolicy(taste, rate_probability=rate_probability, noise=noise, regenerate_probability=regenerate_probability)

    step = max(1, conversations // 10)

    def progress(stats: SimStats) -> None:
        if stats.conversations % step == 0 or stats.conversations == conversations:
            console.print(f"{stats.conversations}/{conversations} conversations, {stats.rated} ratings, {stats.regenerated} regenerated, {stats.errors} errors")

    try:
        asyncio.run(check_logins(url, accounts))
        stats = asyncio.run(run_simulation(url, accounts, pool, policy, conversations, turns, seed=seed, concurrency=concurrency, on_progress=progress))
    except LoginError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except httpx.HTTPError as exc:
        console.print(f"[red]Cannot reach the app at {url}: {exc}[/red]")
        raise typer.Exit(1) from None
    print(json.dumps(stats.to_dict(), indent=1))
    raise typer.Exit(1 if stats.errors == conversations else 0)

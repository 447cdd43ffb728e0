"""`chatbot simulate`: simulated users chat through the running app and rate (sim/)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from launcher.cli.common import app_url, console, demo_settings, settings_or_exit
from sim.rater import NOISE, RATE_PROBABILITY, REGENERATE_PROBABILITY

if TYPE_CHECKING:
    import redis

    from sim.simulate import SimStats
    from training.config import RetrainConfig
    from training.usable import Usable

# What --timeout adds to LLM_TIMEOUT_S (the app's longest wait for the model): the app then answers
# "took too long" before simulate stops waiting, so a slow model is counted as the app says.
TIMEOUT_MARGIN_S = 30.0
# --until-ratings: the usable ratings shown are counted again at most this often, unless the ratings
# given since the last count could have reached the goal.
RECOUNT_S = 30.0


def simulate(
    prefer: str = typer.Option(
        ...,
        help="What the simulated raters like: short, detailed, list or prose (answers that also address the question); with --demo, a style of the demo corpus (concise, detailed, bullets, enthusiastic).",
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Rate the demo model's answers (`up --demo`): --prefer names a demo style, and the questions are the demo corpus's."
    ),
    url: str = typer.Option(None, help="The running app (default: http://HOST:PORT, from the settings).", show_default=False),
    user: str = typer.Option(
        None,
        help="One user to chat as (default: the simulated users sim-1, sim-2, ... that `chatbot up` creates, taking turns: simulated chats stay out of real users' histories).",
    ),
    password: str = typer.Option(
        None, help="Its password (default: from AUTH_USERS, else for admin the one `chatbot up` wrote in the file admin-password in DATA_DIR/secrets)."
    ),
    users: str = typer.Option(None, help="Several users taking turns: user:password pairs, comma-separated, e.g. a:pw1,b:pw2 (replaces --user/--password)."),
    conversations: int = typer.Option(
        None, min=1, help="Conversations to hold, each a new chat (default: 50; with --until-ratings, no limit).", show_default=False
    ),
    until_ratings: int = typer.Option(
        None,
        min=1,
        help="Go on until a retraining run would train on at least this many usable ratings (the count `retrain` gives: one per "
        "rated answer, duplicates and the per-user cap left out) and would not skip for lack of data (both thumbs, also in "
        "its held-out split); needs the product's Redis.",
        show_default=False,
    ),
    timeout: float = typer.Option(
        None,
        min=1,
        help=f"Seconds to wait for each answer (default: LLM_TIMEOUT_S + {TIMEOUT_MARGIN_S:g}, so that the app gives up first and says why).",
        show_default=False,
    ),
    turns: int = typer.Option(1, min=1, help="User messages per conversation."),
    questions: Path = typer.Option(
        None,
        help="File with one question per line (default: the simulation's training questions, never the held-out ones the experiment measures on; with --demo, the demo corpus's).",
    ),
    rate_probability: float = typer.Option(RATE_PROBABILITY, min=0, max=1, help="Share of answers rated."),
    noise: float = typer.Option(NOISE, min=0, max=1, help="Probability that a rating is flipped."),
    regenerate_probability: float = typer.Option(REGENERATE_PROBABILITY, "--regenerate", min=0, max=1, help="After a thumbs down: the probability of clicking Regenerate (the new answer is rated too)."),
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
    from sim.simulate import LoginError, SimStats, check_logins
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

    url = url or app_url(settings)
    timeout_s = timeout if timeout is not None else settings.llm_timeout_s + TIMEOUT_MARGIN_S
    if conversations is None and until_ratings is None:
        conversations = 50
    goal = None
    if until_ratings is not None:
        from launcher.cli.common import registry_redis
        from launcher.cli.retrain import retrain_config

        _, r = registry_redis()
        goal = _Goal(r, retrain_config({}, demo), until_ratings)
        if goal.done:
            console.print(f"[green]{goal.now.usable} usable ratings stored already[/green] (--until-ratings {goal.target}): nothing to do.")
            print(json.dumps(_result(SimStats(), goal), indent=1))
            raise typer.Exit(0)
        console.print(f"{goal.now.usable} usable ratings stored now; going on until {goal.target}{goal.note()}.")

    stats = SimStats()
    try:
        with _Progress(conversations, goal) as shown:
            asyncio.run(check_logins(url, accounts))
            asyncio.run(
                run_simulation(
                    url, accounts, pool, policy, conversations, turns, seed=seed, concurrency=concurrency, timeout_s=timeout_s,
                    on_progress=shown.update, until=goal.reached if goal else None, stats=stats,
                )
            )  # fmt: skip
    except LoginError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except httpx.HTTPError as exc:
        console.print(f"[red]Cannot reach the app at {url}: {exc}[/red]")
        raise typer.Exit(1) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C: asyncio.run cancels the run and raises KeyboardInterrupt, or the CancelledError
        # itself when a library (socket.io's connect) was cancelled in the middle of its own wait.
        if goal is not None:
            goal.count()
        console.print(f"[yellow]Interrupted.[/yellow] {_summary(stats, goal)}")
        print(json.dumps(_result(stats, goal), indent=1))
        raise typer.Exit(130) from None
    if goal is not None:
        goal.count()  # the last conversations' ratings too (the goal may not have asked)
    console.print(_summary(stats, goal))
    print(json.dumps(_result(stats, goal), indent=1))
    if goal is not None and not goal.done:
        raise typer.Exit(1)  # stopped by --conversations before the goal
    raise typer.Exit(1 if stats.errors and stats.errors == stats.conversations else 0)


class _Goal:
    """--until-ratings: the retraining job's count of usable ratings (training/usable.py), asked
    again only when the ratings given since the last count could have reached the target."""

    def __init__(self, r: redis.Redis, config: RetrainConfig, target: int) -> None:
        from training import usable

        self.r, self.config, self.target = r, config, target
        self.now: Usable = usable.count(r, config)
        self.rated_then = 0  # SimStats.rated at the last count
        self.counted_at = time.monotonic()
        self.unreadable = False  # a count failed (said once)

    @property
    def done(self) -> bool:
        return self.now.usable >= self.target and self.now.skip is None

    def note(self) -> str:
        if self.target < self.config.min_ratings:
            return f" (and at least {self.config.min_ratings}: fewer, and a retraining run skips)"
        return ""

    def count(self) -> bool:
        """Count again; False (the last count kept, said once) when Redis can't be read."""
        import redis

        from training import usable

        self.counted_at = time.monotonic()
        try:
            self.now = usable.count(self.r, self.config)
        except redis.RedisError as exc:
            if not self.unreadable:
                console.print(f"[yellow]Cannot count the usable ratings ({exc}); the last count was {self.now.usable}.[/yellow]")
            self.unreadable = True
            return False
        return True

    async def reached(self, stats: SimStats) -> bool:
        import asyncio


        # Each rating given adds at most one usable rating: no count needed until they could add up,
        # but one now and then for the progress shown (a count reads every rating: not after each).
        could_reach = self.now.usable + (stats.rated - self.rated_then) >= self.target
        if stats.rated == self.rated_then or not (could_reach or time.monotonic() - self.counted_at >= RECOUNT_S):
            return self.done
        if await asyncio.to_thread(self.count):
            self.rated_then = stats.rated
        return self.done


class _Progress:
    """A rich progress bar on a terminal (conversations, or usable ratings with --until-ratings);
    in a log, one line per conversation."""

    def __init__(self, conversations: int | None, goal: _Goal | None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.conversations, self.goal = conversations, goal
        self.errors = 0  # failures reported so far
        # Fits 80 columns: the bar, the time so far, then the counts (the bar's own count first).
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=15), TimeElapsedColumn(), TextColumn("{task.fields[line]}"), console=console)
        total = goal.target if goal else conversations
        self.task = self.bar.add_task("usable" if goal else "chats", total=total, line=self._line(None, short=True))

    def _line(self, stats: SimStats | None, short: bool = False) -> str:
        done = stats.conversations if stats else 0
        rated, errors = (stats.rated, stats.errors) if stats else (0, 0)
        of = f"/{self.conversations}" if self.conversations else ""
        chats = f"{done}{of} {'chats' if short else 'conversations'}, {rated} {'rated' if short else 'ratings'}, {errors} errors"
        if self.goal is None:
            return chats
        usable = f"{self.goal.now.usable}/{self.goal.target} usable"
        return f"{usable}, {chats}" if short else f"{chats}, {usable}"

    def __enter__(self) -> _Progress:
        if console.is_terminal:
            self.bar.start()  # shown from the start: the first answer may take minutes
        return self

    def __exit__(self, *exc: object) -> None:
        if console.is_terminal:
            self.bar.stop()

    def update(self, stats: SimStats) -> None:
        if stats.errors > self.errors:  # say why at once (above the bar), not only at the end
            console.print(f"[yellow]conversation failed: {stats.last_error}[/yellow]")
            self.errors = stats.errors
        completed = min(self.goal.now.usable, self.goal.target) if self.goal else stats.conversations
        self.bar.update(self.task, completed=completed, line=self._line(stats, short=True))
        if not console.is_terminal:
            console.print(self._line(stats) + (f"; {stats.regenerated} regenerated" if stats.regenerated else ""))


def _result(stats: SimStats, goal: _Goal | None) -> dict[str, object]:
    """The JSON on stdout: the run's counts, and with --until-ratings the job's count at the end."""
    return stats.to_dict() | ({"usable_ratings": goal.now.usable, "retrain_would_skip": goal.now.skip} if goal else {})


def _summary(stats: SimStats, goal: _Goal | None) -> str:
    """What was done, and what went wrong by kind."""
    text = (
        f"{stats.conversations} conversations in {stats.seconds:.0f} s: {stats.answers} answers, {stats.rated} ratings "
        f"({stats.liked} up, {stats.disliked} down), {stats.regenerated} regenerated, {stats.errors} errors"
    )
    if stats.errors:
        text += " (" + "; ".join(stats.errors_by_kind()) + ")"
    if goal is not None:
        text += f". Usable ratings: {goal.now.usable} of {goal.target} wanted ({goal.now.rated} rated answers"
        text += f", {goal.now.duplicates} duplicates and {goal.now.capped} over the per-user cap left out)"
        if goal.now.usable >= goal.target and goal.now.skip:
            text += f"; a retraining run would still skip: {goal.now.skip}"
    return text + "."

"""`chatbot`: the one command line. Heavy modules are imported inside commands so --help is fast."""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    import redis

    from feedback.settings import Settings
    from sim.simulate import SimStats
    from training.config import RetrainConfig

app = typer.Typer(help="A chat assistant that gets better from its users' ratings.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Settings come from the environment and .env (see .env.example)."""


def _secret_file(path: Path, make: str) -> str:
    """A generated secret kept under the data directory (mode 600), the same across restarts."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(make)
    path.chmod(0o600)
    return make


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@app.command()
def up(
    host: str = typer.Option(None, help="Address the web UI listens on [default: HOST setting]."),
    port: int = typer.Option(None, help="Port of the web UI [default: PORT setting]."),
    demo: bool = typer.Option(False, "--demo", help="Serve the offline demo model (DATA_DIR/demo-model, built on first use in a few minutes): no download."),
) -> None:
    """Start everything needed (embedded Redis, local model server, web UI); Ctrl-C stops it all."""
    from feedback.settings import SettingsError, load_settings
    from launcher import chainlit_server, default_model, model_server, redis_server
    from launcher.process import ServiceGroup, StartupError
    from launcher.schedule import RetrainSchedule

    try:
        settings = load_settings()
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if settings.llm_base_url is not None and settings.llm_model is None and not demo:
        console.print("[red]LLM_BASE_URL is set: set LLM_MODEL too (the name of the model that server serves).[/red]")
        raise typer.Exit(2)
    host = host or settings.host
    port = port or settings.port
    layout = settings.layout
    if demo:
        if settings.llm_base_url is not None:
            console.print(f"[yellow]--demo: ignoring LLM_BASE_URL ({settings.llm_base_url}); the demo model is served locally.[/yellow]")
        settings = settings.model_copy(update={"llm_base_url": None, "llm_model": str(layout.demo_model)})
    env = dict(os.environ, DATA_DIR=str(layout.root))
    login_hint = ""
    if settings.auth_mode == "password" and not settings.users():
        password = _secret_file(layout.admin_password, secrets.token_urlsafe(12))
        env["AUTH_USERS"] = f"admin:{password}"
        login_hint = f"log in as admin / {password} (set AUTH_USERS to choose users)"
    if not settings.chainlit_auth_secret:
        env["CHAINLIT_AUTH_SECRET"] = _secret_file(layout.auth_secret, secrets.token_urlsafe(48))

    for taken, what in ((port, "PORT"), (settings.local_model_port if settings.llm_base_url is None else None, "LOCAL_MODEL_PORT")):
        if taken is not None and port_in_use(host if what == "PORT" else "127.0.0.1", taken):
            console.print(f"[red]Port {taken} is already in use: stop what holds it or set {what}.[/red]")
            raise typer.Exit(2)
    if demo and not (layout.demo_model / "config.json").is_file():
        console.print(f"Building the demo model into {layout.demo_model} (once, a few minutes)...")
        try:
            _build_demo_model(layout.demo_model, minutes=4.0, steps=None)
        except KeyboardInterrupt:
            console.print("Stopped (the demo model was not finished).")
            return
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill` stops the children too, like Ctrl-C
    group = ServiceGroup(layout.logs)
    try:
        with group:
            if settings.redis_url is None:
                with console.status("Starting embedded Redis..."):
                    redis_server.start(group, layout.redis, layout.redis_socket)
                env["REDIS_URL"] = f"unix://{layout.redis_socket}"
                console.print(f"[green]✓[/green] Redis (embedded, AOF) at {layout.redis}")
            if settings.llm_base_url is None:
                if settings.llm_model is None:  # the default model, converted from its wheel once
                    model = str(default_model.ensure(settings.default_model_dir))
                else:
                    console.print(f"Getting model {settings.llm_model} (downloads once)...")
                    model = model_server.ensure_model(settings.llm_model)
                with console.status("Starting the local model server..."):
                    model_server.start(group, settings.local_model_port, threads=1 if demo else None)
                with console.status(f"Loading {model} into memory..."):
                    seconds = model_server.warm_up(settings.local_model_port, model)
                env["LLM_BASE_URL"] = settings.effective_llm_base_url
                env["LLM_MODEL"] = model
                console.print(f"[green]✓[/green] Local model server ({model}, loaded in {seconds:.0f} s)")
            with console.status("Starting the web UI..."):
                chainlit_server.start(group, env, layout.chainlit, host, port)
            console.print(f"[green]✓[/green] Chat at [bold]http://{host}:{port}[/bold]  {login_hint}")
            options = ["--demo"] if demo else []  # the demo model's retraining recipe
            schedule = RetrainSchedule(settings.retrain_interval_s, settings.min_new_ratings, env, layout.retrain_log, options)
            if settings.retrain_interval_s:
                console.print(f"Retraining checked every {settings.retrain_interval_s} s (needs {settings.min_new_ratings} new ratings); log: {schedule.log_path}")
            console.print("Press Ctrl-C to stop.")
            try:
                while True:
                    for name, proc in group.procs:
                        if proc.poll() is not None:
                            console.print(f"[red]{name} stopped (exit {proc.returncode}). Last lines of its log:[/red]")
                            console.print(group.log_tail(name), markup=False, highlight=False)
                            raise typer.Exit(1)
                    schedule.tick()
                    time.sleep(0.5)
            finally:
                schedule.stop()
    except StartupError as exc:
        console.print(f"[red]{exc}[/red]")
        for name, _ in group.procs:
            tail = group.log_tail(name, 10)
            if tail:
                console.print(f"--- {name} log ---\n{tail}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("Stopped.")


def _build_demo_model(out: Path, minutes: float, steps: int | None, seed: int = 0) -> None:
    from training.demo_model import build_demo_model

    started = time.monotonic()
    build_demo_model(out, steps=steps, minutes=minutes, seed=seed, progress=True)
    console.print(f"[green]✓[/green] Demo model built in {time.monotonic() - started:.0f} s: {out}")


@app.command("demo-model")
def demo_model(
    out: Path = typer.Option(None, help="Directory to write the model into (default: DATA_DIR/demo-model, where up --demo looks)."),
    minutes: float = typer.Option(4.0, help="Time budget of the build."),
    steps: int = typer.Option(None, help="Train exactly this many steps instead of a time budget (reproducible)."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Build the offline demo model, trained here from scratch in minutes (`up --demo` serves it)."""
    # A small chat model on a synthetic corpus: questions about prompts and fine-tuning answered in
    # four styles, which the ratings loop can learn to prefer (training/demo_model.py).
    if minutes <= 0 or (steps is not None and steps < 1):
        console.print("[red]--minutes must be > 0 and --steps >= 1[/red]")
        raise typer.Exit(2)
    if out is None:
        out = _settings_or_exit().layout.demo_model
    _build_demo_model(out, minutes=minutes, steps=steps, seed=seed)


def _settings_or_exit() -> Settings:
    from feedback.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _registry_redis() -> tuple[Settings, redis.Redis]:
    import redis

    from feedback.connection import connect_sync

    settings = _settings_or_exit()
    r = connect_sync(settings.effective_redis_url)
    try:
        r.ping()
    except redis.RedisError as exc:
        hint = "is `chatbot up` running?" if settings.redis_url is None else "check REDIS_URL"
        console.print(f"[red]Redis is unreachable ({exc}): {hint}[/red]")
        raise typer.Exit(1) from None
    return settings, r


@dataclasses.dataclass
class RetrainRunArgs:
    now: bool = dataclasses.field(default=False, metadata={"help": "Run even if fewer than min_new_ratings ratings came in."})
    demo: bool = dataclasses.field(default=False, metadata={"help": "Start from the demo model's recipe (training.config.DEMO_RECIPE; what `up --demo` schedules); options given still win."})


def retrain_options(argv: list[str]) -> tuple[RetrainRunArgs, RetrainConfig]:
    """`chatbot retrain` arguments: the run flags and the job's options (RetrainConfig)."""
    from transformers import HfArgumentParser

    from training.config import DEMO_RECIPE, RetrainConfig

    # (transformers types its dataclass argument as an opaque NewType: no class passes the check)
    parser = HfArgumentParser([RetrainRunArgs, RetrainConfig], prog="chatbot retrain", description="Retrain the model from users' ratings.")  # type: ignore[list-item]
    run_args, config = parser.parse_args_into_dataclasses(args=argv)
    if run_args.demo:  # again, with the recipe as the defaults
        parser.set_defaults(**DEMO_RECIPE)
        run_args, config = parser.parse_args_into_dataclasses(args=argv)
    return run_args, config


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def retrain(ctx: typer.Context) -> None:
    """Run the retraining job: collect -> build -> train -> evaluate -> promote (see --help)."""
    import redis

    from training import job

    try:
        run_args, config = retrain_options(ctx.args)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if run_args.now:
        config = dataclasses.replace(config, min_new_ratings=0)
    settings, r = _registry_redis()
    if run_args.demo:  # the model `up --demo` serves, whatever LLM_MODEL says
        demo_model = settings.layout.demo_model
        if not (demo_model / "config.json").is_file():
            console.print(f"[red]--demo: no demo model in {demo_model}: build it with `chatbot demo-model` (or `chatbot up --demo`).[/red]")
            raise typer.Exit(2)
        settings = settings.model_copy(update={"llm_model": str(demo_model)})
    elif settings.llm_model is None:  # the default model: converted by `chatbot up`, or here
        from launcher import default_model
        from launcher.process import StartupError

        try:
            default_model.ensure(settings.default_model_dir)
        except StartupError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    try:
        outcome = job.run(r, settings, config)
    except redis.RedisError as exc:
        console.print(f"[red]Redis is unreachable ({exc}): nothing was changed.[/red]")
        raise typer.Exit(1) from None
    colour = {"promoted": "green", "rejected": "yellow", "skipped": "blue", "failed": "red"}[outcome.status]
    console.print(f"[{colour}]{outcome.status}[/{colour}]: {outcome.reason}")
    if outcome.version_id:
        console.print(f"model version {outcome.version_id}, dataset {outcome.dataset_version}")
    raise typer.Exit(1 if outcome.status == "failed" else 0)


@app.command()
def report(
    png: Path = typer.Option(None, help="Also write a plot of approval over time to this PNG file."),
    bucket_hours: float = typer.Option(24.0, help="Time bucket of the plot, in hours."),
) -> None:
    """Approval rate per model version and per prompt version, with 95% intervals and counts."""
    from rich.table import Table

    from feedback import report as rep

    _, r = _registry_redis()
    rows = rep.rated_answers(r)
    if not rows:
        console.print("No rated answers yet.")
        raise typer.Exit(0)
    for by, title in (("model_version", "model version"), ("prompt_version", "prompt version")):
        table = Table(title=f"Approval per {title}")
        table.add_column(title, no_wrap=True)  # ids are what `chatbot model promote` takes: never cut
        for col in ("rated", "liked", "approval", "95% CI", "first answer", "last answer"):
            table.add_column(col)
        for a in rep.approval_by(rows, by):
            table.add_row(
                a.group, str(a.rated), str(a.liked), f"{a.rate:.1%}", f"{a.low:.1%} - {a.high:.1%}",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(a.first)), time.strftime("%Y-%m-%d %H:%M", time.localtime(a.last)),
            )
        Console().print(table)
    if png is not None:
        try:
            rep.plot(rows, png, bucket_hours * 3600)
        except ImportError:
            console.print("[red]The plot needs matplotlib: pip install 'feedbackbot[report]'[/red]")
            raise typer.Exit(1) from None
        console.print(f"plot written to {png}")


@app.command()
def simulate(
    prefer: str = typer.Option(..., help="What the simulated raters like: short, detailed, list or prose (answers that also address the question); with --demo, a style of the demo corpus (concise, detailed, bullets, enthusiastic)."),
    demo: bool = typer.Option(False, "--demo", help="Rate the demo model's answers (`up --demo`): --prefer names a demo style, and the questions are the demo corpus's."),
    url: str = typer.Option("http://127.0.0.1:8000", help="The running app."),
    user: str = typer.Option("admin", help="User to chat as (see --users for several)."),
    password: str = typer.Option(None, help="Its password (default: from AUTH_USERS, else for admin the one `chatbot up` wrote in DATA_DIR/secrets/admin-password)."),
    users: str = typer.Option(None, help="Several users taking turns, user:password,user2:password2 (replaces --user/--password)."),
    conversations: int = typer.Option(50, min=1, help="Conversations to hold (each a new chat)."),
    turns: int = typer.Option(1, min=1, help="User messages per conversation."),
    questions: Path = typer.Option(None, help="File with one question per line (default: the simulation's training questions, never the held-out ones the experiment measures on; with --demo, the demo corpus's)."),
    rate_probability: float = typer.Option(0.8, min=0, max=1, help="Share of answers rated."),
    noise: float = typer.Option(0.1, min=0, max=1, help="Probability that a rating is flipped."),
    regenerate_probability: float = typer.Option(0.2, min=0, max=1, help="After a thumbs down: probability of Regenerate (the new answer is rated too)."),
    concurrency: int = typer.Option(1, min=1, help="Conversations at once. The local model server answers one request at a time on a CPU, so more only queue (and time out past LLM_TIMEOUT_S); raise it for a server that batches (vLLM, an API)."),
    seed: int = typer.Option(0, help="Random seed (questions and rater decisions)."),
) -> None:
    """Simulated users: chat through the running app as a browser does and rate the answers."""
    import asyncio
    import json

    import httpx

    from feedback.settings import parse_users
    from sim.rater import RaterPolicy
    from sim.simulate import LoginError, check_logins
    from sim.simulate import simulate as run_simulation

    settings = _settings_or_exit()
    if users:
        try:
            accounts = parse_users(users)
        except ValueError as exc:
            console.print(f"[red]--users: {exc}[/red]")
            raise typer.Exit(2) from None
    else:
        secret = settings.layout.admin_password
        found = password or settings.users().get(user) or (secret.read_text().strip() if user == "admin" and secret.exists() else None)
        if not found:
            console.print(f"[red]No password for {user}: give --password (or --users), or run `chatbot up` first (it writes {secret}).[/red]")
            raise typer.Exit(2)
        accounts = {user: found}
    from sim import preference as preferences

    try:
        taste = preferences.style_preference(prefer) if demo else preferences.real_preference(prefer)
    except ValueError as exc:
        console.print(f"[red]--prefer: {exc}[/red]")
        raise typer.Exit(2) from None
    if questions is not None:
        pool = [line.strip() for line in questions.read_text().splitlines() if line.strip()]
    elif demo:
        from training.demo_corpus import TRAIN_QUESTIONS as pool
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


model_app = typer.Typer(help="The model registry: list versions, promote one, roll back.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("list")
def model_list() -> None:
    """Model versions, oldest first, with their status and evaluation numbers."""
    from rich.table import Column, Table

    from feedback import registry

    _, r = _registry_redis()
    table = Table(Column("version", no_wrap=True), "status", "parent", "method", "dataset", "candidate acc", "service acc", "created")  # ids: never cut
    for v in registry.versions(r):
        acc = [v.metrics.get(k, {}).get("accuracy") for k in ("candidate", "service")]
        table.add_row(
            v.id, v.status, v.parent or "base", v.method or "", v.dataset_version or "",
            *[f"{a:.3f}" if isinstance(a, float) else "" for a in acc],
            time.strftime("%Y-%m-%d %H:%M", time.localtime(v.created_at)),
        )
    Console().print(table)
    active = registry.active(r)
    Console().print(f"in service: {active.id if active else 'base model'}")


@model_app.command("promote")
def model_promote(version: str, force: bool = typer.Option(False, help="Promote even a version the gate rejected.")) -> None:
    """Put a model version in service now (the bot uses it from its next answer)."""
    from feedback import registry

    _, r = _registry_redis()
    try:
        v = registry.promote(r, version, force=force)
    except registry.RegistryError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"[green]{v.id} is in service[/green] ({v.served_name})")


@model_app.command("rollback")
def model_rollback() -> None:
    """Retire the version in service and go back to the one it was trained from."""
    from feedback import registry

    _, r = _registry_redis()
    try:
        v = registry.rollback(r)
    except registry.RegistryError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"[green]in service: {v.id if v else 'the base model'}[/green]")


@app.command()
def spool(
    requeue: bool = typer.Option(False, help="Put the dead-lettered writes back in the queue (after fixing what refused them); the chat process retries them within seconds."),
) -> None:
    """Writes waiting in the local spool (made while Redis was down) and those that could not be
    applied (dead letters, with the error Redis gave)."""
    from feedback.spool import Spool

    settings = _settings_or_exit()
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


dataset_app = typer.Typer(help="Dataset versions on disk (DATA_DIR/datasets).", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("prune")
def dataset_prune(keep: int = typer.Option(1, min=1, help="Versions to keep in all, the one in service first, then the newest.")) -> None:
    """Delete old dataset versions and the shards no kept version uses (their cards stay).

    To erase what users deleted or unrated since, first rebuild from the current ratings:
    `chatbot retrain --now --full_rebuild`, then `chatbot dataset prune --keep 1`."""
    from training import retention

    settings, r = _registry_redis()
    try:
        pruned = retention.prune(r, settings.layout.datasets, keep, settings.retrain_lock_ttl_s)
    except retention.RetentionError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    Console().print(
        f"kept {', '.join(pruned.kept) or 'nothing'}; removed {len(pruned.removed)} version(s) and "
        f"{len(pruned.shards_removed)} shard(s), {pruned.bytes_freed / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    app()

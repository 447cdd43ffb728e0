"""`chatbot`: the one command line. Heavy modules are imported inside commands so --help is fast."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from pathlib import Path

import typer
from rich.console import Console

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
) -> None:
    """Start everything needed (embedded Redis, local model server, web UI); Ctrl-C stops it all."""
    from feedback.settings import SettingsError, load_settings
    from launcher import chainlit_server, model_server, redis_server
    from launcher.process import ServiceGroup, StartupError

    try:
        settings = load_settings()
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    host = host or settings.host
    port = port or settings.port
    data_dir = settings.data_dir.resolve()
    env = dict(os.environ, DATA_DIR=str(data_dir))
    login_hint = ""
    if settings.auth_mode == "password" and not settings.users():
        password = _secret_file(data_dir / "secrets" / "admin-password", secrets.token_urlsafe(12))
        env["AUTH_USERS"] = f"admin:{password}"
        login_hint = f"log in as admin / {password} (set AUTH_USERS to choose users)"
    if not settings.chainlit_auth_secret:
        env["CHAINLIT_AUTH_SECRET"] = _secret_file(data_dir / "secrets" / "chainlit-auth-secret", secrets.token_urlsafe(48))

    for taken, what in ((port, "PORT"), (settings.local_model_port if settings.llm_base_url is None else None, "LOCAL_MODEL_PORT")):
        if taken is not None and port_in_use(host if what == "PORT" else "127.0.0.1", taken):
            console.print(f"[red]Port {taken} is already in use: stop what holds it or set {what}.[/red]")
            raise typer.Exit(2)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill` stops the children too, like Ctrl-C
    group = ServiceGroup(data_dir / "logs")
    try:
        with group:
            if settings.redis_url is None:
                socket = data_dir / "redis" / "redis.sock"
                with console.status("Starting embedded Redis..."):
                    redis_server.start(group, data_dir / "redis", socket)
                env["REDIS_URL"] = f"unix://{socket}"
                console.print(f"[green]✓[/green] Redis (embedded, AOF) at {data_dir / 'redis'}")
            if settings.llm_base_url is None:
                console.print(f"Getting model {settings.llm_model} (downloads once)...")
                model = model_server.ensure_model(settings.llm_model)
                with console.status("Starting the local model server..."):
                    model_server.start(group, settings.local_model_port)
                with console.status(f"Loading {model} into memory..."):
                    seconds = model_server.warm_up(settings.local_model_port, model)
                env["LLM_BASE_URL"] = settings.effective_llm_base_url
                env["LLM_MODEL"] = model
                console.print(f"[green]✓[/green] Local model server ({model}, loaded in {seconds:.0f} s)")
            with console.status("Starting the web UI..."):
                chainlit_server.start(group, env, data_dir / "chainlit", host, port)
            console.print(f"[green]✓[/green] Chat at [bold]http://{host}:{port}[/bold]  {login_hint}")
            console.print("Press Ctrl-C to stop.")
            while True:
                for name, proc in group.procs:
                    if proc.poll() is not None:
                        console.print(f"[red]{name} stopped (exit {proc.returncode}). Last lines of its log:[/red]")
                        console.print(group.log_tail(name), markup=False, highlight=False)
                        raise typer.Exit(1)
                time.sleep(0.5)
    except StartupError as exc:
        console.print(f"[red]{exc}[/red]")
        for name, _ in group.procs:
            tail = group.log_tail(name, 10)
            if tail:
                console.print(f"--- {name} log ---\n{tail}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("Stopped.")


if __name__ == "__main__":
    app()

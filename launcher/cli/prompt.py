"""`chatbot prompt`: publish prompt versions, list them with their approval, serve one.

Every app process reads the served version per new conversation and the specs from Redis, so
each change takes effect without a restart (feedback/prompt.py)."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.table import Column

from launcher.cli.common import console, operator, out_console, refused, registry_redis, table

app = typer.Typer(help="Prompt versions: new, publish, list, serve (no restart needed).", no_args_is_help=True)


@app.command("publish")
def publish(
    file: Path = typer.Argument(..., help="A prompt spec (YAML: id, version, description, system, guidelines, examples); `chatbot prompt new` writes one to start from.", exists=True, dir_okay=False),
    serve: bool = typer.Option(False, "--serve", help="Also serve it to new conversations now."),
) -> None:
    """Validate a spec and publish it; a published version never changes."""
    from bot.prompt import prefix
    from feedback import prompt as prompts

    with refused(prompts.PromptSpecError):
        spec = prompts.read_file(file)
        try:
            prefix(spec)  # rendered once as the app renders it: a spec that cannot render is refused
        except Exception as exc:
            raise prompts.PromptSpecError(f"{file}: does not render ({type(exc).__name__}: {exc})") from None
    settings, r = registry_redis()
    if spec.id != settings.prompt_id:
        console.print(f"[yellow]note: {spec.ref} is for prompt {spec.id!r}; the app serves PROMPT_ID={settings.prompt_id!r}[/yellow]")
    with refused(prompts.PromptSpecError):
        new = prompts.publish(r, spec)
        if serve:
            prompts.serve(r, spec.id, spec.version)
    console.print(f"[green]{spec.ref} {'published' if new else 'was already published (same content)'}[/green]{'; served to new conversations' if serve else ''}")


@app.command("new")
def new(
    source: str = typer.Option(None, "--from", help="The published version to copy (default: the one served)."),
    out: Path = typer.Option(Path("."), "--dir", help="Where to write the file.", file_okay=False),
) -> None:
    """Write a copy of a published version, with the next version number, to edit and publish."""
    import yaml
    from packaging.version import Version

    from feedback import prompt as prompts

    settings, r = registry_redis()
    published = prompts.versions(r, settings.prompt_id)
    if not published:
        console.print(f"[red]No versions of {settings.prompt_id!r} published yet: `chatbot up` publishes the shipped ones when it starts.[/red]")
        raise typer.Exit(2)
    chosen = source or prompts.served(r, settings.prompt_id) or published[-1].version
    spec = next((s for s in published if s.version == chosen), None)
    if spec is None:
        console.print(f"[red]--from: {settings.prompt_id!r} has no published version {chosen!r}; published: {', '.join(s.version for s in published)}[/red]")
        raise typer.Exit(2)
    newest = Version(published[-1].version)
    version = f"{newest.major}.{newest.minor + 1}.0"  # after the newest published, whichever was copied
    data = spec.model_dump(mode="json", exclude=None if spec.starters else {"starters"})
    data.update(version=version, description=f"Copy of {spec.version}: say what this version changes.")
    path = out / f"{spec.id}-{version}.yaml"
    if path.exists():
        console.print(f"[red]{path} exists already: edit and publish it, or remove it first.[/red]")
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
    console.print(f"[green]wrote {path}[/green] ({spec.ref} as version {version}); edit it, then:")
    console.print(f"  chatbot prompt publish {path} --serve", markup=False, highlight=False)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line texts (the system prompt, examples) as YAML blocks, as the shipped files have them."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_BlockDumper.add_representer(str, _text)


@app.command("serve")
def serve(version: str = typer.Argument(..., help="A published version of PROMPT_ID.")) -> None:
    """Serve a published version to new conversations (threads keep the version they started with)."""
    from feedback import prompt as prompts

    settings, r = registry_redis()
    with refused(prompts.PromptSpecError, ValueError):
        spec = prompts.serve(r, settings.prompt_id, version)
    console.print(f"[green]{spec.ref} is served to new conversations[/green]")


@app.command("list")
def list_versions() -> None:
    """Published versions of PROMPT_ID, which is served, and each version's approval."""
    from feedback import prompt as prompts
    from feedback import report

    settings, r = registry_redis()
    specs = prompts.versions(r, settings.prompt_id)
    if not specs:
        console.print(f"No versions of {settings.prompt_id!r} published yet: the app publishes the shipped ones when it starts.")
        raise typer.Exit(0)
    served = prompts.served(r, settings.prompt_id)
    approval = {a.group: a for a in report.approval_by(report.rated_answers(r), "prompt_version")}  # groups: id@version
    listing = table(Column("version", no_wrap=True), "served", "description", "rated", "approval (95% CI)", title=f"Prompt {settings.prompt_id}")
    for spec in specs:
        a = approval.get(spec.ref)
        rated = f"{a.rate:.1%} ({a.low:.1%} - {a.high:.1%})" if a else ""
        listing.add_row(spec.version, "✓" if spec.version == served else "", spec.description, str(a.rated) if a else "0", rated)
    out_console().print(listing)


experiment_app = typer.Typer(help="Compare prompt versions by their users' ratings (always-valid statistics).", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("start")
def experiment_start(
    arms: list[str] = typer.Option(..., "--arm", help="A published version of PROMPT_ID; give two or more."),
    policy: str = typer.Option("fixed", help="fixed: an equal split; adaptive: more new conversations to the arm doing better (at least 10% each)."),
    min_rated: int = typer.Option(50, help="Rated answers per arm before the test looks."),
    max_rated: int = typer.Option(2000, help="Rated answers per arm at which it ends with 'no difference found'."),
    alpha: float = typer.Option(0.05, help="Error rate: the chance of naming a winner between equal arms, however often one looks."),
    user_cap: int = typer.Option(20, help="Rated answers per user and arm that count."),
    auto_serve: bool = typer.Option(False, "--auto-serve", help="Serve the winner as soon as there is one."),
) -> None:
    """Start an experiment: each new conversation gets an arm and keeps it."""
    from feedback import experiment as experiments
    from feedback import registry

    if policy not in ("fixed", "adaptive"):
        console.print("[red]--policy is fixed or adaptive[/red]")
        raise typer.Exit(2)
    settings, r = registry_redis()
    active = registry.active(r)
    with refused(experiments.ExperimentError):
        exp = experiments.start(
            r, settings.prompt_id, arms, active.id if active else registry.BASE, operator(),
            policy=policy, min_rated=min_rated, max_rated=max_rated, alpha=alpha, user_cap=user_cap, auto_serve=auto_serve,
        )  # fmt: skip
    console.print(f"[green]experiment {exp.id} started[/green]: {settings.prompt_id} {' vs '.join(exp.arms)}, {exp.policy} split, model {exp.model_version}")


@experiment_app.command("status")
def experiment_status(experiment_id: str = typer.Option(None, "--id", help="A past experiment (default: the running one).")) -> None:
    """Approval per arm and the decision so far (looking any number of times keeps the error rate)."""
    from feedback import experiment as experiments

    settings, r = registry_redis()
    with refused(experiments.ExperimentError):
        # A look (the operator's explicit command): it may decide, and a decision is audited.
        report = experiments.look(r, settings.prompt_id, "chatbot prompt experiment status", experiment_id)
    exp, d = report.experiment, report.decision
    listing = table(Column("arm", no_wrap=True), "rated", "liked", "approval", *(["share of new conversations"] if exp.policy == "adaptive" else []), title=f"Experiment {exp.id} ({exp.status})")
    for arm in exp.arms:
        c = report.counts[arm]
        share = [f"{exp.weights.get(arm, 1 / len(exp.arms)):.0%}"] if exp.policy == "adaptive" else []
        listing.add_row(arm, str(c.rated), str(c.liked), f"{c.approval:.1%}" if c.rated else "", *share)
    out = out_console()
    out.print(listing)
    out.print(experiments.verdict(exp, d))
    if report.other_model_answers:
        out.print(f"{report.other_model_answers} rated answers from a model other than {exp.model_version} (in service at the start) were not counted")
    if report.capped:
        out.print(f"{report.capped} rated answers over the per-user cap ({exp.user_cap} per arm) were not counted")


@experiment_app.command("stop")
def experiment_stop() -> None:
    """End the running experiment without a decision (the served version stays)."""
    from feedback import experiment as experiments

    settings, r = registry_redis()
    with refused(experiments.ExperimentError):
        exp = experiments.stop(r, settings.prompt_id, operator())
    console.print(f"experiment {exp.id} stopped")

"""`chatbot retrain`: one run of the retraining job (training/job.py).

The job's options are the fields of `training.config.RetrainConfig`, defined there once with their
help: this module turns each field into a Typer option (`--learning-rate`, `--full-rebuild`,
`--no-scrub-pii`, ...), so `chatbot retrain --help` lists them like every other command's, in
panels by step.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import typing
from typing import Any

import typer

from launcher.cli.common import console, registry_redis, settings_or_exit
from training.config import DEMO_RECIPE, RetrainConfig


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _choices(name: str, values: list[str]) -> type[enum.Enum]:
    choices: type[enum.Enum] = enum.Enum(name, {v: v for v in values}, type=str)  # type: ignore[misc]  # a functional Enum
    return choices


# The help's panels: each starts at its field (the sections of training.config.RetrainConfig).
PANELS = {"full_rebuild": "Dataset options", "method": "Training options", "margin": "Promotion gate options"}


def _config_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per RetrainConfig field; None = not given (the default, or the demo
    recipe's with --demo, applies). A yes/no field is one flag, the one that changes its default
    (`--full-rebuild`, `--no-scrub-pii`): both forms only where the default is "auto" (None)."""
    hints = typing.get_type_hints(RetrainConfig)
    params = []
    panel = ""
    for f in dataclasses.fields(RetrainConfig):
        panel = PANELS.get(f.name, panel)
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is typing.Literal:  # Typer offers choices for an Enum
            annotation: Any = _choices(f.name, [str(a) for a in typing.get_args(hint)])
        elif hint is bool or args == [bool]:
            annotation = bool
        else:
            annotation = args[0] if args else hint
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata.get("help", "")
        if annotation is not bool:
            option = typer.Option(None, option_name(f.name), help=f"{help_text} [default: {default}]", show_default=False, rich_help_panel=panel)
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation | None))
            continue
        # A flag sets the value its default is not: `--full-rebuild`; `--no-scrub-pii`, a parameter
        # of its own that retrain_config turns into scrub_pii=False; both where the default is None
        # ("auto"). One form per option: no column of `--no-...` forms in the help.
        for name, on in ((f.name, True), ("no_" + f.name, False)):
            if default is None or default != on:
                text = help_text if on else f"Turn off: {help_text[0].lower()}{help_text[1:]}"
                option = typer.Option(None, option_name(name), help=text, show_default=False, rich_help_panel=panel)
                params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=bool | None))
    return params


def retrain_config(given: dict[str, Any], demo: bool = False) -> RetrainConfig:
    """The job's options: the given ones over the defaults (DEMO_RECIPE's with demo).
    ValueError for an invalid combination (RetrainConfig's checks)."""
    fields = {f.name for f in dataclasses.fields(RetrainConfig)}
    chosen = {k: v.value if isinstance(v, enum.Enum) else v for k, v in given.items() if v is not None and k in fields}
    chosen |= {k[3:]: not v for k, v in given.items() if v is not None and k not in fields and k.startswith("no_") and k[3:] in fields}
    return RetrainConfig(**{**(DEMO_RECIPE if demo else {}), **chosen})


def parse(argv: list[str]) -> tuple[bool, bool, RetrainConfig]:
    """(--now, --demo, the job's options) from `chatbot retrain` arguments, parsed by the command
    itself. typer.BadParameter (a click UsageError) for a bad value, ValueError for invalid options."""
    app = typer.Typer()
    app.command()(retrain)
    params = dict(typer.main.get_command(app).make_context("retrain", list(argv)).params)
    now, demo = params.pop("now"), params.pop("demo")
    return now, demo, retrain_config(params, demo)


def retrain(
    now: bool = typer.Option(False, "--now", help="Run even if fewer than --min-new-ratings ratings came in."),
    demo: bool = typer.Option(
        False, "--demo", help="Retrain the demo model of `up --demo` on the demo's own data (DATA_DIR/demo), from its recipe; options given still win."
    ),
    **options: Any,
) -> None:
    """Run the retraining job: collect -> build -> train -> evaluate -> promote."""
    import redis

    from training import job

    try:
        config = retrain_config(options, demo)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if now:
        config = dataclasses.replace(config, min_new_ratings=0)
    if demo:  # the model `up --demo` serves, whatever LLM_MODEL says
        demo_model = settings_or_exit().layout.demo_model
        if not (demo_model / "config.json").is_file():
            console.print(f"[red]--demo: no demo model in {demo_model}: build it with `chatbot demo-model` (or `chatbot up --demo`).[/red]")
            raise typer.Exit(2)
    # With --demo: the demo's data directory and Redis (DATA_DIR/demo), never the real product's.
    settings, r = registry_redis(demo=demo)
    prepare_model = None
    if settings.llm_model is None:  # the default model: converted by `chatbot up`, or by the run that trains
        from launcher import default_model

        prepare_model = functools.partial(default_model.ensure, settings.default_model_dir)
    try:
        outcome = job.run(r, settings, config, prepare_model=prepare_model)
    except redis.RedisError as exc:
        console.print(f"[red]Redis is unreachable ({exc}): nothing was changed.[/red]")
        raise typer.Exit(1) from None
    colour = {"promoted": "green", "rejected": "yellow", "skipped": "blue", "failed": "red"}[outcome.status]
    console.print(f"[{colour}]{outcome.status}[/{colour}]: {outcome.reason}")
    if outcome.version_id:
        console.print(f"model version {outcome.version_id}, dataset {outcome.dataset_version}")
    raise typer.Exit(1 if outcome.status == "failed" else 0)


_own = [p for p in inspect.signature(retrain).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
retrain.__signature__ = inspect.Signature([*_own, *_config_parameters()], return_annotation=None)  # type: ignore[attr-defined]

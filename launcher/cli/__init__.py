"""`chatbot`: the one command line, a module per command. Heavy modules are imported inside the
commands so that --help is fast.

    up          launcher/cli/up.py          Redis, the model server, the web UI, the retraining schedule
    retrain     launcher/cli/retrain.py     one retraining run (options: training.config.RetrainConfig)
    simulate    launcher/cli/simulate.py    simulated users rate through the running app
    report      launcher/cli/report.py      approval per model and prompt version
    model       launcher/cli/model.py       list, promote, rollback
    prompt      launcher/cli/prompt.py      publish, list, serve prompt versions
    dataset     launcher/cli/dataset.py     prune dataset versions
    spool       launcher/cli/spool.py       writes kept while Redis was down
    stats       launcher/cli/stats.py       rebuild the console's approval counts and review queue
    migrate     launcher/cli/migrate.py     rewrite stored data in a newer layout
    demo-model  launcher/cli/demo_model.py  build the offline demo model
"""

from __future__ import annotations

from typing import Any

import typer
import typer.core

from launcher.cli import dataset, demo_model, migrate, model, prompt, report, retrain, simulate, spool, stats, up

_type_shown = typer.core.TyperOption.display_type_rich


def _no_type_for_flags(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """A flag takes no value: Typer 0.29's help shows `<bool>` after each (`--help <bool>`)."""
    return None if self.is_bool_flag else _type_shown(self, ctx)


typer.core.TyperOption.display_type_rich = _no_type_for_flags  # type: ignore[method-assign]

app = typer.Typer(help="A chat assistant that gets better from its users' ratings.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """Settings come from the environment and .env (see .env.example)."""
    from feedback.settings import unknown_variables
    from launcher.cli.common import console

    for warning in unknown_variables():  # a misspelled setting would otherwise be ignored silently
        console.print(f"[yellow]warning: {warning}[/yellow]")


app.command()(up.up)
app.command()(retrain.retrain)
app.command()(report.report)
app.command()(simulate.simulate)
app.command()(spool.spool)
app.command("demo-model")(demo_model.demo_model)
app.add_typer(model.app, name="model")
app.add_typer(dataset.app, name="dataset")
app.add_typer(prompt.app, name="prompt")
app.add_typer(stats.app, name="stats")
app.add_typer(migrate.app, name="migrate")

"""`chatbot dataset`: dataset versions on disk."""

from __future__ import annotations

import typer
from rich.console import Console

from launcher.cli.common import refused, registry_redis

app = typer.Typer(help="Dataset versions on disk (DATA_DIR/datasets).", no_args_is_help=True)


@app.command("prune")
def dataset_prune(keep: int = typer.Option(1, min=1, help="Versions to keep in all, the one in service first, then the newest.")) -> None:
    """Delete old dataset versions and the shards no kept version uses (their cards stay).

    To erase what users deleted or unrated since, first rebuild from the current ratings:
    `chatbot retrain --now --full-rebuild`, then `chatbot dataset prune --keep 1`."""
    from training import retention

    settings, r = registry_redis()
    with refused(retention.RetentionError, code=1):
        pruned = retention.prune(r, settings.layout.datasets, keep, settings.retrain_lock_ttl_s)
    Console().print(
        f"kept {', '.join(pruned.kept) or 'nothing'}; removed {len(pruned.removed)} version(s) and "
        f"{len(pruned.shards_removed)} shard(s), {pruned.bytes_freed / 1e6:.1f} MB"
    )

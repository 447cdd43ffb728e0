"""The operator console: server-rendered pages under /admin on the chat app's own HTTP server.

    /admin                      overview: what is in service, approval over time, runs, attention
    /admin/review               thumbs-down queue with filters; mark reviewed; each conversation
    /admin/models               the registry; promote (confirmed) and roll back
    /admin/runs                 retraining runs, "run now", live progress of the current run
    /admin/datasets             dataset versions with their cards; JSONL and parquet downloads
    /admin/experiments          prompt experiments: arms, intervals, decision; start and stop

Only users in ADMIN_USERS get in (access.py); every change (and every download and experiment
look) is a POST form with a CSRF token, recorded in the audit stream (feedback/audit.py) and shown
on the page it concerns; a GET changes nothing. Every parameter has a schema (schema.py). docs/console.md
describes the pages and the security model.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI

from bot.console.access import Refused
from bot.console.pages import Console
from feedback import audit
from feedback.connection import connect_sync
from feedback.settings import Settings
from feedback.store import OUTAGE

log = logging.getLogger(__name__)


def install(app: FastAPI, settings: Settings, r: redis.Redis | None = None) -> Console:
    """Put the console's routes in front of Chainlit's (its catch-all would serve them the chat).

    `r`: a blocking Redis client (decoded responses); by default one for REDIS_URL. Its calls run
    in worker threads, never on the event loop."""
    console = Console(app, settings, r if r is not None else connect_sync(settings.effective_redis_url, cluster=settings.redis_cluster))
    try:
        audit.reindex(console.r)  # entries written before the audit's indexes: once, then only new ones
    except OUTAGE as exc:
        log.warning("audit entries not indexed (Redis unreachable): %s; the next start does it", exc)
    app.add_exception_handler(Refused, console.refused)
    app.router.routes[0:0] = console.routes()
    return console


__all__ = ["Console", "install"]

"""The console's pages and actions: each reads only aggregates and indexes (the approval counts,
the review queue, the registry, the runs stream, the audit stream, dataset cards), never every
answer, so a page costs the same with a million answers as with ten.

Every handler first resolves the operator (access.Gate, a dependency: login redirect or 403
before anything else); every POST also checks the form's CSRF token, then its fields against
bot/console/schema.py, records what it did in the audit stream, and answers 303 back to the page
that shows it. A GET changes nothing: the experiments page shows the last look's decision (the
looks are `chatbot up`'s schedule and the "Look now" POST), downloads are POSTs, and the one
record a GET makes is the operator's own opening of another user's conversation (auditable_view).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import redis
from fastapi import Depends, FastAPI, Form, Query, Request
from fastapi import Path as FastPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from bot.console import charts, datasets, schema
from bot.console.access import FORM_LIMITS, MAX_FORM_BYTES, Admin, Gate, Refused, operator, operator_form
from feedback import audit, keys, progress, registry, review, stats
from feedback import experiment as experiments
from feedback import prompt as prompts
from feedback import run as runs
from feedback.rating import DOWN_REASONS, reason_label
from feedback.report import wilson
from feedback.sequential import Decision
from feedback.serving import ModelServer, WarmUpError
from feedback.settings import Settings
from feedback.spool import Spool
from feedback.store import OUTAGE

HERE = Path(__file__).resolve().parent
NAV = (
    ("/admin", "Overview"), ("/admin/review", "Review"), ("/admin/models", "Models"),
    ("/admin/runs", "Runs"), ("/admin/datasets", "Datasets"), ("/admin/experiments", "Experiments"),
)  # fmt: skip
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
HEADERS = {
    # Nothing inline, nothing from elsewhere: the charts are SVG elements styled by console.css.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
REVIEW_PAGE = 25
RUNS_SHOWN = 50
AUDIT_SHOWN = 20
EXPERIMENTS_SHOWN = 5  # past experiments counted on the experiments page (each: its own conversations' answers)
RECENT_DECISION_S = 7 * 24 * 3600  # a decided experiment needs attention this long
REVIEW_FILTERS = ("reason", "prompt", "model", "user", "since", "until", "status", "page")
STATUSES = {"open": False, "reviewed": True, "all": None}

P = ParamSpec("P")
T = TypeVar("T")


# --- formatting (Jinja filters) -------------------------------------------------------------------


def when(ts: object) -> str:
    """An epoch time (number or numeric string) as UTC; "–" when there is none."""
    try:
        value = float(ts)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    if value <= 0:
        return "–"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: object) -> str:
    try:
        s = float(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1000  # type: ignore[assignment]
    return f"{n} B"


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_short(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)[:200]
    return str(value)[:200]


def flat_metrics(data: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """A metrics or decision dict as (key, value) lines, one level of nesting flattened."""
    out: list[tuple[str, str]] = []
    for key, value in (data or {}).items():
        if isinstance(value, dict) and len(value) <= 12:
            out += [(f"{key}.{k}", _short(v)) for k, v in value.items()]
        else:
            out.append((str(key), _short(value)))
    return out


def code(text: object) -> Markup:
    """A text of the product with its `command` spans as code (the texts are written for the
    terminal too, where the backticks stay): escaped first, so nothing else becomes markup."""
    parts = str(escape(text)).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: left as it is
        return Markup("`".join(parts))
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def verdict(rep: experiments.Report) -> str:
    return experiments.verdict(rep.experiment, rep.decision)


def last_decision(exp: experiments.Experiment) -> Decision | None:
    """The decision of an experiment's last look, as stored (no counting)."""
    if not exp.decision:
        return None
    try:
        return Decision(**{**exp.decision, "interval": tuple(exp.decision["interval"])})
    except (KeyError, TypeError):
        return None


# --- input ------------------------------------------------------------------------------------------


def review_args(q: schema.ReviewQuery) -> dict[str, Any]:
    """The validated review filters as review.queue arguments, plus the page number."""
    since = datetime(q.since.year, q.since.month, q.since.day, tzinfo=UTC).timestamp() if q.since else None
    until = datetime(q.until.year, q.until.month, q.until.day, tzinfo=UTC).timestamp() + 86400 - 1e-6 if q.until else None  # the whole day
    return {
        "reason": q.reason, "prompt_version": q.prompt, "model_version": q.model, "user": q.user,
        "since": since, "until": until, "reviewed": STATUSES[q.status or "open"], "page": q.page or 1,
    }  # fmt: skip


def review_query(params: Mapping[str, str], **changes: str | int) -> str:
    """The review page's query string with only the known filters (none empty), some changed."""
    kept = {k: str(params.get(k) or "") for k in REVIEW_FILTERS}
    kept.update({k: str(v) for k, v in changes.items()})
    return urllib.parse.urlencode({k: v for k, v in kept.items() if v})


def _explain(exc: RequestValidationError) -> str:
    """A validation error in words: each refused parameter, what it must be, what was sent."""
    parts = []
    for error in exc.errors()[:5]:
        loc = [str(x) for x in error.get("loc", ()) if x not in ("query", "path", "body")]
        name = loc[0] if loc else "the request"
        message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "is not a parameter of this page"
        elif error.get("type") == "missing":
            message = "is required"
        sent = error.get("input")
        shown = f" (not {sent[:40]!r})" if isinstance(sent, str) and error.get("type") not in ("missing",) else ""
        parts.append(f"{name}: {message}{shown}")
    return "Invalid input: " + "; ".join(parts) + "."


class ConsoleRoute(APIRoute):
    """A console route: a parameter outside its schema (bot/console/schema.py) is a 400 with the
    console's error page, not FastAPI's 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise Refused(400, _explain(exc), admin=getattr(request.state, "console_admin", None)) from None

        return checked


def auditable_view(request: Request) -> bool:
    """Whether this GET of a conversation is the operator opening it: a top-level navigation from
    the console (a link click: Sec-Fetch-Site same-origin) or typed or bookmarked (none). An
    <img>, <iframe>, prefetch or fetch from any page, and a link followed from another site, are
    not: they are answered with a page that offers the link and record nothing. A request without
    fetch metadata (every browser the app supports sends it) is a script with the operator's
    token: its read is recorded."""
    site = request.headers.get("sec-fetch-site")
    if site is None:
        return True
    return site in ("same-origin", "none") and request.headers.get("sec-fetch-dest") == "document" and request.headers.get("sec-fetch-mode") == "navigate"


def back_link(request: Request, allowed: frozenset[str] = frozenset()) -> str:
    """Where an error page's "Back" goes: the Referer's path and query when it is a console page
    of this very origin (the request's scheme and Host, or one of ALLOWED_ORIGINS: the public
    origin behind a proxy that rewrites Host), else the overview."""
    parts = urllib.parse.urlsplit(request.headers.get("referer", ""))
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path
    if origin not in {f"{request.url.scheme}://{request.headers.get('host', '')}", *allowed} or not (path == "/admin" or path.startswith("/admin/")):
        return "/admin"
    return path + (f"?{parts.query}" if parts.query else "")


def _progress(raw: Mapping[str, str] | None) -> dict[str, Any] | None:
    """The job's progress hash with numbers as numbers (feedback/progress.py)."""
    if not raw:
        return None

    def num(name: str, kind: Callable[[str], Any]) -> Any:
        try:
            return kind(raw[name]) if raw.get(name) else None
        except ValueError:
            return None

    status = raw.get("status", "")
    return {
        "run": raw.get("run", ""), "step": raw.get("step", ""), "status": status, "active": status == "running",
        "started": num("started", float), "updated": num("updated", float), "train_step": num("train_step", int),
        "train_steps": num("train_steps", int), "loss": num("loss", float),
    }  # fmt: skip


def _latest_key(latest: runs.RetrainRun | None) -> str:
    """What the runs page compares to see the list change (the newest run's start)."""
    return f"{latest.started:.3f}" if latest else ""


# --- the console ----------------------------------------------------------------------------------


class Console:
    def __init__(self, app: FastAPI, settings: Settings, r: redis.Redis) -> None:
        self.settings = settings
        self.r = r
        self.gate = Gate(app, settings)
        self.spool = Spool(settings.spool_path)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True, default_for_string=True), auto_reload=False)
        self.env.filters.update(
            when=when, duration=duration, size=size, flat_metrics=flat_metrics, verdict=verdict, wilson=wilson,
            model_name=registry.display_name, where=self.where, reason=reason_label, code=code,
        )  # fmt: skip

    # -- plumbing

    def where(self, path: object) -> str:
        """A file or folder of the product as the console names it: under DATA_DIR as the operator
        configured it ("data/spool/..." by default), never the server's absolute path."""
        data = self.settings.data_dir
        try:
            inside = Path(str(path)).resolve().relative_to(data.resolve())
        except ValueError:
            return Path(str(path)).name  # not under DATA_DIR: its name only
        shown = "DATA_DIR" if data.is_absolute() else str(data)
        return f"{shown}/{inside.as_posix()}".removesuffix("/.")

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking Redis or disk work off the event loop; 503 while Redis is unreachable."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except OUTAGE:
            raise Refused(503, "Storage (Redis) is unreachable right now: try again in a moment.") from None

    def page(self, template: str, who: Admin, current: str, title: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(admin=who, nav=NAV, current=current, title=title, **context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    async def refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        if exc.location:
            return RedirectResponse(exc.location, status_code=303, headers=HEADERS)
        if request.url.path.endswith(".json") or "application/json" in request.headers.get("accept", "").split(",")[0]:
            return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=HEADERS)
        if exc.admin is not None:
            back = back_link(request, self.settings.origins)
            current = next((path for path, _ in reversed(NAV) if request.url.path.startswith(path)), "/admin")
            return self.page("message.html", exc.admin, current, f"{exc.status}", status=exc.status, message=exc.message, kind="error", back=back)
        html = self.env.get_template("refused.html").render(status=exc.status, message=exc.message)
        return HTMLResponse(html, status_code=exc.status, headers=HEADERS)

    def done(self, location: str) -> RedirectResponse:
        """After a POST: back to the page that shows what changed (303: the browser GETs it)."""
        return RedirectResponse(location, status_code=303, headers=HEADERS)

    def schedule(self, last: runs.RetrainRun | None, requested: dict[str, Any] | None) -> str:
        """When the schedule of `chatbot up` runs next: the time it wrote, else RETRAIN_INTERVAL_S
        after the last run ended."""
        interval = self.settings.retrain_interval_s
        if requested:
            return f"as soon as `chatbot up` ticks: a run was requested by {requested.get('by', '?')} {when(requested.get('at'))}"
        if interval <= 0:
            return "never: the schedule is off (RETRAIN_INTERVAL_S=0)"
        scheduled = progress.next_run(self.r)  # what a running `chatbot up` said: runs asked for never move it
        if scheduled is not None:
            return f"{when(scheduled)}, when at least {self.settings.min_new_ratings} new ratings came in"
        if last is None:
            return f"within {duration(interval)} of `chatbot up` starting (no run recorded yet)"
        at = last.started + last.seconds + interval
        late = " (due: `chatbot up` starts it at its next tick, if it is running)" if at < time.time() else ""
        return f"{when(at)}{late}, when at least {self.settings.min_new_ratings} new ratings came in"

    def _requested(self) -> dict[str, Any] | None:
        raw = self.r.get(keys.retrain_request())
        if raw is None:
            return None
        try:
            data = json.loads(str(raw))
        except ValueError:
            data = None
        return data if isinstance(data, dict) else {}

    def _known_experiments(self, also: str | None = None) -> list[str]:
        """Experiment ids of this app's prompt, newest first (the prompt's experiment index), and `also`."""
        ids: list[str] = []
        for candidate in (also, *experiments.history(self.r, self.settings.prompt_id, count=50)):
            if candidate and keys.valid_id(candidate) and candidate not in ids:
                ids.append(str(candidate))
        return ids

    def _ended(self, ids: list[str], limit: int) -> list[experiments.Report]:
        """Reports of up to `limit` ended experiments of this app's prompt (counted, nothing
        written)."""
        out: list[experiments.Report] = []
        for exp_id in ids:
            if len(out) >= limit:
                break
            exp = experiments.load(self.r, exp_id)
            if exp is None or exp.prompt_id != self.settings.prompt_id or exp.status == "running":
                continue
            out.append(experiments.read(self.r, exp))
        return out

    # -- pages (sync: they run in a worker thread)

    def overview_data(self) -> dict[str, Any]:
        r, s = self.r, self.settings
        chart_list = []
        volume: stats.Series | None = None
        groupings: tuple[tuple[stats.By, str], ...] = (("model_version", "model version"), ("prompt_version", "prompt version"))
        for by, label in groupings:
            series = stats.approval(r, by)
            volume = volume or series
            colours = {g: charts.PALETTE[i % len(charts.PALETTE)] for i, g in enumerate(series.groups)}
            chart_list.append({
                "by": by, "label": label, "bucket": charts.describe_bucket(series.bucket_s),
                "svg": charts.approval_chart(series.groups, series.bucket_s, f"Approval per {label}"),
                "totals": [(g, p, colours[g]) for g, p in series.totals.items()],
            })  # fmt: skip
        assert volume is not None
        last = next(iter(runs.recent(r, 1)), None)
        requested = self._requested()
        active = registry.active(r)
        attention = []
        if last is not None and last.status == "failed":
            attention.append(f"The last retraining run failed ({when(last.started)}): {last.reason}")
        dead = self.dead_letters()
        if dead:
            attention.append(
                f"{dead} write(s) from the chat could not be applied to Redis and wait in {self.where(self.spool.dead_path)}: "
                "fix the cause (see each line's error), then `chatbot spool --requeue`."
            )
        now = time.time()
        for exp_id in self._known_experiments()[:EXPERIMENTS_SHOWN]:
            # The stored outcome of the last look (`chatbot up` looks every EXPERIMENT_LOOK_S, an
            # operator with "Look now"): the overview counts no ratings itself.
            exp = experiments.load(r, exp_id)
            decision = last_decision(exp) if exp is not None else None
            if exp is not None and decision is not None and exp.status == "decided" and now - (exp.ended_at or 0) < RECENT_DECISION_S:
                served = " (served automatically)" if exp.auto_serve and decision.winner else ""
                attention.append(f"Prompt experiment {exp.id} reached a decision {when(exp.ended_at)}: {experiments.verdict(exp, decision)}{served}")
        prog = _progress(progress.read(r))
        if prog and prog["active"] and prog["updated"] and now - prog["updated"] > max(600, s.retrain_lock_ttl_s):
            attention.append(f"Retraining run {prog['run']} has reported nothing since {when(prog['updated'])}: it may have crashed.")
        return {
            "prompt_id": s.prompt_id, "served_prompt": prompts.served(r, s.prompt_id), "active": active, "base_model": s.effective_llm_model,
            "last_run": last, "next_run": self.schedule(last, requested), "charts": chart_list, "stats_built": stats.built(r),
            "volume_svg": charts.volume_chart(volume.volume, volume.bucket_s, "Rated answers per bucket"),
            "volume_bucket": charts.describe_bucket(volume.bucket_s), "volume_total": sum(p.n for p in volume.volume),
            "volume_liked": sum(p.liked for p in volume.volume), "review_queue": review.size(r),
            "attention": attention, "audit": audit.recent(r, count=AUDIT_SHOWN),
        }  # fmt: skip

    def dead_letters(self) -> int:
        """Lines in the spool's dead-letter file (feedback/spool.py), counted without parsing."""
        try:
            with open(self.spool.dead_path, "rb") as f:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
        except FileNotFoundError:
            return 0

    def review_data(self, filters: dict[str, Any]) -> dict[str, Any]:
        r, s = self.r, self.settings
        query = {k: v for k, v in filters.items() if k != "page"}
        offset = (filters["page"] - 1) * REVIEW_PAGE
        items = review.queue(r, **query, offset=offset, limit=REVIEW_PAGE + 1)
        return {
            "items": items[:REVIEW_PAGE], "has_next": len(items) > REVIEW_PAGE,
            "reasons": [(r_.value, label) for r_, label in DOWN_REASONS.items()],
            "prompt_versions": [p.version for p in prompts.versions(r, s.prompt_id)],
            "model_versions": [registry.BASE, *(m.id for m in registry.versions(r))],
            "audit": audit.recent(r, target="review:", count=AUDIT_SHOWN),
        }  # fmt: skip

    def conversation_data(self, who: Admin, thread_id: str, audited: bool) -> dict[str, Any] | None:
        """A conversation with its views; `audited`: this is the operator opening it (a view of
        another user's conversation is recorded first). Otherwise nothing is written and only
        the owner is read, for the page that offers the link."""
        r = self.r
        turns = review.conversation(r, thread_id)
        if not turns:
            return None
        owner = str(r.hget(keys.thread(thread_id), "userIdentifier") or turns[0].exchange.user)
        if not audited:
            return {"turns": [], "owner": owner, "thread_id": thread_id, "audit": [], "confirm": True}
        if owner != who.name:
            audit.record(r, who.name, "view_conversation", f"thread:{thread_id}", f"owner {owner}")
        return {
            "turns": turns,
            "owner": owner,
            "thread_id": thread_id,
            "audit": audit.recent(r, target=f"thread:{thread_id}", count=AUDIT_SHOWN),
            "confirm": False,
        }

    def models_data(self) -> dict[str, Any]:
        r = self.r
        return {
            "models": list(reversed(registry.versions(r))), "active": registry.active(r), "base_model": self.settings.effective_llm_model,
            "audit": audit.recent(r, target="model:", count=AUDIT_SHOWN),
        }

    def runs_data(self) -> dict[str, Any]:
        r = self.r
        recent = runs.recent(r, RUNS_SHOWN)
        requested = self._requested()
        interval = self.settings.retrain_interval_s
        schedule = (
            f"`chatbot up` starts `chatbot retrain` every {duration(interval)}; a run trains when at least {self.settings.min_new_ratings} new ratings came in."
            if interval > 0 else "No scheduled runs (RETRAIN_INTERVAL_S=0): a run starts when asked for here or by `chatbot retrain --now`."
        )  # fmt: skip
        return {
            "runs": recent, "progress": _progress(progress.read(r)), "requested": requested, "next_run": self.schedule(recent[0] if recent else None, requested),
            "schedule": schedule, "latest_started": _latest_key(recent[0] if recent else None), "audit": audit.recent(r, target="run:", count=AUDIT_SHOWN),
        }  # fmt: skip

    def progress_data(self) -> dict[str, Any]:
        r = self.r
        latest = next(iter(runs.recent(r, 1)), None)
        prog = _progress(progress.read(r))
        return {"progress": prog, "latest_started": _latest_key(latest), "requested": self._requested()}

    def datasets_data(self) -> dict[str, Any]:
        active = registry.active(self.r)
        return {
            "datasets": datasets.listing(self.settings.layout.datasets), "splits": datasets.SPLITS, "root": self.settings.layout.datasets,
            "in_use": active.dataset_version if active else None, "audit": audit.recent(self.r, target="dataset:", count=AUDIT_SHOWN),
        }

    def experiments_data(self, also: str | None) -> dict[str, Any]:
        """The running experiment counted now, with the decision of its last look (stored: this
        page looks at nothing and writes nothing), and earlier ones."""
        r, s = self.r, self.settings
        current = experiments.running(r, s.prompt_id)
        running = experiments.read(r, current) if current is not None else None
        past = self._ended(self._known_experiments(also), EXPERIMENTS_SHOWN)
        return {
            "prompt_id": s.prompt_id, "served": prompts.served(r, s.prompt_id), "running": running, "past": past,
            "published": prompts.versions(r, s.prompt_id), "audit": audit.recent(r, target="experiment:", count=AUDIT_SHOWN),
            "look_s": s.experiment_look_s,
        }  # fmt: skip

    # -- route handlers: `who` is the gate's dependency (login, operator; a POST's CSRF token), which
    # runs before the parameters are validated against bot/console/schema.py.

    async def overview(self, who: Admin = Depends(operator)) -> HTMLResponse:
        return self.page("overview.html", who, "/admin", "Overview", **await self.call(self.overview_data))

    async def review_page(self, request: Request, q: Annotated[schema.ReviewQuery, Query()], who: Admin = Depends(operator)) -> HTMLResponse:
        params = {k: v for k, v in request.query_params.items() if k in REVIEW_FILTERS}
        filters = review_args(q)
        data = await self.call(self.review_data, filters)
        page_no = filters["page"]
        return self.page(
            "review.html", who, "/admin/review", "Review: thumbs down", **data, params=params, page=page_no, query=review_query(params),
            prev_query=review_query(params, page=page_no - 1) if page_no > 1 else None,
            next_query=review_query(params, page=page_no + 1) if data["has_next"] and page_no < schema.MAX_REVIEW_PAGE else None,
        )  # fmt: skip

    async def mark_reviewed(self, form: Annotated[schema.MarkForm, Form()], who: Admin = Depends(operator_form)) -> Response:
        answers = [a for a in (keys.parse_review_member(i) for i in form.id) if a is not None]
        location = "/admin/review?" + review_query(dict(urllib.parse.parse_qsl(form.back)))
        if answers:

            def mark() -> None:
                marked = review.mark_reviewed(self.r, answers, who.name)
                audit.record(self.r, who.name, "mark_reviewed", "review:queue", f"{marked} newly marked of {len(form.id)}: {' '.join(form.id[:50])}")

            await self.call(mark)
        return self.done(location.rstrip("?"))

    async def conversation(self, request: Request, thread_id: Annotated[schema.ThreadId, FastPath()], who: Admin = Depends(operator)) -> HTMLResponse:
        data = await self.call(self.conversation_data, who, thread_id, auditable_view(request))
        if data is None:
            raise Refused(404, f"No answers in thread {thread_id}.", admin=who)
        return self.page("conversation.html", who, "/admin/review", f"Conversation {thread_id}", **data)

    async def models(self, who: Admin = Depends(operator)) -> HTMLResponse:
        return self.page("models.html", who, "/admin/models", "Models", **await self.call(self.models_data))

    async def promote(self, form: Annotated[schema.PromoteForm, Form()], who: Admin = Depends(operator_form)) -> Response:
        version = form.version
        if not form.confirm:
            raise Refused(400, f"Tick the box to confirm serving {version}.", admin=who)
        force = bool(form.force)

        def promote() -> None:
            try:  # recorded in the audit log by the registry, as the CLI's promote
                registry.promote(self.r, version, ModelServer.of(self.settings), force=force, who=who.name)
            except registry.RegistryError as exc:
                raise Refused(409, str(exc).replace("use --force", "tick 'although the gate rejected it'"), admin=who) from None
            except WarmUpError as exc:
                raise Refused(502, f"{version} was not put in service: {exc}", admin=who) from None

        await self.call(promote)
        return self.done("/admin/models")

    async def rollback(self, form: Annotated[schema.ConfirmForm, Form()], who: Admin = Depends(operator_form)) -> Response:
        if not form.confirm:
            raise Refused(400, "Tick the box to confirm the rollback.", admin=who)

        def rollback() -> None:
            try:  # recorded in the audit log by the registry, as the CLI's rollback
                registry.rollback(self.r, ModelServer.of(self.settings), who=who.name)
            except registry.RegistryError as exc:
                raise Refused(409, str(exc), admin=who) from None
            except WarmUpError as exc:
                raise Refused(502, f"Nothing was rolled back: {exc}", admin=who) from None

        await self.call(rollback)
        return self.done("/admin/models")

    async def runs(self, who: Admin = Depends(operator)) -> HTMLResponse:
        return self.page("runs.html", who, "/admin/runs", "Retraining runs", **await self.call(self.runs_data))

    async def run_now(self, form: Annotated[schema.CsrfForm, Form()], who: Admin = Depends(operator_form)) -> Response:
        def ask() -> None:
            if progress.request_run(self.r, who.name):
                audit.record(self.r, who.name, "run_now", "run:request", "retraining requested: `chatbot up` starts it at its next tick")

        await self.call(ask)
        return self.done("/admin/runs")

    async def progress_json(self, who: Admin = Depends(operator)) -> JSONResponse:
        return JSONResponse(await self.call(self.progress_data), headers=HEADERS)

    async def datasets(self, who: Admin = Depends(operator)) -> HTMLResponse:
        return self.page("datasets.html", who, "/admin/datasets", "Datasets", **await self.call(self.datasets_data))

    async def _split(self, who: Admin, version: str, split: str) -> Path:
        """The parquet file of a listed version's split: 404 when absent."""
        path = await self.call(datasets.split_file, self.settings.layout.datasets, version, split)
        if path is None:
            if await self.call(datasets.is_empty, self.settings.layout.datasets, version, split):
                raise Refused(404, f"Dataset version {version} has no rows in {split} ({'no pairs yet' if split.startswith('dpo') else 'none in this split'}): nothing to download.", admin=who)
            raise Refused(404, f"No {split} file for dataset version {version} (unknown version, or not materialized yet).", admin=who)
        return path

    async def download_jsonl(
        self, version: Annotated[schema.DatasetVersion, FastPath()], split: Annotated[schema.Split, FastPath()],
        form: Annotated[schema.CsrfForm, Form()], who: Admin = Depends(operator_form),
    ) -> StreamingResponse:  # fmt: skip
        path = await self._split(who, version, split)
        try:
            rows: Iterator[bytes] = await self.call(datasets.jsonl_rows, path, split)
        except datasets.NoPyarrow as exc:
            raise Refused(501, f"{exc}.", admin=who) from None
        await self.call(audit.record, self.r, who.name, "download_dataset", f"dataset:{version}", f"{split}.jsonl")
        headers = {**HEADERS, "Content-Disposition": f'attachment; filename="{version}-{split}.jsonl"'}
        return StreamingResponse(rows, media_type="application/x-ndjson", headers=headers)

    async def download_parquet(
        self, version: Annotated[schema.DatasetVersion, FastPath()], split: Annotated[schema.Split, FastPath()],
        form: Annotated[schema.CsrfForm, Form()], who: Admin = Depends(operator_form),
    ) -> FileResponse:  # fmt: skip
        path = await self._split(who, version, split)
        await self.call(audit.record, self.r, who.name, "download_dataset", f"dataset:{version}", f"{split}.parquet")
        return FileResponse(path, media_type="application/vnd.apache.parquet", filename=f"{version}-{split}.parquet", headers=HEADERS)

    async def download_by_get(self, who: Admin = Depends(operator)) -> Response:
        raise Refused(405, "A dataset download is a form on the datasets page (a POST with its security token): download it from there.", admin=who)

    async def experiments(self, q: Annotated[schema.ExperimentsQuery, Query()], who: Admin = Depends(operator)) -> HTMLResponse:
        return self.page("experiments.html", who, "/admin/experiments", "Prompt experiments", **await self.call(self.experiments_data, q.id))

    async def start_experiment(self, form: Annotated[schema.StartForm, Form()], who: Admin = Depends(operator_form)) -> Response:
        plan = {
            "policy": form.policy, "min_rated": form.min_rated, "max_rated": form.max_rated, "alpha": form.alpha,
            "user_cap": form.user_cap, "auto_serve": bool(form.auto_serve),
        }  # fmt: skip

        def start() -> None:
            active = registry.active(self.r)
            try:  # recorded in the audit log there, as the CLI's starts are
                experiments.start(self.r, self.settings.prompt_id, form.arm, active.id if active else registry.BASE, who.name, **plan)
            except experiments.ExperimentError as exc:
                raise Refused(409, str(exc), admin=who) from None

        await self.call(start)
        return self.done("/admin/experiments")

    async def look_experiment(self, form: Annotated[schema.CsrfForm, Form()], who: Admin = Depends(operator_form)) -> Response:
        """The "Look now" button: what `chatbot up` does every EXPERIMENT_LOOK_S, asked for by an operator (a
        decision ends the experiment and, with auto-serve, serves the winner); recorded."""

        def look() -> None:
            try:
                rep = experiments.look(self.r, self.settings.prompt_id, who.name)  # a decision: recorded there
            except experiments.ExperimentError as exc:
                raise Refused(409, str(exc), admin=who) from None
            if rep.experiment.status == "running":
                audit.record(self.r, who.name, "experiment_look", f"experiment:{rep.experiment.id}", verdict(rep))

        await self.call(look)
        return self.done("/admin/experiments")

    async def stop_experiment(self, form: Annotated[schema.ConfirmForm, Form()], who: Admin = Depends(operator_form)) -> Response:
        if not form.confirm:
            raise Refused(400, "Tick the box to confirm stopping the experiment.", admin=who)

        def stop() -> None:
            try:  # recorded in the audit log there
                experiments.stop(self.r, self.settings.prompt_id, who.name)
            except experiments.ExperimentError as exc:
                raise Refused(409, str(exc), admin=who) from None

        await self.call(stop)
        return self.done("/admin/experiments")

    async def operator_json(self, request: Request) -> JSONResponse:
        """For the chat page's script (bot/ui/public/loop.js): whether to offer the console in the
        user menu. Any logged-in user may ask about themselves; nothing else is said."""
        return JSONResponse({"operator": await self.gate.is_operator(request)}, headers=HEADERS)

    async def static(self, name: str) -> FileResponse:
        if name not in STATIC:
            raise Refused(404, "Not found.")
        return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    async def not_found(self, rest: str) -> Response:
        raise Refused(404, "No such console page.")

    async def slash(self) -> RedirectResponse:
        return RedirectResponse("/admin", status_code=307)

    def routes(self) -> list[APIRoute]:
        def html(path: str, handler: Callable[..., Any], method: str = "GET", **extra: Any) -> APIRoute:
            if method == "POST":  # a form: read with limits before the gate checks its token
                extra = {"max_body_size": MAX_FORM_BYTES, "form_limits": FORM_LIMITS, **extra}
            return ConsoleRoute(path, handler, methods=[method], response_class=extra.pop("response_class", HTMLResponse), **extra)

        return [
            html("/admin", self.overview),
            APIRoute("/admin/", self.slash, methods=["GET"], include_in_schema=False),
            html("/admin/review", self.review_page),
            html("/admin/review/mark", self.mark_reviewed, "POST"),
            html("/admin/review/thread/{thread_id}", self.conversation),
            html("/admin/models", self.models),
            html("/admin/models/promote", self.promote, "POST"),
            html("/admin/models/rollback", self.rollback, "POST"),
            html("/admin/runs", self.runs),
            html("/admin/runs/now", self.run_now, "POST"),
            html("/admin/runs/progress.json", self.progress_json, response_class=JSONResponse),
            html("/admin/datasets", self.datasets),
            html("/admin/datasets/{version}/{split}.jsonl", self.download_jsonl, "POST", response_class=StreamingResponse),
            html("/admin/datasets/{version}/{split}.parquet", self.download_parquet, "POST", response_class=FileResponse),
            # The old download links (GET): refused with the way to do it, never a download.
            html("/admin/datasets/{version}/{split}.jsonl", self.download_by_get, include_in_schema=False),
            html("/admin/datasets/{version}/{split}.parquet", self.download_by_get, include_in_schema=False),
            html("/admin/experiments", self.experiments),
            html("/admin/experiments/start", self.start_experiment, "POST"),
            html("/admin/experiments/look", self.look_experiment, "POST"),
            html("/admin/experiments/stop", self.stop_experiment, "POST"),
            APIRoute("/admin/operator.json", self.operator_json, methods=["GET"], include_in_schema=False),
            APIRoute("/admin/static/{name}", self.static, methods=["GET"], include_in_schema=False),
            # Last: any other /admin address is not Chainlit's single-page app either.
            APIRoute("/admin/{rest:path}", self.not_found, methods=["GET"], include_in_schema=False),
        ]

"""Every door that writes a rating, the retraining trigger, and ratings queued during an outage.

1. The doors: every function of the product that writes a rating is found by listing the callers
   of the store's rate path (and anything that would reach the rating script around it), and the
   app's action callbacks are listed from the running app's own registry. Each door is driven
   through its real interface (HTTP, socket.io + POST /project/action, Chainlit's data-layer
   calls) past RATINGS_PER_MINUTE: past the limit, no rating event is appended (XLEN over every
   bucket's stream) and the caller is told (429, or a toast). A door added later that is not
   listed here fails the listing test; one that went around the store fails it too.
2. The retraining trigger: one user alone cannot start a run (RETRAIN_USER_SHARE), five can; after
   a run, thumbs flipped back to what it trained on count nothing.
3. A rating made while Redis is down is answered 202 "queued", not "saved"; one the rating script
   refuses once Redis is back (someone else's answer) shows in `chatbot spool` as refused.
"""

from __future__ import annotations

import ast
import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import pytest
import redis
from chainlit.context import init_http_context
from chainlit.types import Feedback
from chainlit.user import User

from bot.datalayer import RedisDataLayer
from demo.tiny import build_tiny_model
from feedback import event as events
from feedback import keys
from feedback import rating as ratings
from feedback.connection import connect
from feedback.limiter import Limiter
from feedback.settings import Settings
from feedback.spool import Spool
from feedback.store import Store
from launcher import chainlit_server, redis_server
from launcher.process import ServiceGroup, wait_until
from sim.client import ChatClient
from support import seed
from support.retrain import BAD, FAST, GOOD, QUESTIONS
from support.services import ROOT, AppServer, RedisServer, app_env, run_cli, start_app, start_standin
from support.session import final_message, run_id
from training import job
from training.config import RetrainConfig

T = TypeVar("T")
LIMIT = 4  # RATINGS_PER_MINUTE of the app these tests start
EXTRA = 3  # requests sent past the limit at each door
PASSWORD = "door-pw"
ALL_DOOR_USERS = tuple(f"door{i}" for i in range(24))
DOOR_USERS = list(ALL_DOOR_USERS)  # a fresh user per attempt: nobody's count carries over
PRODUCT = ("bot", "feedback", "launcher", "training", "sim", "demo")  # what ships (tests, support, bench don't)

# --- 1. the doors --------------------------------------------------------------------------------

# Every function of the product that calls the store's rate path, and the driver below that pushes
# it past the limit through its real interface. A new door fails test_the_doors_are_all_listed
# until it is added here with a driver; test_every_door_stops_at_the_limit runs every driver.
DOORS = {
    "bot.api.install.<locals>.put_feedback": "drive_put_feedback",
    "bot.api.install.<locals>.delete_feedback": "drive_delete_feedback",
    "bot.app.toggle_reason": "drive_reason_toggle",
    "bot.app.drop_down_reasons": "drive_thumbs_up_cleanup",
    "bot.datalayer.RedisDataLayer.upsert_feedback": "drive_data_layer",
    "bot.datalayer.RedisDataLayer.delete_feedback": "drive_data_layer",
}
# The only code that may reach the rating script without passing Store.rate: the script's own
# module, and the store (Store.rate itself, and the spool's replay of clicks counted when made).
SCRIPT_NAMES = {"RATE_SCRIPT", "RATE_SHA", "rate_call", "_evalsha"}
SCRIPT_USERS = {"feedback.rating", "feedback.store.Store.rate.<locals>.<lambda>", "feedback.store.Store._apply"}


class _Calls(ast.NodeVisitor):
    """(enclosing function qualname, what it references) for the rate path in one module."""

    def __init__(self, module: str, rating_aliases: set[str]) -> None:
        self.module = module
        self.rating_aliases = rating_aliases  # names the module gives feedback.rating
        self.stack: list[tuple[str, bool]] = []  # (name, is a function)
        self.store_rate: set[str] = set()  # callers of <...store>.rate(...)
        self.script: set[str] = set()  # users of the rating script's entry points

    def _scope(self, node: ast.AST, name: str, function: bool) -> None:
        self.stack.append((name, function))
        self.generic_visit(node)
        self.stack.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scope(node, node.name, True)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scope(node, node.name, True)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scope(node, node.name, False)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scope(node, "<lambda>", True)

    def where(self) -> str:
        """The qualname Python gives the enclosing function (a function's nested ones are its <locals>)."""
        parts: list[str] = []
        for i, (name, function) in enumerate(self.stack):
            parts.append(name)
            if function and i + 1 < len(self.stack):
                parts.append("<locals>")
        return ".".join([self.module, *parts])

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "rate" and ast.unparse(f.value).endswith("store"):
            self.store_rate.add(self.where())
        if isinstance(f, ast.Attribute) and f.attr == "apply" and isinstance(f.value, ast.Name) and f.value.id in self.rating_aliases:
            self.script.add(self.where())
        if isinstance(f, ast.Name) and f.id == "lua" and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "rate":
            self.script.add(self.where())
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in SCRIPT_NAMES:
            self.script.add(self.where())
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in SCRIPT_NAMES:
            self.script.add(self.where())


def _rating_aliases(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "feedback":
            found |= {a.asname or a.name for a in node.names if a.name == "rating"}
        elif isinstance(node, ast.ImportFrom) and node.module == "feedback.rating":
            found |= {a.asname or a.name for a in node.names if a.name in {"apply", *SCRIPT_NAMES}}
        elif isinstance(node, ast.Import):
            found |= {a.asname or a.name for a in node.names if a.name == "feedback.rating"}
    return found


def rate_path_users() -> tuple[set[str], set[str]]:
    """(callers of the store's rate path, users of the rating script) in the product's code."""
    callers: set[str] = set()
    script: set[str] = set()
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            tree = ast.parse(path.read_text(encoding="utf-8"))
            calls = _Calls(module, _rating_aliases(tree))
            calls.visit(tree)
            callers |= calls.store_rate
            script |= {w if not w.startswith("feedback.rating.") else "feedback.rating" for w in calls.script}
    return callers, script


def action_callbacks(tmp_path: Path) -> dict[str, str]:
    """The app's action callbacks, as Chainlit registers them when it loads bot/app.py: name ->
    the function's module and qualname (listed by the app's own process, not from memory)."""
    root = chainlit_server.prepare_app_root(tmp_path / "chainlit")
    env = app_env("redis://127.0.0.1:9", "http://127.0.0.1:9/v1", tmp_path / "data", CHAINLIT_APP_ROOT=str(root))
    code = (
        "import inspect, json, chainlit.config as c\n"
        "import bot.app\n"
        "found = {n: inspect.unwrap(f) for n, f in c.config.code.action_callbacks.items()}\n"
        "print(json.dumps({n: f'{f.__module__}.{f.__qualname__}' for n, f in found.items()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return cast("dict[str, str]", json.loads(done.stdout.strip().splitlines()[-1]))


def reaches_store_rate(qualname: str) -> bool:
    """Whether a function of bot/app.py calls, itself or through the module's other functions, the
    store's rate path (the static call graph of the module, by function name)."""
    module, _, name = qualname.rpartition(".")
    tree = ast.parse((ROOT / Path(*module.split("."))).with_suffix(".py").read_text(encoding="utf-8"))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in functions:
            continue
        seen.add(current)
        for node in ast.walk(functions[current]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "rate" and ast.unparse(node.func.value).endswith("store"):
                return True
            if isinstance(node, ast.Name) and node.id in functions:
                todo.append(node.id)
    return False


def ratings_limiters() -> list[str]:
    """Where the product builds a limiter of kind "ratings": as the rating_limit of a Store, or elsewhere."""
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            in_store = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Store":
                    in_store |= {id(k.value) for k in node.keywords if k.arg == "rating_limit"}
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("Limiter") and any(isinstance(a, ast.Constant) and a.value == "ratings" for a in node.args):
                    found.append("Store(rating_limit=Limiter(..., 'ratings', ...))" if id(node) in in_store else f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_the_doors_are_all_listed(tmp_path: Path) -> None:
    callers, script = rate_path_users()
    assert callers == set(DOORS), f"functions that write ratings through Store.rate, and what DOORS lists: {sorted(callers ^ set(DOORS))}"
    assert script <= SCRIPT_USERS, f"code that reaches the rating script without Store.rate (its limit): {sorted(script - SCRIPT_USERS)}"
    assert all(callable(globals().get(driver)) for driver in DOORS.values())
    # The one limiter of ratings sits on that path: built once, and given to the Store itself.
    assert ratings_limiters() == ["Store(rating_limit=Limiter(..., 'ratings', ...))"]
    # The running app's action callbacks: each one that reaches the rate path is a listed door.
    callbacks = action_callbacks(tmp_path)
    assert "reason" in callbacks, callbacks
    writing = {name: fn for name, fn in callbacks.items() if fn.startswith("bot.") and reaches_store_rate(fn)}
    assert writing == {"reason": "bot.app.toggle_reason"}, writing
    assert set(writing.values()) <= set(DOORS)


# The app with a small rating limit, on the session's Redis, and users of its own.


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, standin: str, redis_server_: RedisServer) -> Iterator[AppServer]:
    data = tmp_path_factory.mktemp("doors")
    group = ServiceGroup(data / "logs")
    with group:
        users = ",".join(f"{u}:{PASSWORD}" for u in ALL_DOOR_USERS)
        env = app_env(redis_server_.url, f"{standin}/v1", data, RATINGS_PER_MINUTE=str(LIMIT), AUTH_USERS=users)
        yield start_app(group, env, data)


async def in_one_window(attempt: Callable[[str], Awaitable[T]]) -> T:
    """Run `attempt` as a fresh user, so that it starts and ends in one minute: a fixed window's
    counters start over at a minute's boundary, so when one falls inside, run it again as another."""
    for user in DOOR_USERS[:3]:
        DOOR_USERS.remove(user)  # used up
        window = int(time.time() // 60)
        result = await attempt(user)
        if int(time.time() // 60) == window:
            return result
    raise AssertionError("three window boundaries in a row")


async def session(app: AppServer, user: str) -> ChatClient:
    client = ChatClient(app.url)
    await client.login(user, PASSWORD)
    await client.connect()
    return client


def event_count(c: redis.Redis) -> int:
    """Rating events in every bucket's stream (XLEN of each)."""
    return events.count(c)


def put(client: ChatClient, rid: str, value: int, reasons: list[str] | None = None) -> Awaitable[httpx.Response]:
    """The thumbs' PUT /feedback exactly as the page sends it (once: no retry past the limit)."""

    async def go() -> httpx.Response:
        feedback: dict[str, Any] = {"forId": rid, "threadId": client.thread_id, "value": value, "comment": None}
        if reasons is not None:
            feedback["reasons"] = reasons
        async with client.http() as http:
            return await http.put("/feedback", json={"feedback": feedback, "sessionId": client.session_id})

    return go()


def refused_at_the_limit(answers: list[httpx.Response]) -> None:
    assert [r.status_code for r in answers] == [200] * LIMIT + [429] * EXTRA, [r.text for r in answers]
    assert all(r.json()["stored"] == "redis" for r in answers[:LIMIT])  # our route answered (Chainlit's says nothing of storage)
    for r in answers[LIMIT:]:
        assert r.json()["detail"].startswith("Too many ratings: try again in") and 1 <= int(r.headers["retry-after"]) <= 60


async def drive_put_feedback(limited: AppServer, redis_db: RedisServer, tmp_path: Path) -> None:
    async def attempt(user: str) -> tuple[list[httpx.Response], int]:
        client = await session(limited, user)
        try:
            rid = run_id(await client.send("rate me often"))
            before = event_count(redis_db.client)
            answers = [await put(client, rid, i % 2) for i in range(LIMIT + EXTRA)]
            return answers, event_count(redis_db.client) - before
        finally:
            await client.close()

    answers, written = await in_one_window(attempt)
    refused_at_the_limit(answers)
    assert written == LIMIT  # one event per accepted click, none past the limit


async def drive_delete_feedback(limited: AppServer, redis_db: RedisServer, tmp_path: Path) -> None:
    async def attempt(user: str) -> tuple[list[httpx.Response], int]:
        client = await session(limited, user)
        r = connect(redis_db.url)
        try:
            rids = [run_id(await client.send(f"answer {i}")) for i in range(LIMIT + EXTRA)]
            # Rated beforehand through a store of the test's own (no limit): only the un-rates count here.
            store = Store(r, Spool(tmp_path / user / "spool.jsonl"))
            for rid in rids:
                await store.rate(user=user, thread_id=str(client.thread_id), exchange_id=rid, rating=ratings.RatingInput(value=1))
            before = event_count(redis_db.client)
            async with client.http() as http:
                answers = [await http.request("DELETE", "/feedback", json={"feedbackId": rid}) for rid in rids]
            return answers, event_count(redis_db.client) - before
        finally:
            await client.close()
            await r.aclose()

    answers, written = await in_one_window(attempt)
    refused_at_the_limit(answers)
    assert written == LIMIT


async def drive_reason_toggle(limited: AppServer, redis_db: RedisServer, tmp_path: Path) -> None:
    """The toggles under a 👎 (POST /project/action "reason", as the page sends them) count like
    thumbs: past the limit a toggle writes nothing and the user gets a toast saying so."""

    async def attempt(user: str) -> tuple[int, list[str], list[str]]:
        client = await session(limited, user)
        try:
            reply = await client.send("explain at length")
            rid, answer = run_id(reply), final_message(reply)["id"]
            assert (await put(client, rid, 0)).status_code == 200  # the 👎: the first of LIMIT
            await client.offered("reason", 5, lambda a: a["payload"]["exchange_id"] == rid)
            before = event_count(redis_db.client)
            toasts = []
            for i in range(LIMIT - 1 + EXTRA):
                await client.action("reason", {"exchange_id": rid, "reason": ("wrong", "too_long")[i % 2]}, for_id=answer, answers=False)
                if i >= LIMIT - 1:
                    toast = await client.next_event("toast", lambda t: t.get("type") == "error")
                    toasts.append(str(toast["message"]))
            written = event_count(redis_db.client) - before
            return written, toasts, json.loads(cast(str, redis_db.client.hget(keys.rating(str(client.thread_id), rid), "reasons")))
        finally:
            await client.close()

    written, toasts, reasons = await in_one_window(attempt)
    assert written == LIMIT - 1  # the toggles the limit let through, none after
    assert len(toasts) == EXTRA and all(t.startswith("Too many ratings: try again in") and "not saved" in t for t in toasts), toasts
    assert reasons == ["too_long"], reasons  # wrong, too_long, wrong again (unpicked); nothing after


async def drive_thumbs_up_cleanup(limited: AppServer, redis_db: RedisServer, tmp_path: Path) -> None:
    """A 👍 that replaces a 👎 comes with the 👎's reasons (the page sends them back); the app
    removes them in a second write, which counts like any other: past the limit it is not made,
    and the user is told their 👍 kept those reasons."""

    async def attempt(user: str) -> tuple[list[int], int, str, dict[str, str]]:
        client = await session(limited, user)
        try:
            rid = run_id(await client.send("rate me down then up"))
            before = event_count(redis_db.client)
            statuses = [(await put(client, rid, 0, ["wrong"])).status_code for _ in range(LIMIT - 1)]
            statuses.append((await put(client, rid, 1, ["wrong"])).status_code)  # the last one the limit lets through
            toast = await client.next_event("toast", lambda t: t.get("type") == "warning")
            written = event_count(redis_db.client) - before
            return statuses, written, str(toast["message"]), cast("dict[str, str]", redis_db.client.hgetall(keys.rating(str(client.thread_id), rid)))
        finally:
            await client.close()

    statuses, written, toast, stored = await in_one_window(attempt)
    assert statuses == [200] * LIMIT
    assert written == LIMIT  # the clicks; the cleanup past the limit wrote nothing
    assert toast.startswith("Too many ratings") and "still with the reasons" in toast
    assert stored["value"] == "1" and json.loads(stored["reasons"]) == ["wrong"]


async def drive_data_layer(limited: AppServer, redis_db: RedisServer, tmp_path: Path) -> None:
    """Chainlit's own feedback routes (and its Slack/Teams/Discord apps) rate through the data
    layer. Its routes are shadowed by ours (PUT /feedback answers with "stored": the other tests);
    its calls go through the store and its limit, as the app builds them: Store(rating_limit=...)."""
    r = connect(redis_db.url)
    try:
        store = Store(r, Spool(tmp_path / "spool.jsonl"), rating_limit=Limiter(r, "ratings", LIMIT))
        layer = RedisDataLayer(r, store)

        async def attempt(user: str) -> tuple[list[str], list[str], int]:
            init_http_context(user=User(identifier=user))
            await layer.update_thread(f"th-{user}", name="rated", user_id=user)
            ids = [await seed.seed_exchange(r, thread=f"th-{user}", user=user, question=f"q{i}", answer="a", value=None) for i in range(LIMIT + EXTRA)]
            before = event_count(redis_db.client)
            outcomes = []
            for i in range(LIMIT + EXTRA):  # the first LIMIT: rate; then un-rate past the limit
                try:
                    if i < LIMIT:
                        await layer.upsert_feedback(Feedback(forId=ids[i], threadId=f"th-{user}", value=1))
                    else:
                        await layer.delete_feedback(ids[i - LIMIT])
                    outcomes.append("ok")
                except ratings.RatingLimited as exc:
                    outcomes.append(str(exc))
            refused_upsert = []
            try:
                await layer.upsert_feedback(Feedback(forId=ids[-1], threadId=f"th-{user}", value=0))
            except ratings.RatingLimited as exc:
                refused_upsert.append(str(exc))
            return outcomes, refused_upsert, event_count(redis_db.client) - before

        outcomes, refused_upsert, written = await in_one_window(attempt)
    finally:
        await r.aclose()
    assert outcomes[:LIMIT] == ["ok"] * LIMIT and all(o.startswith("Too many ratings") for o in outcomes[LIMIT:]), outcomes
    assert len(refused_upsert) == 1 and written == LIMIT


async def test_every_door_stops_at_the_limit(limited: AppServer, redis_db: RedisServer, tmp_path: Path) -> None:
    """Each listed door, driven past RATINGS_PER_MINUTE: every one that fails is named."""
    failed = {}
    for driver in dict.fromkeys(DOORS.values()):
        try:
            await globals()[driver](limited, redis_db, tmp_path / driver)
        except AssertionError as exc:
            failed[driver] = str(exc).splitlines()[0][:300]
        except (TimeoutError, TypeError, AttributeError) as exc:  # e.g. a refusal that never came
            failed[driver] = f"{type(exc).__name__}: {exc}"[:300]
    assert failed == {}


# --- 2. the retraining trigger ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny")).resolve()


def rate_as(url: str, spool: Path, user: str, n: int) -> list[tuple[str, str]]:
    """`user` gets n answers (over 5 threads of their own, each holding liked and disliked ones)
    and rates them through the store's rate path: short answers up, rambling ones down."""

    async def go() -> list[tuple[str, str]]:
        r = connect(url)
        store = Store(r, Spool(spool))
        done = []
        try:
            for i in range(n):
                good, thread = i % 2 == 0, f"{user}-t{i % 5}"
                ex = await seed.seed_exchange(r, thread=thread, user=user, question=f"{QUESTIONS[i % len(QUESTIONS)]} ({user} {i})", answer=(GOOD if good else BAD)[i % 3], value=None)
                assert await store.rate(user=user, thread_id=thread, exchange_id=ex, rating=ratings.RatingInput(value=int(good))) == "redis"
                done.append((thread, ex))
        finally:
            await r.aclose()
        return done

    return asyncio.run(go())


def click(url: str, spool: Path, user: str, answers: list[tuple[str, str]], values: list[int | None]) -> None:
    """`user` clicks on each answer the values in turn (None: un-rate), through the store."""

    async def go() -> None:
        r = connect(url)
        store = Store(r, Spool(spool))
        try:
            for thread, ex in answers:
                for value in values:
                    rating = None if value is None else ratings.RatingInput(value=value)
                    assert await store.rate(user=user, thread_id=thread, exchange_id=ex, rating=rating) == "redis"
        finally:
            await r.aclose()

    asyncio.run(go())


@pytest.mark.slow
def test_one_user_alone_starts_no_run_and_flips_after_a_run_count_nothing(redis_db: RedisServer, tiny: Path, standin: str, tmp_path: Path) -> None:
    c = redis_db.client
    # llm_base_url: a promotion loads the version into the model server first (the stand-in here).
    settings = Settings(
        redis_url=redis_db.url, llm_model=str(tiny), llm_base_url=f"{standin}/v1", data_dir=tmp_path / "data", retrain_lock_ttl_s=30, retrain_user_share=0.2,
    )  # fmt: skip
    config = RetrainConfig(min_new_ratings=50, **FAST)
    spool = tmp_path / "spool" / "writes.jsonl"

    alices = rate_as(redis_db.url, spool, "alice", 50)
    outcome = job.run(c, settings, config, progress=False)
    assert outcome.status == "skipped" and outcome.new_ratings == 10, outcome
    assert outcome.reason == "10 new ratings since the last run (50 before the bound of 10 per user, RETRAIN_USER_SHARE, which 1 user(s) passed); waiting for 50"
    assert c.get(keys.retrain_watermark()) is None
    # retrain_user_share 0.2: one user counts for at most 10 of 50
    found = job.count_new(c, job.per_user_bound(settings.retrain_user_share, 50))
    assert (found.counted, found.changed, found.per_user, found.bounded_users) == (10, 50, 10, 1)

    for user in ("bob", "carol", "dave", "erin"):  # five users, ten answers each count
        rate_as(redis_db.url, spool, user, 10)
    assert job.new_ratings(c, 10) == 50
    outcome = job.run(c, settings, config, progress=False)
    assert outcome.status in ("promoted", "rejected") and outcome.new_ratings == 50, outcome
    assert c.get(keys.retrain_watermark()) is not None
    assert events.count(c) <= keys.BUCKETS  # the stream was trimmed up to the watermark: the trigger does without it

    # After the run: thumbs flipped and flipped back, an answer un-rated and rated again as it was,
    # count nothing: each is what the run trained on.
    liked = [a for i, a in enumerate(alices) if i % 2 == 0]
    click(redis_db.url, spool, "alice", liked[:10], [0, 1, 0, 1])
    click(redis_db.url, spool, "alice", alices[1:2], [None, 0])
    assert job.new_ratings(c) == 0
    # One left flipped counts; a new answer rated then un-rated (unrated before and after) does not.
    click(redis_db.url, spool, "alice", liked[:1], [0])
    extra = rate_as(redis_db.url, spool, "frank", 1)
    click(redis_db.url, spool, "frank", extra, [None])
    found = job.count_new(c, 10)
    assert (found.counted, found.changed) == (1, 1)


# --- 3. ratings queued while Redis is down --------------------------------------------------------


async def test_a_rating_made_during_an_outage_is_answered_queued_and_a_refused_one_shows_in_chatbot_spool(own_services: ServiceGroup, tmp_path: Path) -> None:
    redis_dir, sock, data = tmp_path / "redis", tmp_path / "r.sock", tmp_path / "app"
    redis_proc = redis_server.start(own_services, redis_dir, sock)
    c = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
    env = app_env(f"unix://{sock}", f"{start_standin(own_services)}/v1", data)
    app = start_app(own_services, env, data)
    spool = data / "spool" / "writes.jsonl"
    alice, bob = ChatClient(app.url), ChatClient(app.url)
    try:
        for client, user in ((alice, "alice"), (bob, "bob")):
            await client.login(user, f"{user}-pw")
            await client.connect()
        mine = run_id(await alice.send("mine"))
        bobs = run_id(await bob.send("not alice's"))
        assert alice.thread_id is not None and bob.thread_id is not None
        before = events.count(c)

        redis_proc.send_signal(signal.SIGTERM)  # a clean stop: Redis is gone
        assert redis_proc.wait(timeout=10) == 0
        own = await put(alice, mine, 1)
        async with alice.http() as http:  # Alice names Bob's answer, in Bob's thread
            foreign = await http.put("/feedback", json={"feedback": {"forId": bobs, "threadId": bob.thread_id, "value": 0}})
        kept = alice.thread_id
        for r in (own, foreign):  # accepted for later, not saved: nothing could check it yet
            assert r.status_code == 202 and r.json() == {"success": True, "feedbackId": r.json()["feedbackId"], "stored": "queued"}, r.text
        assert [op["exchange_id"] for op in Spool(spool).pending() if op["op"] == "rate"] == [mine, bobs]

        redis_server.start(own_services, redis_dir, sock)
        wait_until(lambda: not spool.exists(), 15, what="spool replay")
        assert c.hget(keys.rating(kept, mine), "value") == "1"  # hers is saved
        assert not c.exists(keys.rating(bob.thread_id, bobs))  # Bob's answer is untouched
        assert events.count(c) == before + 1

        # The refusal is not lost silently: `chatbot spool` lists it, apart from dead letters
        # (nothing for an operator to fix, so no failing exit status) and never requeued.
        shown = run_cli("spool", env=env)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "dead letters: 0" in shown.stdout and "refused: 1" in shown.stdout, shown.stdout
        line = next(line for line in shown.stdout.splitlines() if bobs in line)
        assert "rating by alice" in line and "refused (forbidden)" in line and "your own threads" in line, line
        requeued = run_cli("spool", "--requeue", env=env)
        assert "requeued 0" in requeued.stdout and "refused: 1" in requeued.stdout, requeued.stdout
        assert not spool.exists() and len(Spool(spool).refused()) == 1
    finally:
        await alice.close()
        await bob.close()
        c.close()

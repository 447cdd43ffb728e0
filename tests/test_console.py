"""The operator console (/admin) on the real Chainlit app, a real Redis and the stand-in model:
pages seen by an operator in chromium, refused to everyone else, every change it makes audited
and observable where it matters (the model answering the next chat message, the run request
the schedule picks up, the review marks, the downloaded dataset).

alice is the operator (ADMIN_USERS=alice), bob a logged-in user who is not. Refusals are checked
over plain HTTP (status, Location, what Redis holds before and after), what an operator sees and
does in the browser. Waiting is Playwright's auto-waiting assertions and launcher.process.wait_until,
never a sleep.

Screenshots for docs/: CONSOLE_SCREENSHOTS=docs pytest tests/test_console.py -k every_page
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import os
import re
import time
import urllib.parse
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from bot.console import charts
from feedback import audit, keys, progress, registry, stats
from feedback import exchange as exchanges
from feedback import experiment as experiments
from feedback import prompt as prompts
from feedback import run as runs
from feedback.connection import connect
from feedback.spool import Spool
from launcher.process import ServiceGroup
from sim.client import ChatClient
from support.browser import OtherPage
from support.browser import log_in as browser_log_in
from support.seed import new_id, rate, seed_exchange
from support.services import ROOT, AppServer, RedisServer, app_env, start_app
from support.session import USERS, final_message, keyspace

pytestmark = pytest.mark.browser


PAGES = ("/admin", "/admin/review", "/admin/models", "/admin/runs", "/admin/datasets", "/admin/experiments")
OTHER_ORIGIN = "http://127.0.0.1:1"
DAY = 86400.0

T = TypeVar("T")


@dataclass
class Console:
    app: AppServer
    data: Path  # the app's DATA_DIR

    @property
    def url(self) -> str:
        return self.app.url

    @property
    def datasets(self) -> Path:
        return self.data.resolve() / "datasets"

    @property
    def base(self) -> str:
        """The configured base model (LLM_MODEL): a version serves only if trained from it."""
        return str(self.data / "default-model")


@pytest.fixture(scope="module")
def console(services: ServiceGroup, redis_server_: RedisServer, standin: str, tmp_path_factory: pytest.TempPathFactory) -> Console:
    """An app of its own: alice is the operator. Its model is named as `chatbot up` names the
    default one: a directory under DATA_DIR (the stand-in answers whatever name it is given)."""
    data = tmp_path_factory.mktemp("console")
    default_model = data / "default-model"
    default_model.mkdir()
    (default_model / "converted-from.txt").write_text("SmolLM2-135M-Instruct.Q4_1.gguf\n")  # as launcher/default_model.py leaves it
    env = app_env(redis_server_.url, f"{standin}/v1", data, ADMIN_USERS="alice", LLM_MODEL=str(default_model))
    return Console(start_app(services, env, data), data)


@pytest.fixture
def cleanup_datasets(console: Console) -> Iterator[None]:
    yield
    import shutil

    shutil.rmtree(console.datasets, ignore_errors=True)


# --- helpers ----------------------------------------------------------------------------------------


def in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on a loop of its own (Playwright's sync API holds this thread's)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def cookie_of(url: str, user: str) -> str:
    r = httpx.post(f"{url}/login", data={"username": user, "password": USERS[user]})
    r.raise_for_status()
    return f"access_token={r.cookies['access_token']}"


def http(url: str, user: str | None) -> httpx.Client:
    """A client as a logged-in user (None: anonymous) that does not follow redirects."""
    headers = {"Cookie": cookie_of(url, user)} if user else {}
    return httpx.Client(base_url=url, headers=headers, follow_redirects=False, timeout=30)


def csrf_of(client: httpx.Client, path: str = "/admin/models") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text[:300]
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found, "no CSRF field on the page"
    return found.group(1)


def log_in(browser: Browser, contexts: list[BrowserContext], console: Console, user: str) -> Page:
    """Log in through the chat's login page, as a person does (a viewport the screenshots fit)."""
    return browser_log_in(browser, contexts, console.app, user, width=1360, height=1000)


def open_page(page: Page, console: Console, path: str) -> Page:
    response = page.goto(f"{console.url}{path}")
    assert response is not None and response.status == 200, (path, response and response.status)
    expect(page.locator("nav .brand img[alt=Loop]")).to_be_visible()  # the chat's logo
    expect(page.locator("nav .brand")).to_have_text("console")
    return page


def publish_shipped(r: Any) -> None:
    """The shipped prompt versions, published as the app does when it starts (the test Redis is
    emptied before each test)."""
    for version in prompts.available_versions(ROOT / "bot" / "prompts", "assistant"):
        prompts.publish(r, prompts.load_spec(ROOT / "bot" / "prompts", "assistant", version))


def model_version(
    version_id: str, served_name: str, *, parent: str | None = None, status: registry.Status = "candidate", base_model: str = "echo", **extra: Any
) -> registry.ModelVersion:
    """A registered version; one the console promotes needs its base (`Console.base`)."""
    return registry.ModelVersion(id=version_id, parent=parent, base_model=base_model, served_name=served_name, status=status, **extra)


def seed_history(redis_db: RedisServer) -> dict[str, str]:
    """Three weeks of rated answers over two prompt and two model versions, thumbs down with
    comments and reasons, a registry with a promoted, a rejected and a candidate version, runs, a
    run in progress and a running experiment. Returns some of the ids."""
    r = redis_db.client
    now = time.time()
    publish_shipped(r)

    async def answers() -> dict[str, str]:
        ar = connect(redis_db.url)
        ids: dict[str, str] = {}
        try:
            for i in range(84):
                day = 21 - i / 4
                later = i >= 42
                liked = (i % 3 != 0) if later else (i % 2 == 0)
                user = ("bob", "carol", "dave")[i // 2 % 3]
                reasons = [] if liked else [("wrong", "too_long", "unhelpful")[i // 5 % 3]]
                ids[f"a{i}"] = await seed_exchange(
                    ar, thread=f"hist-{i // 3}", user=user, question=f"Question {i} about {('Redis', 'Python', 'billing')[i % 3]}?",
                    answer=f"Answer {i}: " + ("short and right." if liked else "a long, rambling and partly wrong answer."), value=int(liked),
                    prompt_version="1.1.0" if later else "1.0.0", model_version="m-0002" if later else "base",
                    created_at=now - day * DAY, rated_at=now - day * DAY + 60, comment=None if liked else f"not great ({i})", reasons=reasons,
                )  # fmt: skip
        finally:
            await ar.aclose()
        return ids

    ids = in_thread(answers())
    stats.rebuild(r)  # as `chatbot up` does before the app starts (the counts are kept live after)
    prompts.serve(r, "assistant", "1.1.0")
    registry.add(r, model_version("m-0001", "echo-m1", status="retired", method="kto", dataset_version="ds-0001", metrics={"gate": {"win_rate": 0.58, "n": 40}}))
    registry.add(r, model_version("m-0002", "echo-m2", parent="m-0001", status="active", method="kto", dataset_version="ds-0002",
                                  metrics={"gate": {"win_rate": 0.62, "n": 60}}, decided_at=now - 8 * DAY))  # fmt: skip
    registry.add(r, model_version("m-0003", "echo-m3", parent="m-0002", status="rejected", method="dpo", dataset_version="ds-0003",
                                  metrics={"gate": {"win_rate": 0.41, "n": 60}}, decision={"promote": False, "reason": "win rate 41% is below 50%"}))  # fmt: skip
    r.set(keys.active_model(), "echo-m2")
    r.set(keys.active_version(), "m-0002")
    runs.record(r, runs.RetrainRun("promoted", "win rate 62% over m-0001", 60, "ds-0002", "m-0002", {"win_rate": 0.62}, now - 8 * DAY, 312.0))
    runs.record(r, runs.RetrainRun("skipped", "12 new ratings, 50 needed", 12, None, None, {}, now - 5 * DAY, 0.4))
    runs.record(r, runs.RetrainRun("rejected", "win rate 41% is below 50%", 58, "ds-0003", "m-0003", {"win_rate": 0.41}, now - 2 * DAY, 298.0))
    audit.record(r, "alice", "promote", "model:m-0002", "in service instead of m-0001")
    exp = experiments.start(r, "assistant", ["1.0.0", "1.1.0"], "m-0002", min_rated=10)
    in_thread(seed_arms(redis_db.url, exp, 12, {"1.0.0": 0.5, "1.1.0": 0.75}))
    return ids


async def seed_arms(url: str, exp: experiments.Experiment, per_arm: int, approval: dict[str, float]) -> None:
    """Rated answers in the experiment's conversations, as the app writes them for its arms."""
    ar = connect(url)
    try:
        for arm in exp.arms:
            for i in range(per_arm):
                thread, user = f"x-{arm.replace('.', '-')}-{i}", f"tester-{i}"
                await ar.hset(keys.experiment_assignments(exp.id), thread, arm)
                answer = exchanges.Exchange(
                    id=new_id(), thread_id=thread, user=user, prompt_message_id=new_id(), messages=[exchanges.PromptMessage(role="user", content=f"q{i}")],
                    completion=f"a{i}", prompt_id=exp.prompt_id, prompt_version=arm, model="echo", model_version=exp.model_version, experiment=exp.id,
                )  # fmt: skip
                assert await exchanges.save(ar, answer, op_id=new_id())
                await rate(ar, answer.id, thread=thread, user=user, value=int(i < approval[arm] * per_arm))
    finally:
        await ar.aclose()


def build_dataset(redis_db: RedisServer, root: Path) -> str:
    """A small dataset version, built and materialized as the job does (training imports are the
    tests' to make, never the chat process's): KTO rows, and DPO pairs from regenerated answers."""
    from support.retrain import seed_ratings
    from training.collect import collect
    from training.config import RetrainConfig
    from training.dataset import build, load

    with ThreadPoolExecutor(1) as pool:  # it runs a loop of its own: not on the one Playwright holds
        pool.submit(seed_ratings, redis_db.url, 24).result()

    async def pairs() -> None:
        ar = connect(redis_db.url)
        try:
            for i in range(4):
                question, message = f"Pair question {i}?", f"pm-{i}"
                await seed_exchange(ar, thread=f"pair-{i}", user=f"user-{i}", question=question, answer="Short.", value=1, prompt_message_id=message)
                await seed_exchange(ar, thread=f"pair-{i}", user=f"user-{i}", question=question, answer="Long and wrong, sadly.", value=0, prompt_message_id=message)
        finally:
            await ar.aclose()

    in_thread(pairs())
    version = build(collect(redis_db.client, None, full=True), RetrainConfig(min_ratings=2, max_user_share=1.0), root, None, progress=False)
    load(root, version.version)  # writes parquet/ (what the console serves)
    return version.version


async def chat(url: str, text: str) -> dict[str, Any]:
    client = ChatClient(url)
    await client.login("alice", USERS["alice"])
    await client.connect()
    try:
        return final_message(await client.send(text))
    finally:
        await client.close()


# --- access -------------------------------------------------------------------------------------


def test_anonymous_requests_are_sent_to_the_login_page(console: Console, redis_db: RedisServer, browser: Browser, contexts: list[BrowserContext]) -> None:
    with http(console.url, None) as anonymous:
        for path in (*PAGES, "/admin/review/thread/t-1", "/admin/runs/progress.json", "/admin/datasets/v1/kto_train.jsonl"):
            r = anonymous.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/login", (path, r.status_code)
        before = keyspace(redis_db.url)
        r = anonymous.post("/admin/runs/now", data={"csrf": "x"})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert keyspace(redis_db.url) == before
    with http(console.url, "alice") as alice:  # a session that ended (logged out) is anonymous again
        assert alice.get("/admin").status_code == 200
        assert alice.post("/logout").status_code == 200
        ended = alice.get("/admin")
        assert ended.status_code == 303 and ended.headers["location"] == "/login"
    ctx = browser.new_context()
    contexts.append(ctx)
    page = ctx.new_page()
    page.goto(f"{console.url}/admin/models")
    expect(page).to_have_url(f"{console.url}/login")
    expect(page.locator("#email")).to_be_visible()


def test_a_user_who_is_not_an_operator_gets_403_and_changes_nothing(console: Console, redis_db: RedisServer) -> None:
    r = redis_db.client
    publish_shipped(r)
    registry.add(r, model_version("m-0009", "echo-m9"))
    with http(console.url, "alice") as alice, http(console.url, "bob") as bob:
        token = csrf_of(alice)  # an operator's token does not help bob either
        assert bob.get("/admin").status_code == 403  # (the first request also creates bob's user record)
        before = keyspace(redis_db.url)
        for path in (*PAGES, "/admin/review/thread/t-1", "/admin/runs/progress.json", "/admin/datasets/v1/kto_train.jsonl", "/admin/datasets/v1/kto_train.parquet"):
            got = bob.get(path)
            assert got.status_code == 403, (path, got.status_code)
        assert "not an operator" in bob.get("/admin").text
        posts: dict[str, dict[str, Any]] = {
            "/admin/models/promote": {"version": "m-0009", "confirm": "yes"},
            "/admin/models/rollback": {"confirm": "yes"},
            "/admin/runs/now": {},
            "/admin/review/mark": {"id": "x1"},
            "/admin/experiments/start": {"arm": ["1.0.0", "1.1.0"], "policy": "fixed", "min_rated": "50", "max_rated": "2000", "alpha": "0.05", "user_cap": "20"},
            "/admin/experiments/stop": {"confirm": "yes"},
        }
        for path, form in posts.items():
            got = bob.post(path, data={**form, "csrf": token})
            assert got.status_code == 403, (path, got.status_code)
        assert keyspace(redis_db.url) == before


def test_a_post_from_another_site_or_without_the_csrf_token_is_refused(console: Console, redis_db: RedisServer) -> None:
    r = redis_db.client
    registry.add(r, model_version("m-0010", "echo-m10", base_model=console.base))
    with http(console.url, "alice") as alice, http(console.url, "bob") as bob:
        token = csrf_of(alice)
        bob.get("/")
        other = csrf_of(http(console.url, "alice"))  # another session of the same operator
        assert other != token
        before = keyspace(redis_db.url)
        promote = {"version": "m-0010", "confirm": "yes"}
        refused = [
            alice.post("/admin/models/promote", data={**promote, "csrf": token}, headers={"Origin": OTHER_ORIGIN}),  # cross-site
            alice.post("/admin/models/promote", data={**promote, "csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}),
            alice.post("/admin/models/promote", data=promote),  # no token
            alice.post("/admin/models/promote", data={**promote, "csrf": "0" * 64}),  # a made-up one
            alice.post("/admin/models/promote", data={**promote, "csrf": other}),  # another session's
            alice.post("/admin/models/promote", json={**promote, "csrf": token}),  # not a form
            alice.post("/admin/runs/now", data={"csrf": token}, headers={"Origin": OTHER_ORIGIN}),
            alice.post("/admin/runs/now", data={}),
        ]
        assert [x.status_code for x in refused] == [403] * len(refused), [(x.status_code, x.text[:100]) for x in refused]
        assert keyspace(redis_db.url) == before
        # The same requests with the token from the operator's own page, from the page's origin: done.
        done = alice.post("/admin/models/promote", data={**promote, "csrf": token}, headers={"Origin": console.url})
        assert done.status_code == 303 and done.headers["location"] == "/admin/models"
        assert r.get(keys.active_version()) == "m-0010"


# --- pages -----------------------------------------------------------------------------------------


def test_an_operator_sees_every_page_with_data(
    console: Console, redis_db: RedisServer, browser: Browser, contexts: list[BrowserContext], cleanup_datasets: None
) -> None:
    seed_history(redis_db)
    version = build_dataset(redis_db, console.datasets)
    r = redis_db.client
    progress.start(r, "run-demo")
    progress.step(r, "train")
    progress.train_step(r, 12, 40, 0.6931)
    spool = Spool(console.data.resolve() / "spool" / "writes.jsonl")  # the app's (feedback/layout.py)
    spool.dead_letter({"op": "rate", "op_id": "op-1"}, "WRONGTYPE Operation against a key holding the wrong kind of value")
    try:
        see_every_page(console, browser, contexts, version)
    finally:
        spool.dead_path.unlink()


def see_every_page(console: Console, browser: Browser, contexts: list[BrowserContext], version: str) -> None:
    page = log_in(browser, contexts, console, "alice")
    shots = os.environ.get("CONSOLE_SCREENSHOTS")

    def shot(name: str) -> None:
        # Every page: commands shown as code, never as literal backticks.
        assert "`" not in page.locator("main").inner_text(), name
        if shots:
            page.screenshot(path=str(Path(shots) / f"console-{name}.png"), full_page=True)

    open_page(page, console, "/admin")
    # The chat's look: its dark background, and the logo (loaded, not a broken image).
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(33, 33, 33)"  # Chainlit's dark --background
    assert page.locator("nav .brand img").evaluate("img => img.complete && img.naturalWidth > 0")
    expect(page.locator("#served-model")).to_have_text("m-0002")
    expect(page.locator("#served-prompt")).to_contain_text("assistant@")
    for by in ("model_version", "prompt_version"):
        chart = page.locator(f"#approval-{by} svg.chart")
        expect(chart).to_be_visible()
        expect(chart.locator("polygon.band")).to_have_count(2)  # one interval band per version
        expect(chart.locator("text.count").first).to_be_visible()
    expect(page.locator("#approval-model_version table.legend")).to_contain_text("m-0002")
    expect(page.locator("#approval-prompt_version table.legend")).to_contain_text("1.1.0")
    expect(page.locator("#volume svg.chart rect.up").first).to_be_attached()
    expect(page.locator("text=Next scheduled")).to_be_visible()
    expect(page.locator("#attention")).to_contain_text("1 write(s) from the chat could not be applied")
    shot("overview")

    open_page(page, console, "/admin/review")
    expect(page.locator("table.review tbody tr")).to_have_count(25)  # a page of the 36 thumbs down
    expect(page.locator("a[rel=next]")).to_be_visible()
    shot("review")
    page.locator("table.review a", has_text="conversation").first.click()
    expect(page.locator("ol.conversation li").first).to_be_visible()
    shot("conversation")

    open_page(page, console, "/admin/models")
    expect(page.locator("#model-m-0002")).to_contain_text("in service")
    expect(page.locator("#model-m-0003")).to_contain_text("win rate 41% is below 50%")
    expect(page.locator("#model-m-0003 input[name=force]")).to_be_attached()
    shot("models")

    open_page(page, console, "/admin/runs")
    expect(page.locator("table.runs tbody tr")).to_have_count(3)
    expect(page.locator('#progress [data-field="train"]')).to_have_text("12 / 40")
    expect(page.locator('#progress [data-field="loss"]')).to_have_text("0.6931")
    shot("runs")

    open_page(page, console, "/admin/datasets")
    section = page.locator(f"#dataset-{version}")
    expect(section).to_contain_text("kto_train")
    # POST forms (a download is recorded), for the three splits with rows: the four pairs' threads
    # all fell in training, and an empty split is not offered
    expect(section.get_by_role("button", name="JSONL")).to_have_count(3)
    expect(section).to_contain_text("no pairs yet")
    with page.expect_download() as download:
        section.get_by_role("button", name="JSONL").first.click()
    assert download.value.suggested_filename == f"{version}-kto_train.jsonl"
    shot("datasets")

    open_page(page, console, "/admin/experiments")
    expect(page.locator("section.experiment")).to_contain_text("1.0.0 vs 1.1.0")
    expect(page.locator("#stop-form")).to_be_visible()
    shot("experiments")


def test_needs_attention_names_a_failed_run_dead_letters_and_a_decided_experiment(console: Console, redis_db: RedisServer) -> None:
    r = redis_db.client
    publish_shipped(r)
    with http(console.url, "alice") as alice:
        nothing = "Nothing: no retraining run yet, so none failed; no write from the chat is dead-lettered"
        assert nothing in alice.get("/admin").text  # (not "the last run did not fail": there is none)
        token = csrf_of(alice, "/admin/experiments")
        plan = {"arm": ["1.0.0", "1.1.0"], "policy": "fixed", "min_rated": "10", "max_rated": "10", "alpha": "0.05", "user_cap": "20", "csrf": token}
        assert alice.post("/admin/experiments/start", data=plan).status_code == 303
        exp = experiments.running(r, "assistant")
        assert exp is not None
        in_thread(seed_arms(redis_db.url, exp, 10, {"1.0.0": 0.5, "1.1.0": 0.6}))  # max_rated reached: the next look decides
        assert nothing in alice.get("/admin").text  # the overview does not look (count) itself
        assert "Not enough data yet" in alice.get("/admin/experiments").text  # nor the experiments page: it shows the last look's
        looked = alice.post("/admin/experiments/look", data={"csrf": token})  # a look, as `chatbot up` does every EXPERIMENT_LOOK_S
        assert looked.status_code == 303 and "No difference found" in alice.get("/admin/experiments").text
        runs.record(r, runs.RetrainRun("failed", "training crashed: out of memory", 80, "ds-1", None, {}, time.time() - 60, 42.0))
        spool = Spool(console.data.resolve() / "spool" / "writes.jsonl")
        spool.dead_letter("{not json", "unreadable spool line")
        try:
            attention = alice.get("/admin").text.split('id="attention"')[1].split("</section>")[0]
        finally:
            spool.dead_path.unlink()
    assert "The last retraining run failed" in attention and "training crashed: out of memory" in attention
    assert "1 write(s) from the chat could not be applied" in attention and "<code>chatbot spool --requeue</code>" in attention
    assert "DATA_DIR/spool/" in attention and str(console.data) not in attention  # where, without the server's path
    assert f"Prompt experiment {exp.id} reached a decision" in attention
    decided = experiments.load(r, exp.id)
    assert decided is not None and decided.status == "decided"
    assert [e.action for e in audit.recent(r, target=f"experiment:{exp.id}")] == ["experiment_decided", "experiment_start"]


def test_promoting_from_the_console_changes_the_model_of_the_next_answer(console: Console, redis_db: RedisServer, browser: Browser, contexts: list[BrowserContext]) -> None:
    r = redis_db.client
    registry.add(r, model_version("m-0100", "echo-next", base_model=console.base))
    assert in_thread(chat(console.url, "hello"))["metadata"]["model_version"] == "base"

    page = open_page(log_in(browser, contexts, console, "alice"), console, "/admin/models")
    row = page.locator("#model-m-0100")
    # The confirmation is required: the browser won't send the form without the box ticked.
    row.get_by_role("button", name="Promote").click()
    expect(page).to_have_url(f"{console.url}/admin/models")
    assert r.get(keys.active_version()) is None
    row.locator("input[name=confirm]").check()
    row.get_by_role("button", name="Promote").click()
    expect(page.locator("#in-service")).to_have_text("m-0100")
    expect(page.locator("table.audit")).to_contain_text("promote")

    answer = in_thread(chat(console.url, "hello again"))
    assert answer["metadata"]["model_version"] == "m-0100"
    assert r.hget(keys.exchange(answer["threadId"], answer["metadata"]["exchange_id"]), "model") == "echo-next"
    entry = audit.recent(r, target="model:")[0]
    assert (entry.who, entry.action, entry.target) == ("alice", "promote", "model:m-0100")

    page.locator("#rollback-form input[name=confirm]").check()
    page.locator("#rollback-form button").click()
    expect(page.locator("#in-service")).to_have_text("base")
    assert in_thread(chat(console.url, "and now?"))["metadata"]["model_version"] == "base"
    assert [e.action for e in audit.recent(r, target="model:")] == ["rollback", "promote"]


def test_a_rejected_version_needs_force_and_a_missing_confirmation_is_refused(console: Console, redis_db: RedisServer) -> None:
    r = redis_db.client
    registry.add(r, model_version("m-0200", "echo-rejected", status="rejected", decision={"reason": "no better"}, base_model=console.base))
    with http(console.url, "alice") as alice:
        token = csrf_of(alice)
        no_confirm = alice.post("/admin/models/promote", data={"version": "m-0200", "csrf": token})
        assert no_confirm.status_code == 400 and "confirm" in no_confirm.text
        unforced = alice.post("/admin/models/promote", data={"version": "m-0200", "confirm": "yes", "csrf": token})
        assert unforced.status_code == 409 and "rejected" in unforced.text
        assert r.get(keys.active_version()) is None and audit.recent(r) == []
        bad = alice.post("/admin/models/promote", data={"version": "../x", "confirm": "yes", "csrf": token})
        assert bad.status_code == 400
        forced = alice.post("/admin/models/promote", data={"version": "m-0200", "confirm": "yes", "force": "yes", "csrf": token})
        assert forced.status_code == 303
    assert r.get(keys.active_version()) == "m-0200"
    assert "past the gate" in audit.recent(r)[0].detail


def test_run_now_sets_the_request_and_the_page_follows_the_run_to_its_end(console: Console, redis_db: RedisServer, browser: Browser, contexts: list[BrowserContext]) -> None:
    """The run itself is played by the test with the job's own progress calls (feedback/progress.py)
    and run record: a real training run takes minutes."""
    r = redis_db.client
    page = open_page(log_in(browser, contexts, console, "alice"), console, "/admin/runs")
    expect(page.locator('#progress [data-field="status"]')).to_have_text("no run in progress")
    page.locator("#run-now button").click()
    expect(page.locator("#requested")).to_contain_text("Requested by alice")
    request = json.loads(r.get(keys.retrain_request()) or "{}")
    assert request["by"] == "alice"
    expect(page.locator("table.audit")).to_contain_text("run_now")

    # The schedule takes the request and the job reports, as `chatbot up` and `chatbot retrain` do.
    assert progress.take_request(r) is not None
    started = time.time()
    progress.start(r, "run-1")
    progress.step(r, "train")
    progress.train_step(r, 3, 10, 1.25)
    expect(page.locator('#progress [data-field="train"]')).to_have_text("3 / 10")  # polled, no reload
    expect(page.locator('#progress [data-field="step"]')).to_have_text("train")
    progress.train_step(r, 10, 10, 0.5)
    expect(page.locator('#progress [data-field="loss"]')).to_have_text("0.5000")
    progress.finish(r, "promoted")
    runs.record(r, runs.RetrainRun("promoted", "win rate 70%", 40, "ds-x", "m-x", {}, started, time.time() - started))
    expect(page.locator("table.runs tbody tr").first).to_contain_text("win rate 70%")  # the page reloaded with it
    expect(page.locator('#progress [data-field="status"]')).to_have_text("promoted")

    with http(console.url, "alice") as alice:
        status = alice.get("/admin/runs/progress.json").json()
    assert status["progress"]["status"] == "promoted" and status["progress"]["train_steps"] == 10


def test_a_dataset_downloads_as_trl_rows_and_names_cannot_reach_other_files(console: Console, redis_db: RedisServer, cleanup_datasets: None) -> None:
    version = build_dataset(redis_db, console.datasets)
    card = json.loads((console.datasets / version / "card.json").read_text())
    with http(console.url, "alice") as alice:
        token = {"csrf": csrf_of(alice, "/admin/datasets")}
        rows: dict[str, list[Any]] = {}
        for split in ("kto_train", "kto_test", "dpo_train", "dpo_test"):
            got = alice.post(f"/admin/datasets/{version}/{split}.jsonl", data=token)
            if card["counts"][split] == 0:  # not offered (test_an_empty_split_is_not_offered_for_download)
                assert got.status_code == 404
                rows[split] = []
                continue
            assert got.status_code == 200 and got.headers["content-type"].startswith("application/x-ndjson")
            rows[split] = [json.loads(line) for line in got.text.splitlines()]
            assert len(rows[split]) == card["counts"][split]
        kto = rows["kto_train"] + rows["kto_test"]
        dpo = rows["dpo_train"] + rows["dpo_test"]
        assert kto and dpo
        for row in kto:
            assert set(row) == {"prompt", "completion", "label"} and isinstance(row["label"], bool)
            assert row["prompt"][-1]["role"] == "user" and row["completion"][0]["role"] == "assistant"
        for row in dpo:
            assert set(row) == {"prompt", "chosen", "rejected"}
            assert row["chosen"][0]["content"] == "Short." and row["rejected"][0]["content"] == "Long and wrong, sadly."
        parquet = alice.post(f"/admin/datasets/{version}/kto_train.parquet", data=token)
        assert parquet.status_code == 200 and parquet.content == (console.datasets / version / "parquet" / "kto_train.parquet").read_bytes()

        # Only a listed version's four splits: nothing else on the disk can be named.
        (console.datasets / "shards").mkdir(exist_ok=True)
        refused = {400, 404, 405}  # 400: not a split or version name; 404: no such listed version; 405: no such POST route (a '/' in it)
        for path, status in {
            f"/admin/datasets/{version}/passwd.jsonl": {400},
            f"/admin/datasets/{version}/..%2F..%2Fcard.jsonl": refused,
            f"/admin/datasets/{version}/..%2Fcard.json%00.jsonl": refused,
            "/admin/datasets/..%2F..%2Fetc/kto_train.jsonl": refused,
            "/admin/datasets/.hidden/kto_train.jsonl": {400},
            "/admin/datasets/shards/kto_train.jsonl": {404},
            "/admin/datasets/v-unknown/kto_train.parquet": {404},
        }.items():
            got = alice.post(path, data=token)
            assert got.status_code in status and b"kto" not in got.content[:1] and "prompt" not in got.text, path
        page = alice.get("/admin/datasets").text
        assert version in page and str(card["counts"]["kto_train"]) in page
    downloads = [e for e in audit.recent(redis_db.client) if e.action == "download_dataset"]
    assert len(downloads) == 1 + sum(card["counts"][s] > 0 for s in ("kto_train", "kto_test", "dpo_train", "dpo_test")) and downloads[0].target == f"dataset:{version}"


def test_the_review_queue_filters_pages_and_keeps_the_marks(console: Console, redis_db: RedisServer, browser: Browser, contexts: list[BrowserContext]) -> None:
    r = redis_db.client
    now = time.time()

    async def seed() -> dict[str, str]:
        ar = connect(redis_db.url)
        try:
            earlier: dict[str, Any] = {"model_version": "m-7", "created_at": now - 3 * DAY, "rated_at": now - 3 * DAY}
            return {
                "bob-wrong": await seed_exchange(ar, thread="rq-1", user="bob", question="What is 2+2?", answer="5", value=0, comment="math is off", reasons=["wrong"]),
                "carol-long": await seed_exchange(ar, thread="rq-2", user="carol", question="Hi?", answer="Hello " * 40, value=0, reasons=["too_long"], **earlier),
                "bob-liked": await seed_exchange(ar, thread="rq-1", user="bob", question="And 3+3?", answer="6", value=1),
            }
        finally:
            await ar.aclose()

    ids = in_thread(seed())
    page = open_page(log_in(browser, contexts, console, "alice"), console, "/admin/review")
    rows = page.locator("table.review tbody tr")
    expect(rows).to_have_count(2)  # the thumbs down only
    expect(page.locator(f"#item-{ids['bob-wrong']}")).to_contain_text("math is off")

    # Reasons as the chat labels them (feedback/rating.py's one mapping), not their codes.
    expect(page.locator(f"#item-{ids['carol-long']} .tag")).to_have_text("Too long")
    expect(page.locator(f"#item-{ids['bob-wrong']} .tag")).to_have_text("Wrong")
    page.locator("select[name=reason]").select_option("too_long")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(page.locator(f"#item-{ids['carol-long']}")).to_be_visible()
    open_page(page, console, "/admin/review?user=bob")
    expect(rows).to_have_count(1)
    expect(page.locator(f"#item-{ids['bob-wrong']}")).to_be_visible()
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 3 * DAY))
    open_page(page, console, f"/admin/review?since={day}&until={day}")
    expect(page.locator(f"#item-{ids['carol-long']}")).to_be_visible()
    expect(rows).to_have_count(1)
    open_page(page, console, "/admin/review?model=m-7")
    expect(rows).to_have_count(1)

    open_page(page, console, "/admin/review")
    page.locator(f"#item-{ids['bob-wrong']} input[name=id]").check()
    page.get_by_role("button", name="Mark selected reviewed").click()
    expect(rows).to_have_count(1)  # open ones only, by default
    expect(page.locator(f"#item-{ids['carol-long']}")).to_be_visible()
    assert json.loads(r.hget(keys.reviewed(), ids["bob-wrong"]) or "{}")["by"] == "alice"
    open_page(page, console, "/admin/review?status=reviewed")
    expect(page.locator(f"#item-{ids['bob-wrong']}")).to_contain_text("alice")
    expect(page.locator("table.audit")).to_contain_text("mark_reviewed")

    with http(console.url, "alice") as alice:
        for bad in ("reason=nope", "user=%20x%3A", "model=..%2F", "since=yesterday", "page=0", "page=x", "status=maybe", "prompt=1.0%3B0"):
            assert alice.get(f"/admin/review?{bad}").status_code == 400, bad


def test_viewing_another_users_conversation_is_audited_each_time(console: Console, redis_db: RedisServer) -> None:
    r = redis_db.client

    async def seed() -> None:
        ar = connect(redis_db.url)
        try:
            await seed_exchange(ar, thread="bobs", user="bob", question="my private question", answer="an answer", value=0)
            await seed_exchange(ar, thread="alices", user="alice", question="her own", answer="an answer", value=1)
        finally:
            await ar.aclose()

    in_thread(seed())
    with http(console.url, "alice") as alice:
        for _ in range(2):
            got = alice.get("/admin/review/thread/bobs")
            assert got.status_code == 200 and "my private question" in got.text
        assert alice.get("/admin/review/thread/alices").status_code == 200  # her own: not another user's
        assert alice.get("/admin/review/thread/nothing-here").status_code == 404
        assert alice.get("/admin/review/thread/bad%3Aid").status_code == 400
        page = alice.get("/admin/review/thread/bobs").text
    views = [e for e in audit.recent(r) if e.action == "view_conversation"]
    assert [(e.who, e.target) for e in views] == [("alice", "thread:bobs")] * 3
    assert "view_conversation" in page  # shown on the conversation's own page


def test_an_experiment_starts_and_stops_from_the_console(console: Console, redis_db: RedisServer) -> None:
    r = redis_db.client
    publish_shipped(r)
    with http(console.url, "alice") as alice:
        token = csrf_of(alice, "/admin/experiments")
        plan = {"policy": "fixed", "min_rated": "20", "max_rated": "500", "alpha": "0.05", "user_cap": "10", "csrf": token}
        assert alice.post("/admin/experiments/start", data={**plan, "arm": ["1.0.0"]}).status_code == 400
        assert alice.post("/admin/experiments/start", data={**plan, "arm": ["1.0.0", "9.9.9"]}).status_code == 409  # not published
        assert alice.post("/admin/experiments/start", data={**plan, "min_rated": "many", "arm": ["1.0.0", "1.1.0"]}).status_code == 400
        assert experiments.running(r, "assistant") is None
        started = alice.post("/admin/experiments/start", data={**plan, "arm": ["1.0.0", "1.1.0"]})
        assert started.status_code == 303
        exp = experiments.running(r, "assistant")
        assert exp is not None and exp.arms == ("1.0.0", "1.1.0") and exp.min_rated == 20 and exp.model_version == "base"
        assert alice.post("/admin/experiments/start", data={**plan, "arm": ["1.0.0", "1.1.0"]}).status_code == 409  # one at a time
        page = alice.get("/admin/experiments").text
        assert exp.id in page and "Not enough data yet" in page
        assert alice.post("/admin/experiments/stop", data={"csrf": token}).status_code == 400  # not confirmed
        assert alice.post("/admin/experiments/stop", data={"confirm": "yes", "csrf": token}).status_code == 303
        assert experiments.running(r, "assistant") is None
        page = alice.get("/admin/experiments").text
        assert "Earlier experiments" in page and exp.id in page and "stopped" in page
    assert [e.action for e in audit.recent(r, target="experiment:")] == ["experiment_stop", "experiment_start"]


SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:tmp|home|work|root|var|srv|opt|usr|data)/")


def test_no_console_page_shows_a_server_path(console: Console, redis_db: RedisServer, cleanup_datasets: None) -> None:
    """Models by their names and versions ("trained from SmolLM2-135M-Instruct"), files under
    DATA_DIR: what the registry and the settings hold as paths (the model's directory, the
    dead-letter file, the datasets' folder) is never shown as one."""
    seed_history(redis_db)
    version = build_dataset(redis_db, console.datasets)
    r = redis_db.client
    default_model = console.data / "default-model"
    r.hset(keys.model_version("m-0002"), "base_model", str(default_model))  # as the job registers it: the configured model
    spool = Spool(console.data.resolve() / "spool" / "writes.jsonl")
    spool.dead_letter({"op": "rate", "op_id": "op-1"}, "WRONGTYPE Operation against a key holding the wrong kind of value")
    pages = [*PAGES, "/admin/review/thread/hist-1", f"/admin/experiments?id={experiments.history(r, 'assistant')[0]}", "/admin/review?page=0"]
    try:
        with http(console.url, "alice") as alice:
            seen = {path: alice.get(path).text for path in pages}
            r.delete(keys.active_model(), keys.active_version())  # the configured model in service
            seen["/admin (base)"] = alice.get("/admin").text
            seen["/admin/models (base)"] = alice.get("/admin/models").text
    finally:
        spool.dead_path.unlink()
    for path, text in seen.items():
        assert str(console.data) not in text and str(console.data.resolve()) not in text, path
        assert not SERVER_PATH.search(html.unescape(text)), (path, SERVER_PATH.search(html.unescape(text)))
    assert "trained from SmolLM2-135M-Instruct" in seen["/admin"] and "trained from SmolLM2-135M-Instruct" in seen["/admin/models"]
    assert "the configured model, SmolLM2-135M-Instruct" in seen["/admin (base)"] and "the configured model, SmolLM2-135M-Instruct" in seen["/admin/models (base)"]
    assert "DATA_DIR/spool/writes.dead.jsonl" in seen["/admin"] and "under DATA_DIR/datasets" in seen["/admin/datasets"]
    assert version in seen["/admin/datasets"]


def test_experiments_started_and_stopped_with_the_cli_are_in_the_console(console: Console, redis_db: RedisServer) -> None:
    """The console lists every start and stop, whoever made it: the CLI's are recorded as its OS user's."""
    import getpass

    from launcher.process import child_env
    from support.services import run_cli

    publish_shipped(redis_db.client)
    env = child_env(REDIS_URL=redis_db.url)
    started = run_cli("prompt", "experiment", "start", "--arm", "1.0.0", "--arm", "1.1.0", env=env)
    assert started.returncode == 0, started.stderr
    exp = experiments.running(redis_db.client, "assistant")
    assert exp is not None
    stopped = run_cli("prompt", "experiment", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    cli = f"{getpass.getuser()} (CLI)"
    entries = audit.recent(redis_db.client, target=f"experiment:{exp.id}")
    assert [(e.who, e.action) for e in entries] == [(cli, "experiment_stop"), (cli, "experiment_start")]
    assert entries[1].detail == "1.0.0 vs 1.1.0, fixed split, model base"
    with http(console.url, "alice") as alice:
        page = alice.get("/admin/experiments").text
    listed = page.split("Starts, looks and stops")[1]
    assert listed.count(html.escape(cli)) == 2 and "experiment_start" in listed and "experiment_stop" in listed and exp.id in listed


def test_models_promoted_and_rolled_back_with_the_cli_are_in_the_console(console: Console, redis_db: RedisServer, standin: str, tmp_path: Path) -> None:
    """`chatbot model promote/rollback` are recorded as the console's are, as the OS user's."""
    import getpass

    from launcher.process import child_env
    from support.services import run_cli

    r = redis_db.client
    registry.add(r, model_version("m-0400", "echo-cli", base_model=console.base))
    env = child_env(REDIS_URL=redis_db.url, LLM_BASE_URL=f"{standin}/v1", LLM_MODEL=console.base, DATA_DIR=str(tmp_path))  # the console's model
    promoted = run_cli("model", "promote", "m-0400", env=env)
    assert promoted.returncode == 0, promoted.stderr
    rolled_back = run_cli("model", "rollback", env=env)
    assert rolled_back.returncode == 0, rolled_back.stderr
    cli = f"{getpass.getuser()} (CLI)"
    entries = audit.recent(r, target="model:m-0400")
    assert [(e.who, e.action, e.detail) for e in entries] == [(cli, "rollback", "retired; base in service"), (cli, "promote", "in service instead of base")]
    with http(console.url, "alice") as alice:
        page = alice.get("/admin/models").text
    listed = page.split('class="audit"')[1]
    assert listed.count(html.escape(cli)) == 2 and "promote" in listed and "rollback" in listed and "m-0400" in listed


def test_operators_find_the_console_in_the_chats_user_menu(console: Console, redis_db: RedisServer, browser: Browser, contexts: list[BrowserContext]) -> None:
    bob = browser_log_in(browser, contexts, console.app, "bob")
    bob.locator("#user-nav-button").click()
    expect(bob.get_by_role("menuitem").last).to_be_visible()  # the menu is open (its last item: log out)
    expect(bob.locator("#console-link")).to_have_count(0)  # not an operator: no link
    with http(console.url, "bob") as client:
        assert client.get("/admin/operator.json").json() == {"operator": False}
    with http(console.url, None) as anonymous:
        assert anonymous.get("/admin/operator.json").status_code == 401

    page = log_in(browser, contexts, console, "alice")
    page.locator("#user-nav-button").click()
    link = page.locator("#console-link")
    expect(link).to_have_text("Operator console")
    shots = os.environ.get("CONSOLE_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / "chat-user-menu.png"))
    link.click()
    expect(page).to_have_url(f"{console.url}/admin")
    expect(page.locator("#served-model")).to_be_visible()


def test_the_console_routes_win_over_the_chat_ui_and_static_files_are_served(console: Console) -> None:
    with http(console.url, None) as anonymous:
        css = anonymous.get("/admin/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert anonymous.get("/admin/static/..%2Fapp.py").status_code == 404
        assert anonymous.get("/admin/no-such-page").status_code == 404  # not the chat's single-page app
        assert anonymous.get("/admin/static/nothing.js").status_code == 404
    with http(console.url, "alice") as alice:
        page = alice.get("/admin")
        assert page.status_code == 200 and "<title>Overview" in page.text  # not Chainlit's single-page app
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert alice.get("/admin/").headers["location"] == "/admin"


def test_the_progress_feed_and_pages_need_no_scan(console: Console, redis_db: RedisServer) -> None:
    """The pages read aggregates and indexes: none issues SCAN or KEYS (the monitor sees every
    command the console sends while the pages load)."""
    r = redis_db.client
    seed_history(redis_db)
    commands: list[str] = []
    with r.monitor() as monitor, http(console.url, "alice") as alice:
        for path in (*PAGES, "/admin/runs/progress.json", "/admin/review/thread/hist-1"):
            assert alice.get(path).status_code == 200, path
        marker = "console-test-end"
        r.echo(marker)
        deadline = time.monotonic() + 30
        for event in monitor.listen():
            command = str(event.get("command", ""))
            if marker in command or time.monotonic() > deadline:
                break
            commands.append(command.split(" ")[0].upper())
    assert commands and not {"SCAN", "KEYS"} & set(commands), sorted(set(commands))


# --- charts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span_s", "label"),
    [(10 * 3600, r"^(\w{3} \d{2} )?\d{2}:00$"), (5 * DAY, r"^\w{3} \d{2}( \d{4})?$"), (45 * DAY, r"^\w{3} \d{2}( \d{4})?$"), (400 * DAY, r"^\w{3} \d{4}$"), (6 * 365 * DAY, r"^\d{4}$")],
)
def test_the_time_axis_ticks_fit_the_span(span_s: float, label: str) -> None:
    """Hours for a day, days for a week, weeks for a few months, months for a year, years beyond."""
    t0 = 1_735_000_000.0
    ticks = charts.time_ticks(t0, t0 + span_s)
    assert 2 <= len(ticks) <= charts.MAX_TICKS, ticks
    assert all(t0 <= t <= t0 + span_s for t, _ in ticks)
    assert all(re.match(label, text) for _, text in ticks), ticks
    steps = {round(b[0] - a[0]) for a, b in itertools.pairwise(ticks)}
    if span_s == 45 * DAY:
        assert steps == {7 * int(DAY)}  # weeks
        assert sum(bool(re.search(r"\d{4}$", text)) for _, text in ticks) == 1  # the year where it changes (Dec 2024 -> Jan 2025)


def test_an_approval_chart_has_a_band_a_line_and_counts_per_group_and_escapes_names() -> None:
    p = stats.point
    svg = charts.approval_chart({"1.0.0": [p(0, 3, 4), p(3600, 5, 10)], "<b>x</b>": [p(0, 1, 1)]}, 3600, "Approval")
    assert svg.count('class="band"') == 2 and svg.count('class="line"') == 2
    assert '>4</text>' in svg and '>10</text>' in svg and '>1</text>' in svg
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    assert "no rated answers" in charts.approval_chart({}, 3600, "Approval")


# --- GETs change nothing; views and downloads are recorded only when the operator makes them ------


def decidable_experiment(redis_db: RedisServer) -> experiments.Experiment:
    """A running experiment whose next look decides it (max_rated reached), with auto-serve."""
    r = redis_db.client
    publish_shipped(r)
    prompts.serve(r, "assistant", "1.0.0")
    exp = experiments.start(r, "assistant", ["1.0.0", "1.1.0"], "base", min_rated=10, max_rated=10, auto_serve=True)
    in_thread(seed_arms(redis_db.url, exp, 10, {"1.0.0": 0.1, "1.1.0": 1.0}))
    return exp


def seed_bobs_thread(redis_db: RedisServer) -> None:
    async def seed() -> None:
        ar = connect(redis_db.url)
        try:
            await seed_exchange(ar, thread="bobs", user="bob", question="my private question", answer="an answer", value=0)
        finally:
            await ar.aclose()

    in_thread(seed())


def test_a_page_of_another_origin_makes_the_console_record_and_change_nothing(
    console: Console, redis_db: RedisServer, browser: Browser, contexts: list[BrowserContext], other_origin: tuple[str, type[OtherPage]], cleanup_datasets: None
) -> None:
    """alice (an operator) is logged in in chromium; a page on another port of the same host embeds
    a conversation, a dataset download and the experiments page (with an experiment its look would
    decide) as images and frames, and links to the conversation. Nothing is recorded or changed;
    her own clicks in the console still are."""
    seed_bobs_thread(redis_db)
    version = build_dataset(redis_db, console.datasets)
    exp = decidable_experiment(redis_db)
    r = redis_db.client
    page = log_in(browser, contexts, console, "alice")
    origin, page_class = other_origin
    targets = ["/admin/review/thread/bobs", f"/admin/datasets/{version}/kto_train.jsonl", f"/admin/datasets/{version}/kto_train.parquet", "/admin/experiments"]
    embeds = "".join(f'<img src="{console.url}{t}"><iframe src="{console.url}{t}"></iframe>' for t in targets)
    page_class.html = f'<html><body>{embeds}<a id="lure" href="{console.url}/admin/review/thread/bobs">see</a></body></html>'.encode()
    before = keyspace(redis_db.url)

    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url) if "/admin/" in req.url else None)
    page.goto(origin)  # returns once the page and its images and frames have loaded (or failed)
    assert {f"{console.url}{t}" for t in targets} <= set(seen), seen  # every embed was requested, with her cookie
    assert audit.recent(r) == [] and experiments.running(r, "assistant") is not None
    assert keyspace(redis_db.url) == before
    page.locator("#lure").click()  # a link from another site: a page offering the link, nothing shown
    expect(page.locator("#open-conversation")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("my private question")
    assert keyspace(redis_db.url) == before

    # Her own navigation from the console is recorded: the link on that page, and the queue's link.
    page.locator("#open-conversation").click()
    expect(page.locator("ol.conversation")).to_contain_text("my private question")
    open_page(page, console, "/admin/review?user=bob")
    page.locator("table.review tr", has_text="my private question").locator("a", has_text="conversation").click()
    expect(page.locator("ol.conversation")).to_contain_text("my private question")
    assert [(e.who, e.action, e.target) for e in audit.recent(r)] == [("alice", "view_conversation", "thread:bobs")] * 2

    # Her own visit to the experiments page decides nothing either; "Look now" does.
    before = keyspace(redis_db.url)
    open_page(page, console, "/admin/experiments")
    expect(page.locator(f"#experiment-{exp.id}")).to_contain_text("Not enough data yet")
    assert keyspace(redis_db.url) == before
    page.get_by_role("button", name="Look now").click()
    expect(page.locator(f"#experiment-{exp.id}")).to_contain_text("Winner: 1.1.0")
    assert prompts.served(r, "assistant") == "1.1.0"  # auto-serve
    entry = audit.recent(r, target=f"experiment:{exp.id}")[0]
    assert (entry.who, entry.action) == ("alice", "experiment_decided") and "1.1.0 served" in entry.detail


def test_the_schedule_of_chatbot_up_decides_an_experiment_and_the_audit_names_it(console: Console, redis_db: RedisServer) -> None:
    """The look that ends an experiment without anyone: `chatbot up`'s (launcher/experiment_watch.py)."""
    from launcher.experiment_watch import ExperimentWatch

    exp = decidable_experiment(redis_db)
    r = redis_db.client
    with http(console.url, "alice") as alice:
        before = keyspace(redis_db.url)
        for _ in range(2):
            assert "Not enough data yet" in alice.get("/admin/experiments").text
            assert alice.get(f"/admin/experiments?id={exp.id}").status_code == 200
        assert keyspace(redis_db.url) == before
        assert ExperimentWatch(redis_db.url, "assistant", interval_s=60).look() == "winner"
        page = alice.get("/admin/experiments").text
    assert "Winner: 1.1.0" in page and experiments.running(r, "assistant") is None and prompts.served(r, "assistant") == "1.1.0"
    entry = audit.recent(r, target="experiment:")[0]
    assert (entry.who, entry.action, entry.target) == ("chatbot up", "experiment_decided", f"experiment:{exp.id}")


def test_an_empty_split_is_not_offered_for_download(console: Console, redis_db: RedisServer, cleanup_datasets: None) -> None:
    """A young deployment has no DPO pairs: the page says so instead of offering an empty JSONL
    (which load_dataset refuses), also for a version materialized when empty splits got a file."""
    import pyarrow.parquet as pq

    from support.retrain import seed_ratings
    from training.collect import collect
    from training.config import RetrainConfig
    from training.dataset import build, load

    with ThreadPoolExecutor(1) as pool:
        pool.submit(seed_ratings, redis_db.url, 24).result()
    version = build(collect(redis_db.client, None, full=True), RetrainConfig(min_ratings=2, max_user_share=1.0), console.datasets, None, progress=False).version
    load(console.datasets, version)
    card = json.loads((console.datasets / version / "card.json").read_text())
    assert card["counts"]["dpo_train"] == card["counts"]["dpo_test"] == 0 < card["counts"]["kto_train"]
    parquet = console.datasets / version / "parquet"
    assert not (parquet / "dpo_train.parquet").exists()
    pq.write_table(pq.read_table(parquet / "kto_test.parquet").slice(0, 0), parquet / "dpo_test.parquet")  # as an older release left it
    with http(console.url, "alice") as alice:
        page = alice.get("/admin/datasets").text
        section = page.split(f'id="dataset-{version}"')[1].split("</table>")[0]  # the splits table
        assert section.count("no pairs yet") == 2 and f"/admin/datasets/{version}/kto_train.jsonl" in section
        assert f"{version}/dpo_train." not in section and f"{version}/dpo_test." not in section
        token = {"csrf": csrf_of(alice, "/admin/datasets")}
        for split in ("dpo_train", "dpo_test"):
            for kind in ("jsonl", "parquet"):
                got = alice.post(f"/admin/datasets/{version}/{split}.{kind}", data=token)
                assert got.status_code == 404 and "no pairs yet" in got.text and not got.headers.get("content-disposition"), (split, kind)


def test_every_console_get_writes_nothing(console: Console, redis_db: RedisServer, cleanup_datasets: None) -> None:
    """Every page, feed and refused address, as an operator's script would fetch them (no fetch
    metadata: the conversation view is then recorded, and only that)."""
    seed_history(redis_db)
    version = build_dataset(redis_db, console.datasets)
    with http(console.url, "alice") as alice:
        alice.get("/admin")  # (her first request: Chainlit's user record exists from the login)
        before = keyspace(redis_db.url)
        paths = [*PAGES, "/admin/runs/progress.json", "/admin/review?status=all&page=2", "/admin/experiments?id=nope", "/admin/no-such",
                 f"/admin/datasets/{version}/kto_train.jsonl", f"/admin/datasets/{version}/kto_train.parquet"]  # fmt: skip
        for path in paths:
            got = alice.get(path)
            assert got.status_code in (200, 404, 405), (path, got.status_code)
        assert keyspace(redis_db.url) == before
        # An <img> of the conversation from the console's own origin: not a navigation, not recorded.
        img = alice.get("/admin/review/thread/hist-1", headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"})
        assert img.status_code == 200 and "Open the conversation" in img.text
        assert keyspace(redis_db.url) == before


# --- input: every parameter has a schema ------------------------------------------------------------

LONG = "x" * 5000
NUMBERS = ["²", "³", "¹", "①", "١٢", "１", "-1", "0", "99999999999999999999", "1e3", "1_0", "+1", " 1", "nan", "inf", LONG]
NAMES = ["²", "①", "１", "\x00", "../x", "a:b", "{fb}", "a b", LONG]  # ids, versions, choices
DATES = [*NAMES, "0", "-1", "99999999999999999999", "2025-02-30", "２０２５-01-01", "2025-1-1", "2025-01-01T00:00"]


def test_hostile_parameters_get_a_400_naming_them_and_write_nothing(console: Console, redis_db: RedisServer) -> None:
    """Every parameter of every console route, query, path and form, with what each must refuse."""
    r = redis_db.client
    publish_shipped(r)
    registry.add(r, model_version("m-0300", "echo-m300"))
    start = {"arm": ["1.0.0", "1.1.0"], "policy": "fixed", "min_rated": "10", "max_rated": "20", "alpha": "0.05", "user_cap": "5"}
    gets: dict[str, list[str]] = {
        "/admin/review?page={}": [v for v in NUMBERS if v.strip()] + ["401"],
        **{f"/admin/review?{name}={{}}": NAMES for name in ("reason", "prompt", "model", "status")},
        "/admin/review?user={}": [v for v in NAMES if v not in ("²", "①", "１")] + ["-x"],  # names may be in any script
        "/admin/review?since={}": DATES, "/admin/review?until={}": DATES,
        "/admin/review?nope={}": ["1"], "/admin/experiments?id={}": NAMES, "/admin/review/thread/{}": [v for v in NAMES if v != "../x"],
    }  # fmt: skip
    forms: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = {
        ("/admin/models/promote", "version"): ({"confirm": "yes"}, ["", *NAMES]),
        ("/admin/models/promote", "confirm"): ({"version": "m-0300"}, ["no", "YES", *NAMES]),
        ("/admin/models/promote", "force"): ({"version": "m-0300", "confirm": "yes"}, ["true", *NAMES]),
        ("/admin/models/rollback", "confirm"): ({}, ["1", *NAMES]),
        ("/admin/review/mark", "id"): ({}, ["t-1", "t-1/a:1", *NAMES]),
        ("/admin/review/mark", "back"): ({"id": "t-1/a-1"}, [LONG]),
        ("/admin/experiments/stop", "confirm"): ({}, ["on", *NAMES]),
        ("/admin/runs/now", "nope"): ({}, ["1"]),
        ("/admin/experiments/look", "nope"): ({}, ["1"]),
        ("/admin/experiments/start", "arm"): ({k: v for k, v in start.items() if k != "arm"}, NAMES),
        ("/admin/experiments/start", "policy"): ({k: v for k, v in start.items() if k != "policy"}, NAMES),  # (blank: the default)
        ("/admin/experiments/start", "auto_serve"): ({k: v for k, v in start.items() if k != "auto_serve"}, ["on", *NAMES]),
        **{("/admin/experiments/start", n): ({k: v for k, v in start.items() if k != n}, ["", "5", "0.5", *NUMBERS]) for n in ("min_rated", "max_rated")},
        ("/admin/experiments/start", "user_cap"): ({k: v for k, v in start.items() if k != "user_cap"}, ["", "0.5", *NUMBERS]),
        ("/admin/experiments/start", "alpha"): ({k: v for k, v in start.items() if k != "alpha"}, ["", "0.5", ".05", "0,05", *NUMBERS]),
    }  # fmt: skip
    with http(console.url, "alice") as alice:
        token = csrf_of(alice)
        before = keyspace(redis_db.url)
        answers: list[tuple[str, int, str]] = []
        for path, values in gets.items():
            for value in values:
                got = alice.get(path.format(urllib.parse.quote(value, safe="")))
                answers.append((path.format(value[:12]), got.status_code, got.text))
        for (path, name), (rest, values) in forms.items():
            for value in values:
                got = alice.post(path, data={**rest, name: value, "csrf": token})
                answers.append((f"POST {path} {name}={value[:12]!r}", got.status_code, got.text))
        for value in (v for v in NAMES if v != "../x"):  # (a '/' in it: no such route)
            quoted = urllib.parse.quote(value, safe="")
            for path in (f"/admin/datasets/{quoted}/kto_train.jsonl", f"/admin/datasets/v1/{quoted}.parquet"):
                got = alice.post(path, data={"csrf": token})
                answers.append((f"POST {path[:60]}", got.status_code, got.text))
    wrong = [(what, status) for what, status, _ in answers if status != 400]
    assert not wrong, wrong
    assert keyspace(redis_db.url) == before
    unclear = [(what, text[:200]) for what, _, text in answers if "Invalid input" not in text]
    assert not unclear, unclear[:5]
    assert r.get(keys.active_version()) is None and experiments.running(r, "assistant") is None and audit.recent(r) == []


def test_the_review_page_refuses_superscript_page_numbers_with_a_400_on_the_console_page(console: Console, redis_db: RedisServer) -> None:
    with http(console.url, "alice") as alice:
        for value in ("²", "³", "¹", "①"):
            got = alice.get(f"/admin/review?page={urllib.parse.quote(value)}")
            assert got.status_code == 400, (value, got.status_code)
            assert "page: must be a whole number" in html.unescape(got.text) and 'aria-current="page"' in got.text  # the console's own error page
        assert alice.get("/admin/review?page=2&reason=&user=").status_code == 200  # blank filters are absent ones


def test_the_error_page_links_back_only_to_this_consoles_own_pages(console: Console, redis_db: RedisServer) -> None:
    host = console.url.removeprefix("http://")
    port = int(host.rsplit(":", 1)[1])
    with http(console.url, "alice") as alice:

        def back(referer: str) -> str:
            got = alice.get("/admin/review?page=0", headers={"Referer": referer})
            assert got.status_code == 400
            found = re.search(r'<a href="([^"]*)">Back</a>', got.text)
            assert found, got.text[-500:]
            return html.unescape(found.group(1))

        assert back("http://evil.invalid/admin/phish") == "/admin"
        assert back(f"http://127.0.0.1:{port + 1}/admin/models") == "/admin"  # another port of the same host
        assert back(f"https://{host}/admin/models") == "/admin"  # another scheme
        assert back(f"{console.url}/") == "/admin"  # the chat, not the console
        assert back(f"{console.url}/adminx") == "/admin"
        assert back("/admin/models") == "/admin"  # no origin at all
        assert back(f"{console.url}/admin/models") == "/admin/models"
        assert back(f"{console.url}/admin/review?status=all&page=2") == "/admin/review?status=all&page=2"


# --- the audit ---------------------------------------------------------------------------------------


def test_the_audit_finds_a_targets_entries_behind_many_newer_ones(console: Console, redis_db: RedisServer) -> None:
    """A model promotion and a conversation view, then 12,000 views of other conversations: the
    models page and the conversation page still list them (a read of the newest 10,000 would not)."""
    r = redis_db.client
    seed_bobs_thread(redis_db)
    audit.record(r, "alice", "promote", "model:m-old", "in service instead of base")
    audit.record(r, "carol", "view_conversation", "thread:bobs", "owner bob")
    for i in range(12_000):
        audit.record(r, "alice", "view_conversation", f"thread:other-{i}", "owner bob")
    with http(console.url, "alice") as alice:
        assert "m-old" in alice.get("/admin/models").text
        page = alice.get("/admin/review/thread/bobs").text  # (recorded: alice's own view, on top)
    assert "carol" in page
    assert [e.who for e in audit.recent(r, target="thread:bobs")] == ["alice", "carol"]
    assert [e.target for e in audit.recent(r, target="model:")] == ["model:m-old"]
    assert len(audit.recent(r, target="thread:", count=20_000)) == 12_002

    # Trimming the oldest entries drops their index members with them.
    assert audit.trim(r, keep=12_001) == 2  # the promotion and carol's view
    assert audit.recent(r, target="model:") == [] and [e.who for e in audit.recent(r, target="thread:bobs")] == ["alice"]
    assert r.zcard(keys.audit_kind("thread")) == r.xlen(keys.audit()) == 12_001

    # Entries written before the indexes existed (the stream alone) are indexed at the app's start.
    r.xadd(keys.audit(), {"who": "dave", "action": "promote", "target": "model:m-legacy", "detail": "", "ts": "1.0"})
    assert audit.recent(r, target="model:") == []
    audit.reindex(r)
    assert [e.target for e in audit.recent(r, target="model:")] == ["model:m-legacy"]

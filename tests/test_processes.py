"""Several chat processes on one Redis: a thread started through one process is resumed, rated,
regenerated and deleted through another (docs/processes.md says how to run them behind a proxy).

Two real Chainlit app processes, each on its own port and with its own DATA_DIR (so its own
spool), share the test session's Redis, the stand-in model and the settings a login token depends
on (CHAINLIT_AUTH_SECRET, AUTH_USERS: support/services.py's app_env). One browser profile logs in
on process A; its login cookie then opens process B too (cookies are per host, not per port), as
it would behind a proxy that sends the same user to either. What the user sees is asserted on the
page, what was stored through the product's own readers (feedback/). Waiting is Playwright's
auto-waiting and the HTTP answer a click causes, never a sleep.

Helpers and selectors: support/browser.py; besides, the ids Chainlit's history sidebar sets
(`#thread-options`, `#delete-thread`) and the answer element's `.earlier-toggle`/`.earlier-answer`
(bot/ui/public/elements/AnswerInfo.jsx).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect
from redis.asyncio import Redis

from feedback import exchange as exchanges
from feedback import keys
from feedback import rating as ratings
from feedback.connection import connect
from feedback.event import RatingEvent
from feedback.layout import DataLayout
from launcher.process import ServiceGroup
from support.browser import answer_to, log_in, only_exchange, rate, send, thumb
from support.services import AppServer, RedisServer, app_env, start_app

pytestmark = pytest.mark.browser

T = TypeVar("T")


@dataclass
class Process:
    """One chat process: its server and its own data directory (its spool lives there)."""

    app: AppServer
    data: Path

    @property
    def url(self) -> str:
        return self.app.url


@pytest.fixture(scope="module")
def two_processes(redis_server_: RedisServer, standin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    """Processes A and B: same Redis, model and secrets; their own port, DATA_DIR and log."""
    with ExitStack() as stack:
        started = []
        for name in ("a", "b"):
            data = tmp_path_factory.mktemp(f"process-{name}")
            group = stack.enter_context(ServiceGroup(data / "test-logs"))
            started.append(Process(start_app(group, app_env(redis_server_.url, f"{standin}/v1", data), data), data))
        a, b = started
        assert a.url != b.url and DataLayout(a.data).spool != DataLayout(b.data).spool
        yield a, b


def read(redis_url: str, what: Callable[[Redis], Awaitable[T]]) -> T:
    """Run one of the product's async readers on a client and loop of its own (Playwright's sync
    API holds this thread's loop)."""

    async def go() -> T:
        r = connect(redis_url)
        try:
            return await what(r)
        finally:
            await r.aclose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def click_action(page: Page, button: Locator) -> None:
    """Click an action button and wait for the server's answer (it has run the callback)."""
    with page.expect_response(lambda r: r.url.endswith("/project/action")) as response:
        button.click()
    assert response.value.status == 200, response.value.text()


def test_a_thread_from_one_process_is_resumed_rated_regenerated_and_deleted_on_another(
    browser: Browser, contexts: list[BrowserContext], two_processes: tuple[Process, Process], redis_db: RedisServer, standin: str
) -> None:
    a, b = two_processes
    question, follow_up = "where do otters sleep", "and what do they eat"

    # On A: log in, ask, get an answer.
    on_a = log_in(browser, contexts, a.app, "alice")
    send(on_a, question)
    first_id, first = only_exchange(redis_db)
    thread_id = first["thread_id"]
    expect(on_a).to_have_url(f"{a.url}/thread/{thread_id}")

    # On B, in the same browser: A's login cookie opens it (same CHAINLIT_AUTH_SECRET), the thread
    # is in B's history sidebar and resumes there with its messages.
    on_b = on_a.context.new_page()
    on_b.goto(b.url)
    expect(on_b.locator("#chat-input")).to_be_visible()
    entry = on_b.locator(f"#thread-{thread_id}")
    expect(entry).to_have_text(question)
    entry.get_by_role("link").click()
    expect(on_b).to_have_url(f"{b.url}/thread/{thread_id}")
    expect(on_b.locator('[data-step-type="user_message"]')).to_have_text(question)
    answer = answer_to(on_b, question)
    expect(answer).to_have_count(1)
    # B's resume() rebuilt the session from Redis: Regenerate is offered on the latest answer.
    expect(answer.get_by_role("button", name="Regenerate")).to_be_visible()

    # Rated on B: a 👎 with a comment, then a reason on the answer itself (B's session knows it).
    assert rate(on_b, answer, 0, "otters sleep in holts")["feedbackId"] == first_id
    click_action(on_b, answer.get_by_role("button", name="Wrong", exact=True))
    expect(answer.get_by_role("button", name="✓ Wrong", exact=True)).to_be_visible()
    stored = read(redis_db.url, lambda r: ratings.get(r, thread_id, first_id))
    assert stored is not None
    assert (stored["value"], stored["comment"], stored["reasons"], stored["user"]) == (0, "otters sleep in holts", ["wrong"], "alice")

    # Regenerated on B: the answer A wrote is replaced by a new one, the earlier one (rated bad)
    # stays readable under it.
    click_action(on_b, answer.get_by_role("button", name="Regenerate"))
    expect(on_b.locator(f"#step-{first['message_id']}")).to_have_count(0)
    again = answer_to(on_b, question)
    expect(again).to_have_count(1)
    expect(thumb(again, 1, "off")).to_be_enabled()
    expect(again.locator(".earlier-toggle")).to_have_text("Earlier answers (1)")
    again.locator(".earlier-toggle").click()
    expect(again.locator(".earlier-answer").get_by_label("rated bad")).to_be_visible()
    regenerated = httpx.get(f"{standin}/requests").json()[-1]["messages"]

    # The next message on B: the model sees the earlier turn, which B only knows from Redis.
    send(on_b, follow_up)
    sent = httpx.get(f"{standin}/requests").json()[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent[-3:]] == [("user", question), ("assistant", f"You said: {question}"), ("user", follow_up)]

    # In Redis, through the product's readers: A's answer hidden and kept with its rating, B's
    # alternative answering the same user message with the same prompt, then B's next answer.
    thread = read(redis_db.url, lambda r: exchanges.for_thread(r, thread_id))
    assert len(thread) == 3, thread
    old, alternative, follow = thread
    assert old.id == first_id
    assert old.deleted and not alternative.deleted and not follow.deleted
    assert {e.user for e in thread} == {"alice"} and {e.thread_id for e in thread} == {thread_id}
    assert alternative.prompt_message_id == old.prompt_message_id and alternative.messages == old.messages
    assert [m.model_dump() for m in old.messages] == regenerated  # the regenerated prompt is the one A sent
    assert follow.messages[-1].content == follow_up and follow.messages[-2].content == alternative.completion
    assert read(redis_db.url, lambda r: ratings.get(r, thread_id, alternative.id)) is None

    # A reads what B wrote: its history lists the thread, resuming it shows both questions.
    on_a.goto(a.url)
    expect(on_a.locator(f"#thread-{thread_id}")).to_have_text(question)
    on_a.goto(f"{a.url}/thread/{thread_id}")
    expect(on_a.locator('[data-step-type="user_message"]')).to_have_text([question, follow_up])
    expect(answer_to(on_a, question)).to_have_count(1)

    # Deleted on B, from its history sidebar (while A still has the thread open).
    entry = on_b.locator(f"#thread-{thread_id}")
    entry.hover()
    entry.locator("#thread-options").click()
    on_b.locator("#delete-thread").click()
    confirm = on_b.get_by_role("alertdialog").get_by_role("button", name="Confirm")
    with on_b.expect_response(lambda r: r.url.endswith("/project/thread") and r.request.method == "DELETE") as response:
        confirm.click()
    assert response.value.status == 200, response.value.text()
    expect(on_b.get_by_text("Chat deleted")).to_be_visible()
    expect(on_b.locator(f"#thread-{thread_id}")).to_have_count(0)

    # Gone from Redis: answers, rating; the retraining job is told to forget the rating.
    assert read(redis_db.url, lambda r: exchanges.for_thread(r, thread_id)) == []
    assert read(redis_db.url, lambda r: ratings.get(r, thread_id, first_id)) is None
    assert read(redis_db.url, lambda r: exchanges.load(r, thread_id, alternative.id)) is None
    assert not redis_db.client.exists(keys.thread(thread_id))
    entries = cast("list[tuple[str, dict[str, str]]]", redis_db.client.xrange(keys.events(keys.bucket(thread_id))))
    gone = RatingEvent.from_fields(entries[-1][1])
    assert (gone.action, gone.exchange, gone.thread, gone.user) == ("delete", first_id, thread_id, "alice")

    # A no longer lists it, nor resumes it (its open session wrote nothing back on leaving).
    on_a.goto(a.url)
    expect(on_a.locator("#chat-input")).to_be_visible()
    expect(on_a.get_by_text("No threads found")).to_be_visible()
    expect(on_a.locator(f"#thread-{thread_id}")).to_have_count(0)
    on_a.goto(f"{a.url}/thread/{thread_id}")
    expect(on_a.get_by_text("Couldn't resume chat")).to_be_visible()
    assert not redis_db.client.exists(keys.thread(thread_id))

    # Every write went to Redis directly: neither process spooled anything.
    assert not DataLayout(a.data).spool.exists() and not DataLayout(b.data).spool.exists()

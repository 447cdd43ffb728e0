"""The product as a person uses it: a real browser (Debian's chromium, driven by Playwright) on
the real Chainlit app, the stand-in model and a real Redis.

What the user sees is asserted on the page, what was stored is asserted in Redis. Waiting is done
by Playwright's auto-waiting assertions and by waiting for the HTTP answer a click causes (the
server writes Redis before it answers), never by sleeping.

Selectors and the helpers that use them: support/browser.py.
"""

from __future__ import annotations

import json
from typing import cast

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from feedback import exchange as exchanges
from feedback import keys
from support.browser import answer_to, log_in, only_exchange, rate, send, thumb
from support.services import AppServer, RedisServer

pytestmark = pytest.mark.browser


def test_rate_then_find_the_thread_and_rating_in_the_history(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer) -> None:
    page = log_in(browser, contexts, app_server, "alice")
    answer = send(page, "hello from a browser")
    expect(answer.get_by_role("article")).to_have_text("You said: hello from a browser")

    exchange_id, exchange = only_exchange(redis_db)
    assert exchange["user"] == "alice" and exchange["completion"] == "You said: hello from a browser"
    assert rate(page, answer, 1, "short and right")["feedbackId"] == exchange_id  # the run step id
    thread_id = exchange["thread_id"]
    rating = redis_db.client.hgetall(keys.rating(thread_id, exchange_id))
    assert rating["value"] == "1" and rating["comment"] == "short and right" and rating["user"] == "alice"
    assert redis_db.client.hgetall(keys.thread_ratings(thread_id)) == {exchange_id: "1"}

    # The browser is at the thread's address: a reload resumes it from the history in Redis.
    expect(page).to_have_url(f"{app_server.url}/thread/{thread_id}")
    page.reload()
    shows_rated_thread(page, "hello from a browser", "short and right")

    # A new chat: the thread waits in the history sidebar, named after its first message.
    page.goto(app_server.url)
    expect(page.locator("#chat-input")).to_be_visible()
    entry = page.locator(f"#thread-{thread_id}")
    expect(entry).to_have_text("hello from a browser")
    expect(page.locator('[data-step-type="user_message"]')).to_have_count(0)
    entry.get_by_role("link").click()
    expect(page).to_have_url(f"{app_server.url}/thread/{thread_id}")
    shows_rated_thread(page, "hello from a browser", "short and right")
    assert redis_db.client.hgetall(keys.rating(thread_id, exchange_id)) == rating  # looking changed nothing


def shows_rated_thread(page: Page, question: str, comment: str) -> None:
    """A resumed thread: both messages, the thumb already up, and the comment there to edit."""
    expect(page.locator('[data-step-type="user_message"]')).to_have_text(question)
    answer = answer_to(page, question)
    expect(answer).to_have_count(1)
    expect(thumb(answer, 1, "on")).to_be_visible()
    expect(thumb(answer, 0, "off")).to_be_visible()
    answer.locator(".negative-feedback-off + button").click()  # the comment button, shown only with a comment
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("textbox")).to_have_value(comment)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_regenerate_after_thumbs_down_stores_a_rated_pair(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer) -> None:
    page = log_in(browser, contexts, app_server, "alice")
    first = send(page, "pick one")
    first_id, first_exchange = only_exchange(redis_db)
    thread_id = first_exchange["thread_id"]
    rate(page, first, 0, "too terse")
    assert redis_db.client.hget(keys.rating(thread_id, first_id), "value") == "0"

    # A thumbs down puts reason toggles on the answer itself; a click picks one (✓) and stores it.
    with page.expect_response(lambda r: r.url.endswith("/project/action")) as response:
        first.get_by_role("button", name="Unhelpful", exact=True).click()
    assert response.value.status == 200, response.value.text()
    expect(first.get_by_role("button", name="✓ Unhelpful", exact=True)).to_be_visible()
    assert json.loads(cast(str, redis_db.client.hget(keys.rating(thread_id, first_id), "reasons"))) == ["unhelpful"]

    redis_db.client.set(keys.active_model(), "echo-v2")  # the retry is answered by another model
    with page.expect_response(lambda r: r.url.endswith("/project/action")) as response:
        first.get_by_role("button", name="Regenerate").click()
    assert response.value.status == 200, response.value.text()
    # The first answer is replaced on the page by a new, unrated one (same text: same prompt).
    expect(page.locator(f"#step-{first_exchange['message_id']}")).to_have_count(0)
    second = answer_to(page, "pick one")
    expect(second).to_have_count(1)
    expect(thumb(second, 1, "off")).to_be_enabled()
    expect(thumb(second, 0, "off")).to_be_visible()
    answers = exchanges.for_thread_sync(redis_db.client, thread_id)
    same = [e.id for e in answers if e.prompt_message_id == first_exchange["prompt_message_id"]]
    second_id = same[-1]
    assert second_id != first_id
    assert rate(page, second, 1)["feedbackId"] == second_id

    # Both answers to the same user message, rated both ways: a preference pair for DPO.
    assert same == [first_id, second_id]
    a, b = (exchanges.load_sync(redis_db.client, thread_id, i) for i in (first_id, second_id))
    assert a is not None and b is not None
    assert (a.model, b.model) == ("echo", "echo-v2")
    assert a.messages == b.messages and a.deleted and not b.deleted
    assert [redis_db.client.hget(keys.rating(thread_id, i), "value") for i in (first_id, second_id)] == ["0", "1"]
    assert redis_db.client.hget(keys.rating(thread_id, first_id), "comment") == "too terse"

    # Resumed, the thread shows the answer in service only, with its thumb up.
    page.reload()
    expect(page.locator('[data-step-type="user_message"]')).to_have_text("pick one")
    expect(page.locator('[data-step-type="assistant_message"]')).to_have_count(1)
    expect(thumb(answer_to(page, "pick one"), 1, "on")).to_be_visible()
    # Chainlit doesn't store action buttons: the app offers Regenerate on the latest answer again.
    expect(answer_to(page, "pick one").get_by_role("button", name="Regenerate")).to_be_visible()


def test_another_user_can_neither_open_nor_rate_the_thread(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer) -> None:
    alice = log_in(browser, contexts, app_server, "alice")
    rate(alice, send(alice, "my private note"), 1, "mine")
    exchange_id, exchange = only_exchange(redis_db)
    thread_id = exchange["thread_id"]
    rating = redis_db.client.hgetall(keys.rating(thread_id, exchange_id))
    events = redis_db.client.xlen(keys.events(keys.bucket(thread_id)))

    bob = log_in(browser, contexts, app_server, "bob")
    expect(bob.get_by_text("No threads found")).to_be_visible()  # alice's thread is not in his history
    bob.goto(f"{app_server.url}/thread/{thread_id}")
    # The server refuses to resume it: the UI says so and goes back to a new chat.
    expect(bob.get_by_text("Couldn't resume chat")).to_be_visible()
    expect(bob).to_have_url(f"{app_server.url}/")
    expect(bob.locator("#chat-input")).to_be_visible()
    expect(bob.get_by_text("my private note")).to_have_count(0)
    expect(bob.get_by_text("You said: my private note")).to_have_count(0)
    expect(bob.locator("[data-step-type]")).to_have_count(0)

    # Rating her answer with his login (the request the thumbs buttons send) is refused.
    feedback = {"forId": exchange_id, "threadId": thread_id, "value": 0, "comment": "hijacked"}
    r = bob.request.put(f"{app_server.url}/feedback", data={"feedback": feedback, "sessionId": "x"})
    assert r.status == 403 and "your own" in r.json()["detail"], r.text()
    r = bob.request.delete(f"{app_server.url}/feedback", data={"feedbackId": exchange_id})
    assert r.status == 404 and r.json()["detail"] == "No answer with this id.", r.text()  # an un-rate looks in his own threads only
    r = bob.request.get(f"{app_server.url}/project/thread/{thread_id}")
    assert r.status == 401 and "my private note" not in r.text(), r.text()  # Chainlit's author check
    assert redis_db.client.hgetall(keys.rating(thread_id, exchange_id)) == rating
    assert redis_db.client.xlen(keys.events(keys.bucket(thread_id))) == events

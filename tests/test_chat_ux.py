"""What a new user sees and clicks, in a real browser (Debian's chromium, driven by Playwright) on
the real app, the stand-in model and a real Redis: the product's name and welcome instead of
Chainlit's, starters from the prompt spec, reasons picked on the rated answer, only buttons that
work, the earlier answers of a regenerated question, and which versions wrote each answer.

Helpers and selectors are support/browser.py's; besides, the ids and classes the app's own
answer element sets (bot/ui/public/elements/AnswerInfo.jsx: `.answer-versions`, `.earlier-toggle`,
`.earlier-answer`) and the id Chainlit gives the starters' box (`#starters`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import cast

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from feedback import keys, registry
from feedback import prompt as prompts
from feedback.settings import Settings
from launcher.process import wait_until
from support.browser import TIMEOUT_MS, answer_to, log_in, only_exchange, rate, send, thumb
from support.services import AppServer, RedisServer
from support.session import USERS

pytestmark = pytest.mark.browser

NEWEST = prompts.load_spec(Settings().prompts_dir, "assistant")  # what a new conversation gets


def rating_of(redis_db: RedisServer, thread_id: str, exchange_id: str) -> dict[str, str]:
    return cast("dict[str, str]", redis_db.client.hgetall(keys.rating(thread_id, exchange_id)))


def reasons_of(redis_db: RedisServer, thread_id: str, exchange_id: str) -> list[str]:
    return cast("list[str]", json.loads(rating_of(redis_db, thread_id, exchange_id).get("reasons") or "[]"))


def click_action(page: Page, button: Locator) -> None:
    """Click an action button and wait for the server's answer (it has run the callback)."""
    with page.expect_response(lambda r: r.url.endswith("/project/action")) as response:
        button.click()
    assert response.value.status == 200, response.value.text()


def test_login_page_and_welcome_show_the_product_and_its_starters(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer) -> None:
    assert NEWEST.starters, "the newest shipped prompt version offers starters"
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    contexts.append(ctx)
    page = ctx.new_page()
    page.goto(f"{app_server.url}/login")
    expect(page).to_have_title("Loop")
    expect(page.get_by_text("Log in to Loop")).to_be_visible()
    expect(page.locator("label[for=email]")).to_have_text("User name")  # Chainlit: "Email address"
    expect(page.locator("#email")).to_have_attribute("placeholder", "your user name")
    logo = page.get_by_alt_text("logo")
    expect(logo).to_be_visible()
    for path in (str(logo.get_attribute("src")), "/favicon", "/public/login.svg"):
        r = page.request.get(path if path.startswith("http") else f"{app_server.url}{path}")
        assert r.ok and r.headers["content-type"].startswith("image/svg+xml") and b"Loop" in r.body(), path
    head = page.locator("head").inner_html().lower()
    assert "chainlit" not in head and "chainlit" not in page.locator("body").inner_text().lower()  # not in the title, meta tags, texts

    page = log_in(browser, contexts, app_server, "alice")
    welcome = page.locator("#welcome-screen")
    expect(welcome.get_by_role("heading", name="Hi, I'm Loop")).to_be_visible()
    expect(welcome).to_contain_text("your ratings teach the assistant")
    starters = page.locator("#starters").get_by_role("button")
    expect(starters).to_have_text([s.label for s in NEWEST.starters])

    # A starter sends its message; the answer says which versions wrote it.
    first = NEWEST.starters[0]
    starters.filter(has_text=first.label).click()
    expect(page.locator('[data-step-type="user_message"]')).to_have_text(first.message)
    answer = answer_to(page, first.message)
    expect(answer.locator(".positive-feedback-off")).to_be_enabled()
    expect(answer.locator(".answer-versions")).to_have_text(f"echo (base model) · prompt {NEWEST.ref}")
    _, exchange = only_exchange(redis_db)
    assert exchange["prompt_version"] == NEWEST.version and exchange["question"] == first.message


def test_several_reasons_are_picked_on_the_rated_answer_and_kept(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer) -> None:
    page = log_in(browser, contexts, app_server, "alice")
    answer = send(page, "judge me")
    exchange_id, exchange = only_exchange(redis_db)
    thread_id = exchange["thread_id"]
    expect(answer.get_by_role("button", name="Wrong", exact=True)).to_have_count(0)  # not before a 👎
    rate(page, answer, 0, "not great")

    # The toggles are on the answer (no question at the bottom of the chat); each click toggles.
    for label in ("Wrong", "Unhelpful", "Too long", "Unsafe", "Off topic"):
        expect(answer.get_by_role("button", name=label, exact=True)).to_be_visible()
    expect(page.get_by_text("What was wrong with that answer?")).to_have_count(0)
    click_action(page, answer.get_by_role("button", name="Wrong", exact=True))
    expect(answer.get_by_role("button", name="✓ Wrong", exact=True)).to_be_visible()
    click_action(page, answer.get_by_role("button", name="Too long", exact=True))
    expect(answer.get_by_role("button", name="✓ Too long", exact=True)).to_be_visible()
    assert reasons_of(redis_db, thread_id, exchange_id) == ["wrong", "too_long"]
    click_action(page, answer.get_by_role("button", name="✓ Wrong", exact=True))  # unpick
    expect(answer.get_by_role("button", name="Wrong", exact=True)).to_be_visible()
    expect(answer.get_by_role("button", name="✓ Too long", exact=True)).to_be_visible()
    assert reasons_of(redis_db, thread_id, exchange_id) == ["too_long"]
    assert rating_of(redis_db, thread_id, exchange_id)["comment"] == "not great" and rating_of(redis_db, thread_id, exchange_id)["value"] == "0"

    # Reloaded, the thread shows them again; editing the comment keeps them (the page sends them).
    page.reload()
    answer = answer_to(page, "judge me")
    expect(answer.get_by_role("button", name="✓ Too long", exact=True)).to_be_visible()
    expect(answer.get_by_role("button", name="Wrong", exact=True)).to_be_visible()
    expect(thumb(answer, 0, "on")).to_be_visible()
    answer.locator(".negative-feedback-on + button").click()  # the comment button
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("textbox").fill("too long, really")
    with page.expect_response(lambda r: r.url.endswith("/feedback") and r.request.method == "PUT") as response:
        dialog.locator("#submit-feedback").click()
    assert response.value.status == 200, response.value.text()
    assert rating_of(redis_db, thread_id, exchange_id)["comment"] == "too long, really"
    assert reasons_of(redis_db, thread_id, exchange_id) == ["too_long"]

    # A thumbs up takes the toggles away, and the reasons of the 👎 don't stay with the 👍.
    rate(page, answer, 1)
    expect(answer.get_by_role("button", name="✓ Too long", exact=True)).to_have_count(0)
    expect(answer.get_by_role("button", name="Wrong", exact=True)).to_have_count(0)
    # (The page sent the 👎's reasons back with the 👍; the app drops them right after.)
    wait_until(lambda: reasons_of(redis_db, thread_id, exchange_id) == [] and rating_of(redis_db, thread_id, exchange_id)["value"] == "1", TIMEOUT_MS / 1000, what="the 👍 without the 👎's reasons")


def test_no_thumbs_on_errors_nor_stopped_answers(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer) -> None:
    page = log_in(browser, contexts, app_server, "alice")
    redis_db.client.set(keys.active_model(), "fail-500")
    page.locator("#chat-input").fill("fail please")
    page.locator("#chat-submit").click()
    expect(page.get_by_text("The model server failed to answer (HTTP 500)")).to_be_visible()
    expect(page.locator(".positive-feedback-off, .negative-feedback-off")).to_have_count(0)
    expect(page.get_by_role("button", name="Regenerate")).to_have_count(0)

    redis_db.client.set(keys.active_model(), "slow")  # 400 tokens, 50 ms apart
    page.locator("#chat-input").fill("talk slowly")
    page.locator("#chat-submit").click()
    expect(page.get_by_text("tok3", exact=False)).to_be_visible()
    page.locator("#stop-button").click()
    partial = page.locator('[data-step-type="system_message"]', has_text="Stopped: this partial answer is not kept")
    expect(partial).to_be_visible()
    expect(partial).to_contain_text("tok0 tok1")
    expect(page.locator(".positive-feedback-off, .negative-feedback-off")).to_have_count(0)
    assert redis_db.client.keys(keys.exchange(keys.ANY, keys.ANY)) == []  # neither was stored as an answer

    # Reloaded: still no thumbs; the next real answer gets them.
    page.reload()
    expect(partial).to_be_visible()
    expect(page.locator(".positive-feedback-off, .negative-feedback-off")).to_have_count(0)
    redis_db.client.delete(keys.active_model())
    answer = send(page, "now answer")
    expect(page.locator(".positive-feedback-off")).to_have_count(1)
    expect(answer.get_by_role("button", name="Regenerate")).to_be_visible()


def test_regenerate_is_on_the_latest_answer_only_and_earlier_answers_stay_in_view(
    browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer
) -> None:
    page = log_in(browser, contexts, app_server, "alice")
    one = send(page, "first question")
    expect(one.get_by_role("button", name="Regenerate")).to_be_visible()
    two = send(page, "second question")
    expect(two.get_by_role("button", name="Regenerate")).to_be_visible()
    expect(one.get_by_role("button", name="Regenerate")).to_have_count(0)  # moved to the newer answer
    expect(page.get_by_role("button", name="Regenerate")).to_have_count(1)

    rate(page, two, 0, "meh")
    redis_db.client.set(keys.active_model(), "echo-v2")
    click_action(page, two.get_by_role("button", name="Regenerate"))
    again = answer_to(page, "second question")
    expect(again).to_have_count(1)
    expect(again.locator(".answer-versions")).to_have_text(f"echo-v2 (base model) · prompt {NEWEST.ref}")
    toggle = again.locator(".earlier-toggle")
    expect(toggle).to_have_text("Earlier answers (1)")
    expect(again.locator(".earlier-answer")).to_have_count(0)  # collapsed
    toggle.click()
    earlier = again.locator(".earlier-answer")
    expect(earlier).to_have_count(1)
    expect(earlier).to_contain_text("echo (base model)")
    expect(earlier.locator(".earlier-text")).to_have_text("You said: second question")
    expect(earlier.get_by_label("rated bad")).to_be_visible()
    expect(page.get_by_role("button", name="Regenerate")).to_have_count(1)
    expect(again.get_by_role("button", name="Regenerate")).to_be_visible()

    # Regenerated twice: both earlier answers; and all of it after a reload.
    click_action(page, again.get_by_role("button", name="Regenerate"))
    third = answer_to(page, "second question")
    expect(third.locator(".earlier-toggle")).to_have_text("Earlier answers (2)")
    page.reload()
    third = answer_to(page, "second question")
    expect(third.locator(".earlier-toggle")).to_have_text("Earlier answers (2)")
    third.locator(".earlier-toggle").click()
    expect(third.locator(".earlier-answer")).to_have_count(2)
    expect(page.get_by_role("button", name="Regenerate")).to_have_count(1)
    expect(third.get_by_role("button", name="Regenerate")).to_be_visible()
    expect(answer_to(page, "first question").locator(".answer-versions")).to_have_text(f"echo (base model) · prompt {NEWEST.ref}")


def test_the_history_search_finds_what_was_said_and_ratings(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer) -> None:
    page = log_in(browser, contexts, app_server, "alice")
    rate(page, send(page, "platypus facts"), 0)
    send(page, "do they lay eggs")
    page.locator("#search-chats-button").click()
    box = page.get_by_role("dialog").get_by_role("combobox")
    expect(box).to_have_attribute("placeholder", "Search what was said; add rated:up or rated:down...")
    box.fill("lay eggs")  # in a later question, not in the title
    expect(page.get_by_role("dialog").get_by_role("option")).to_have_text(["platypus facts"])
    box.fill("rated:up")
    expect(page.get_by_role("dialog").get_by_role("option")).to_have_count(0)
    box.fill("rated:down")
    expect(page.get_by_role("dialog").get_by_role("option")).to_have_text(["platypus facts"])


EMOJI = re.compile("[\U0001F44D\U0001F44E]")  # 👍 👎: empty boxes in a chromium without an emoji font


def test_the_welcome_and_the_footer_draw_the_thumbs_as_the_buttons_icons(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer) -> None:
    page = log_in(browser, contexts, app_server, "alice")
    welcome = page.locator("#welcome-screen")
    expect(welcome).to_contain_text("Rate each answer with")
    expect(welcome.locator("svg.loop-thumb")).to_have_count(3)  # "with 👍 or 👎 (after a 👎, pick ..."
    expect(welcome.get_by_role("img", name="thumbs up")).to_be_visible()
    assert not EMOJI.search(welcome.inner_text())
    page.get_by_role("button", name="Readme").click()  # bot/ui/chainlit.md
    readme = page.get_by_role("dialog")
    expect(readme).to_contain_text("Rate answers")
    expect(readme.locator("svg.loop-thumb")).to_have_count(3)  # "with 👍 / 👎. After a 👎, ..."
    assert not EMOJI.search(readme.inner_text())
    page.keyboard.press("Escape")
    expect(readme).to_be_hidden()
    # The footer (under the composer once a conversation has messages): the same icons as the
    # rating buttons under an answer.
    answer = send(page, "show me the thumbs")
    footer = page.locator(".watermark")
    expect(footer).to_contain_text("your ratings teach Loop")
    expect(footer.locator("svg.loop-thumb")).to_have_count(2)
    for value, label in ((1, "thumbs up"), (0, "thumbs down")):
        button = thumb(answer, value, "off").locator("svg path")
        drawn = footer.get_by_role("img", name=label).locator("path")
        assert drawn.evaluate_all("ps => ps.map(p => p.getAttribute('d'))") == button.evaluate_all("ps => ps.map(p => p.getAttribute('d'))")
    assert not EMOJI.search(footer.inner_text())


def test_a_wrong_password_shows_the_message_and_no_error_code(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    contexts.append(ctx)
    page = ctx.new_page()
    page.goto(f"{app_server.url}/login")
    page.locator("#email").fill("alice")
    page.locator("#password").fill(USERS["alice"] + "-wrong")
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as response:
        page.locator("form button[type=submit]").click()
    assert response.value.status == 401
    toast = page.locator("[data-sonner-toast]")
    expect(toast).to_have_count(1)  # Chainlit's toast of every failed request ("Unauthorized: credentialssignin"): there, never shown
    assert not toast.is_visible()
    # The form's message, ours (bot/ui/translations.json; Chainlit looks it up by the lower-cased
    # status text, "unauthorized", and showed its default "Unable to sign in").
    expect(page.get_by_role("alert")).to_have_text("Sign in failed: check your user name and password")
    assert "credentialssignin" not in page.locator("body").inner_text().lower()
    expect(page).to_have_url(f"{app_server.url}/login")


def test_a_refused_message_goes_back_to_the_composer_and_nothing_looks_sent(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer) -> None:
    limit = Settings.model_fields["max_message_chars"].default  # the test app's
    text = ("A long message. " * (limit // 16 + 10))[: limit + 2000]
    page = log_in(browser, contexts, app_server, "alice")
    page.locator("#chat-input").fill(text)
    page.locator("#chat-submit").click()
    expect(page.get_by_text(f"Your message has {len(text)} characters; the limit is {limit}. Nothing was sent.")).to_be_visible()
    expect(page.locator("#chat-input")).to_have_value(text)  # kept, to shorten and send again
    expect(page.locator('[data-step-type="user_message"]')).to_have_count(0)  # no bubble as if sent
    assert redis_db.client.keys(keys.exchange(keys.ANY, keys.ANY)) == []

    page.locator("#chat-input").fill("A short one.")
    answer = send(page, "A short one.")
    expect(page.locator('[data-step-type="user_message"]')).to_have_text(["A short one."])
    expect(answer).to_be_visible()
    page.reload()  # stored: the short message only
    expect(page.locator('[data-step-type="user_message"]')).to_have_text(["A short one."])


def test_answers_name_the_model_and_never_a_server_path(
    browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer, tmp_path: Path
) -> None:
    """The default model is a directory on the server (DATA_DIR/default-model) and a trained
    version's files are too: the line under an answer names the model and the version."""
    r = redis_db.client
    default_model = tmp_path / "data" / "default-model"
    default_model.mkdir(parents=True)
    (default_model / "converted-from.txt").write_text("SmolLM2-135M-Instruct.Q4_1.gguf\n")  # as launcher/default_model.py leaves it
    r.set(keys.active_model(), str(default_model))  # served by its directory, as `chatbot up` serves it
    page = log_in(browser, contexts, app_server, "alice")
    first = send(page, "who wrote this?")
    line = f"SmolLM2-135M-Instruct (base model) · prompt {NEWEST.ref}"
    expect(first.locator(".answer-versions")).to_have_text(line)

    version = "mv-20261207-120000-abc123"
    served = tmp_path / "data" / "models" / version / "merged"
    registry.add(r, registry.ModelVersion(id=version, base_model=str(default_model), served_name=str(served), status="active"))
    r.set(keys.active_model(), str(served))
    r.set(keys.active_version(), version)
    second = send(page, "and who wrote this?")
    expect(second.locator(".answer-versions")).to_have_text(f"{version} (from SmolLM2-135M-Instruct) · prompt {NEWEST.ref}")
    expect(second.locator(".answer-versions")).to_have_attribute("title", f"Written by model {version} (from SmolLM2-135M-Instruct) with prompt {NEWEST.ref}")
    expect(first.locator(".answer-versions")).to_have_attribute("title", f"Written by model {line.split(' · ')[0]} with prompt {NEWEST.ref}")
    assert str(tmp_path) not in page.content()

    page.reload()  # read back from the stored answers (the data layer), the same
    expect(answer_to(page, "who wrote this?").locator(".answer-versions")).to_have_text(line)
    expect(answer_to(page, "and who wrote this?").locator(".answer-versions")).to_have_text(f"{version} (from SmolLM2-135M-Instruct) · prompt {NEWEST.ref}")
    assert str(tmp_path) not in page.content()
    stored = {r.hget(k, "question"): r.hget(k, "model") for k in cast("list[str]", r.keys(keys.exchange(keys.ANY, keys.ANY)))}
    assert stored == {"who wrote this?": str(default_model), "and who wrote this?": str(served)}  # the records keep what was served

"""Driving the app in a real browser: Debian's chromium through Playwright (never a browser
download), for the browser tests (tests/conftest.py has the `browser` and `contexts` fixtures).

Selectors, and why they hold: ids the Chainlit UI sets on purpose (`#email`, `#password`,
`#chat-input`, `#chat-submit`, `#submit-feedback`, `#thread-<id>`, `#step-<id>`), the
`data-step-type` attribute of each message, the `positive-feedback-on/off` and
`negative-feedback-on/off` classes that are the only state the thumbs buttons expose (Chainlit's own
end-to-end tests select on them), ARIA roles (`dialog`, `textbox`) and the action's label.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from feedback import keys
from launcher.process import free_port
from support.services import AppServer, RedisServer
from support.session import USERS

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 15_000

expect.set_options(timeout=TIMEOUT_MS)


class OtherPage(BaseHTTPRequestHandler):
    """A page of another origin: serves its class's `html` to every GET."""

    html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def other_origin() -> Iterator[tuple[str, type[OtherPage]]]:
    """A web page of another origin (another port of 127.0.0.1: the same site, so the app's
    cookies go along): its URL and its class, whose `html` the test sets."""
    page = type("Page", (OtherPage,), {})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", page
    finally:
        server.shutdown()


def log_in(browser: Browser, contexts: list[BrowserContext], app: AppServer, user: str, width: int = 1280, height: int = 900) -> Page:
    """A fresh browser profile; log in through the login page; wait until the chat is ready."""
    ctx = browser.new_context(viewport={"width": width, "height": height})
    ctx.set_default_timeout(TIMEOUT_MS)
    contexts.append(ctx)
    page = ctx.new_page()
    page.goto(f"{app.url}/login")
    page.locator("#email").fill(user)
    page.locator("#password").fill(USERS[user])
    page.locator("form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("#chat-input")).to_be_visible()
    return page


def answer_to(page: Page, text: str) -> Locator:
    return page.locator('[data-step-type="assistant_message"]', has_text=f"You said: {text}")


def send(page: Page, text: str) -> Locator:
    """Type a message, send it, and wait until its answer has finished streaming."""
    page.locator("#chat-input").fill(text)
    submit = page.locator("#chat-submit")
    expect(submit).to_be_enabled()  # enabled once there is text and the socket is connected
    submit.click()
    expect(page.locator('[data-step-type="user_message"]', has_text=text)).to_be_visible()
    answer = answer_to(page, text)
    expect(answer).to_be_visible()
    # The message buttons are only rendered once the answer stopped streaming.
    expect(answer.locator(".positive-feedback-off")).to_be_enabled()
    return answer


def thumb(answer: Locator, value: int, state: str) -> Locator:
    return answer.locator(f".{'positive' if value == 1 else 'negative'}-feedback-{state}")


def rate(page: Page, answer: Locator, value: int, comment: str | None = None) -> dict[str, Any]:
    """Click a thumb, type a comment in the dialog it opens, submit; returns the server's answer."""
    thumb(answer, value, "off").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    if comment is not None:
        dialog.get_by_role("textbox").fill(comment)
    with page.expect_response(lambda r: r.url.endswith("/feedback") and r.request.method == "PUT") as response:
        dialog.locator("#submit-feedback").click()
    assert response.value.status == 200, response.value.text()
    expect(dialog).to_be_hidden()
    expect(thumb(answer, value, "on")).to_be_visible()
    expect(thumb(answer, 1 - value, "off")).to_be_visible()
    return response.value.json()


def only_exchange(redis_db: RedisServer) -> tuple[str, dict[str, str]]:
    found = cast("list[str]", redis_db.client.keys(keys.exchange(keys.ANY, keys.ANY)))
    assert len(found) == 1, found
    exchange_id = found[0].rsplit(":", 1)[1]
    return exchange_id, cast("dict[str, str]", redis_db.client.hgetall(found[0]))

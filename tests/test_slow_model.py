"""A slow model through the real app: limits on silence, not on length; a request the app gives up
on is closed, so the model server stops generating it and the next user is not kept waiting; and
while an answer has not started, a note says why the user waits.

The stand-in model server (support/standin_model.py) plays the slow model: `--serial` makes it
generate one answer at a time, as `transformers serve` does on a CPU, and `/streams` says how each
streamed answer ended ("disconnected": its client closed the response first, and it stopped).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from feedback import keys
from launcher.process import ServiceGroup
from sim.client import ChatClient, Reply
from support.browser import answer_to, log_in
from support.services import AppServer, RedisServer, app_env, ended, start_app, start_standin, streams
from support.session import logged_in

FIRST_TOKEN_S = 3.0  # the app's LLM_FIRST_TOKEN_TIMEOUT_S
IDLE_S = 1.5  # its LLM_IDLE_TIMEOUT_S; "steady" writes a word every 0.3 s
CEILING_S = 60.0  # its LLM_TIMEOUT_S
RECONNECT_GRACE_S = 10.0  # bot/app.py's: how long a page that left has to come back


def error_of(reply: Reply) -> str:
    errors = [m for m in reply.messages if m.get("isError")]
    assert errors, reply.messages
    return str(errors[-1]["output"])


async def test_slow_answers_finish_and_silent_ones_are_cancelled_at_the_server(own_services: ServiceGroup, redis_db: RedisServer, tmp_path: Path) -> None:
    standin = start_standin(own_services, serial=True)
    env = app_env(
        redis_db.url, f"{standin}/v1", tmp_path,
        LLM_FIRST_TOKEN_TIMEOUT_S=str(FIRST_TOKEN_S), LLM_IDLE_TIMEOUT_S=str(IDLE_S), LLM_TIMEOUT_S=str(CEILING_S),
    )  # fmt: skip
    app = start_app(own_services, env, tmp_path)
    alice, bob = await logged_in(app.url, "alice"), await logged_in(app.url, "bob")
    try:
        # Slow but steady: longer in all than both silence limits together, and it finishes.
        redis_db.client.set(keys.active_model(), "steady")
        steady = await alice.send("take your time", timeout_s=30)
        assert steady.text == "You said: take your time and then some more words to show a slow answer that keeps coming"
        assert steady.total_s > FIRST_TOKEN_S + IDLE_S
        assert not [m for m in steady.messages if m.get("isError")]
        assert ended(standin, "steady")["end"] == "complete"

        # Silent: an error after the first-token limit, and the request is closed at the server...
        redis_db.client.set(keys.active_model(), "silent")
        silent = await alice.send("hello?", timeout_s=30)
        assert f"did not start answering within {FIRST_TOKEN_S:g} s" in error_of(silent)
        assert FIRST_TOKEN_S <= silent.total_s < FIRST_TOKEN_S + 5
        assert ended(standin, "silent")["end"] == "disconnected"
        # ...so the next user's answer starts at once, on a server that generates one at a time
        # (the abandoned generation would hold it for an hour).
        redis_db.client.delete(keys.active_model())
        after = await bob.send("my turn", timeout_s=30)
        assert after.text == "You said: my turn"
        assert after.first_token_s is not None and after.first_token_s < FIRST_TOKEN_S

        # Stalled mid-answer: cut off after the idle limit, the partial answer marked, the request
        # closed after the three words it sent.
        redis_db.client.set(keys.active_model(), "stall")
        stalled = await alice.send("go on", timeout_s=30)
        assert f"stopped writing for {IDLE_S:g} s" in error_of(stalled)
        assert stalled.text == "You said: go"
        partial = [m for m in stalled.messages if (m.get("metadata") or {}).get("partial")]
        assert partial and "Cut off by the error below" in partial[-1]["output"]
        assert ended(standin, "stall") | {"started": 0, "ended": 0, "id": ""} == {"id": "", "model": "stall", "tokens": 4, "sent": 3, "end": "disconnected", "started": 0, "ended": 0}
        redis_db.client.delete(keys.active_model())
        again = await bob.send("and again", timeout_s=30)
        assert again.text == "You said: and again"
    finally:
        await alice.close()
        await bob.close()
    # Every generation the server started has ended; only the completed answers are stored.
    assert all(s["end"] is not None for s in streams(standin))
    assert [redis_db.client.zcard(keys.thread_exchanges(c.thread_id or "")) for c in (alice, bob)] == [1, 2]


async def test_a_wait_note_says_the_model_is_starting_then_how_long_answers_take(app_server: AppServer, redis_db: RedisServer, standin: str) -> None:
    model = f"late-{uuid.uuid4().hex[:8]}"  # its first token after 2.5 s; new to this app process
    redis_db.client.set(keys.active_model(), model)
    client = await logged_in(app_server.url)
    try:
        first = await client.send("are you there?", timeout_s=30)
        second = await client.send("and now?", timeout_s=30)
    finally:
        await client.close()
    notes = []
    for reply in (first, second):
        assert reply.text.startswith("You said:")
        shown = [m for m in reply.messages if (m.get("metadata") or {}).get("wait_note")]
        assert len(shown) == 1 and shown[0]["type"] == "system_message", reply.messages
        note = shown[0]
        # Before the answer's first token, and taken away when it came.
        timeline = reply.timeline
        assert timeline.index(("new_message", note["id"])) < next(i for i, (event, _) in enumerate(timeline) if event == "stream_start")
        assert ("delete_message", note["id"]) in timeline and note["id"] in reply.removed_messages
        notes.append(str(note["output"]))
    assert notes[0].startswith("The model is starting")
    # The second estimate comes from the first answer: about 2.5 s to the first word.
    found = re.match(r"Answers take about (\d+) s on this machine \(the first words after about (\d+) s\)\.", notes[1])
    assert found and 2 <= int(found.group(2)) <= int(found.group(1)), notes[1]
    # Not stored: the thread read back has the answers, not the notes.
    async with client.http() as http:
        thread = (await http.get(f"/project/thread/{client.thread_id}")).json()
    assert not [s for s in thread["steps"] if "wait_note" in str(s.get("metadata"))]
    assert not [s for s in thread["steps"] if "on this machine" in str(s.get("output"))]


async def test_an_answer_whose_page_left_is_stopped_at_the_server(app_server: AppServer, redis_db: RedisServer, standin: str) -> None:
    redis_db.client.set(keys.active_model(), "slow")  # 400 tokens, 50 ms apart: 20 s in all
    client = await logged_in(app_server.url)
    with pytest.raises(TimeoutError):
        await client.send("a long answer please", timeout_s=2)  # streaming by now
    await client.close()  # the tab is closed; no socket comes back
    stopped = ended(standin, "slow", timeout_s=RECONNECT_GRACE_S + 8)
    assert stopped["end"] == "disconnected" and stopped["sent"] < 400
    assert client.thread_id is not None and redis_db.client.zcard(keys.thread_exchanges(client.thread_id)) == 0


async def test_an_answer_whose_page_comes_back_goes_on(app_server: AppServer, redis_db: RedisServer, standin: str) -> None:
    redis_db.client.set(keys.active_model(), "slow")
    client = await logged_in(app_server.url)
    with pytest.raises(TimeoutError):
        await client.send("a long answer please", timeout_s=2)
    await client.close()
    # The same page's socket.io reconnects (same session id): the answer streams on to it.
    back = ChatClient(app_server.url)
    back.cookie, back.session_id, back.thread_id = client.cookie, client.session_id, client.thread_id
    await back.sio.connect(app_server.url, socketio_path="/ws/socket.io", transports=["websocket"], headers={"Cookie": back.cookie or ""},
                           auth={"clientType": "webapp", "sessionId": back.session_id, "threadId": back.thread_id, "userEnv": "{}", "chatProfile": None})  # fmt: skip
    try:
        assert ended(standin, "slow", timeout_s=40)["end"] == "complete"
    finally:
        await back.close()


def test_the_page_shows_the_wait_note_until_the_answer_starts(browser: Browser, contexts: list[BrowserContext], app_server: AppServer, redis_db: RedisServer, tmp_path: Path) -> None:
    redis_db.client.set(keys.active_model(), f"late-{uuid.uuid4().hex[:8]}")
    page = log_in(browser, contexts, app_server, "alice")
    page.locator("#chat-input").fill("are you there?")
    page.locator("#chat-submit").click()
    note = page.locator('[data-step-type="system_message"]', has_text="The model is starting")
    expect(note).to_be_visible()
    page.screenshot(path=tmp_path / "wait-note.png")  # docs/wait-note.png
    expect(answer_to(page, "are you there?")).to_be_visible()
    expect(note).to_have_count(0)

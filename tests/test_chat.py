"""The assistant through the interface the browser uses: login over HTTP, chat over socket.io."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from feedback import exchange as exchanges
from feedback import keys, registry
from feedback import prompt as prompts
from feedback.settings import Settings
from launcher.process import free_port
from sim.client import ChatClient
from support.services import AppServer, RedisServer, app_env, ended, start_app
from support.session import USERS, final_message, logged_in


async def test_answer_is_streamed_and_recorded_with_prompt_and_model_version(app_server: AppServer, redis_db: RedisServer, standin: str) -> None:
    client = await logged_in(app_server.url)
    try:
        reply = await client.send("hello there")
    finally:
        await client.close()

    assert reply.tokens == ["You", " said:", " hello", " there"]  # streamed token by token
    final = reply.final()
    assert final is not None and final["output"] == "You said: hello there"
    assert final["metadata"]["prompt_version"] == "assistant@1.1.2"  # newest version by default

    assert client.thread_id is not None
    stored = redis_db.client.hgetall(keys.exchange(client.thread_id, final["metadata"]["exchange_id"]))
    assert stored["prompt_id"] == "assistant" and stored["prompt_version"] == "1.1.2"
    assert stored["model"] == "echo" and stored["user"] == "alice"
    assert stored["completion"] == "You said: hello there"
    assert stored["output_tokens"] == "4"  # usage reported by the model server is recorded
    assert float(stored["latency_ms"]) > 0 and float(stored["first_token_ms"]) > 0
    assert stored["thread_id"] == client.thread_id
    # Stored compactly: the fixed part once per content, referred to by its digest...
    assert "messages" not in stored and redis_db.client.exists(keys.prompt_prefix(str(stored["prefix"])))
    record = exchanges.load_sync(redis_db.client, client.thread_id, final["metadata"]["exchange_id"])
    assert record is not None
    messages = [m.model_dump() for m in record.messages]
    # ...and rebuilt exactly: the system prompt: system prompt with guidelines, the few-shot pairs, then the user's message.
    assert messages[0]["role"] == "system" and "Guidelines:" in messages[0]["content"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[-1] == {"role": "user", "content": "hello there"}
    # ...and it is what the model server received.
    sent = httpx.get(f"{standin}/requests").json()[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [(m["role"], m["content"]) for m in messages]


async def test_history_is_sent_on_the_next_turn(app_server: AppServer, redis_db: RedisServer, standin: str) -> None:
    client = await logged_in(app_server.url)
    try:
        await client.send("first question")
        await client.send("second question")
    finally:
        await client.close()
    sent = httpx.get(f"{standin}/requests").json()[-1]["messages"]
    assert [m["content"] for m in sent[-3:]] == ["first question", "You said: first question", "second question"]
    # The second answer's prompt refers to the first answer for the earlier turn (not a copy), and
    # reads back as exactly what the model received.
    first, second = exchanges.for_thread_sync(redis_db.client, client.thread_id or "")
    assert json.loads(redis_db.client.hget(keys.exchange(second.thread_id, second.id), "history") or "[]") == [first.id]
    assert [m.model_dump() for m in second.messages] == [{"role": m["role"], "content": m["content"]} for m in sent]


async def test_active_model_switches_without_restart(app_server: AppServer, redis_db: RedisServer) -> None:
    client = await logged_in(app_server.url)
    try:
        before = await client.send("one")
        redis_db.client.set(keys.active_model(), "echo-v2")
        after = await client.send("two")
    finally:
        await client.close()
    assert final_message(before)["metadata"]["model"] == "echo"
    assert final_message(after)["metadata"]["model"] == "echo-v2"
    assert after.text == "You said: two"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("fail-500", "The model server failed to answer (HTTP 500)"),
        ("fail-404", "doesn't know the configured model (HTTP 404)"),
        ("empty", "The model returned an empty answer"),
    ],
)
async def test_model_errors_are_shown_and_the_app_keeps_serving(app_server: AppServer, redis_db: RedisServer, model: str, expected: str) -> None:
    client = await logged_in(app_server.url)
    try:
        redis_db.client.set(keys.active_model(), model)
        failed = await client.send("hello")
        redis_db.client.delete(keys.active_model())
        recovered = await client.send("again")
    finally:
        await client.close()
    errors = [m for m in failed.messages if m.get("isError")]
    assert errors and expected in errors[-1]["output"]
    assert "Traceback" not in errors[-1]["output"]
    # Not an answer: a system message, which the page shows without thumbs (nothing to rate).
    assert errors[-1]["type"] == "system_message" and failed.assistant_messages() == []
    assert not [a for a in failed.actions if a["name"] == "regenerate"]
    assert recovered.text == "You said: again"
    assert client.thread_id is not None
    assert redis_db.client.zcard(keys.thread_exchanges(client.thread_id)) == 1  # failures are not answers


async def test_unreachable_model_server(own_services, redis_db: RedisServer, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    app = start_app(own_services, app_env(redis_db.url, dead, tmp_path, LLM_TIMEOUT_S="2"), tmp_path)
    client = await logged_in(app.url)
    try:
        reply = await client.send("hello")
    finally:
        await client.close()
    errors = [m for m in reply.messages if m.get("isError")]
    assert errors and "can't be reached" in errors[-1]["output"]


async def test_stop_button_cancels_the_stream(app_server: AppServer, redis_db: RedisServer, standin: str) -> None:
    redis_db.client.set(keys.active_model(), "slow")  # 400 tokens, 50 ms apart: 20 s in all
    client = await logged_in(app_server.url)
    try:
        reply = await client.send("a long answer please", timeout_s=15, stop_after_tokens=5)
        # The request is closed at the model server, which stops generating (tests/test_slow_model.py).
        stopped = ended(standin, "slow")
        assert stopped["end"] == "disconnected" and stopped["sent"] < 400
        redis_db.client.delete(keys.active_model())
        after = await client.send("still there?")
    finally:
        await client.close()
    assert 5 <= len(reply.tokens) < 400
    assert reply.total_s < 15
    assert after.text == "You said: still there?"
    # What was streamed stays in view, marked, as a system message: no thumbs, no Regenerate.
    partial = [m for m in reply.messages if (m.get("metadata") or {}).get("partial")]
    assert partial and partial[-1]["type"] == "system_message" and "Stopped: this partial answer is not kept" in partial[-1]["output"]
    assert partial[-1]["output"].startswith("".join(reply.tokens[:5]))
    assert reply.assistant_messages() == [] or all(not (m.get("metadata") or {}).get("exchange_id") for m in reply.assistant_messages())
    assert not [a for a in reply.actions if a["name"] == "regenerate"]
    assert client.thread_id is not None and redis_db.client.zcard(keys.thread_exchanges(client.thread_id)) == 1  # "still there?" only


async def test_header_auth_behind_a_proxy(own_services, redis_db: RedisServer, standin: str, tmp_path: Path) -> None:
    secret = "proxy-secret-" + "p" * 32
    env = app_env(redis_db.url, f"{standin}/v1", tmp_path, AUTH_MODE="header", AUTH_HEADER="X-Remote-User", AUTH_PROXY_SECRET=secret)
    app = start_app(own_services, env, tmp_path)
    proof = {"X-Auth-Proxy-Secret": secret}
    async with httpx.AsyncClient(base_url=app.url) as http:
        assert (await http.post("/auth/header", headers=proof)).status_code == 401  # no user header: no user
        # Reaching the port is not enough: without the proxy's secret, or with a wrong one, no login.
        assert (await http.post("/auth/header", headers={"X-Remote-User": "carol"})).status_code == 401
        assert (await http.post("/auth/header", headers={"X-Remote-User": "carol", "X-Auth-Proxy-Secret": "guess" * 8})).status_code == 401
        # A name that is not a user name (it would reach into carol's keys) is refused.
        assert (await http.post("/auth/header", headers={"X-Remote-User": "carol:threads", **proof})).status_code == 401
        r = await http.post("/auth/header", headers={"X-Remote-User": "carol", **proof})
        assert r.status_code == 200
        cookie = r.cookies["access_token"]
        assert (await http.post("/login", data={"username": "alice", "password": USERS["alice"]})).status_code >= 400
    client = ChatClient(app.url)
    client.cookie = f"access_token={cookie}"
    await client.connect()
    try:
        reply = await client.send("via the proxy")
    finally:
        await client.close()
    assert reply.text == "You said: via the proxy"
    assert client.thread_id is not None
    assert redis_db.client.hget(keys.exchange(client.thread_id, final_message(reply)["metadata"]["exchange_id"]), "user") == "carol"


async def test_regenerate_moves_to_the_newest_answer(app_server: AppServer, redis_db: RedisServer) -> None:
    client = await logged_in(app_server.url)
    try:
        first = await client.send("one")
        second = await client.send("two")
    finally:
        await client.close()
    [offered_first] = [a for a in first.actions if a["name"] == "regenerate"]
    assert offered_first["forId"] == final_message(first)["id"]
    [offered_second] = [a for a in second.actions if a["name"] == "regenerate"]
    assert offered_second["forId"] == final_message(second)["id"]
    assert offered_first["id"] in second.removed_actions  # taken off the older answer


async def test_each_answer_says_which_model_and_prompt_version_wrote_it(app_server: AppServer, redis_db: RedisServer) -> None:
    redis_db.client.set(keys.active_model(), "echo-v2")
    redis_db.client.set(keys.active_version(), "mv-7")
    registry.add(redis_db.client, registry.ModelVersion(id="mv-7", base_model="echo", served_name="echo-v2", status="active"))
    client = await logged_in(app_server.url)
    try:
        reply = await client.send("who wrote this?")
        final = final_message(reply)
        [info] = [e for e in reply.elements if e["name"] == "AnswerInfo"]
        assert info["forId"] == final["id"] and info["display"] == "inline" and info["type"] == "custom"
        # The version and the model it was trained from; never the served name (a server path, for a local model).
        assert info["props"]["model"] == "mv-7 (from echo)" and info["props"]["prompt"] == final["metadata"]["prompt_version"]
        assert info["props"]["written"] == f"Written by model mv-7 (from echo) with prompt {final['metadata']['prompt_version']}"
        assert info["props"]["earlier"] == []
        # Not stored as an element: the thread read back (a reload) gets it from the stored answer.
        assert client.thread_id is not None
        assert not redis_db.client.exists(keys.thread_elements(client.thread_id))
        thread = (await client.get_thread(client.thread_id)).json()
    finally:
        await client.close()
    [again] = [e for e in thread["elements"] if e["name"] == "AnswerInfo"]
    assert again["forId"] == final["id"] and again["props"] == info["props"]


async def test_the_page_gets_our_texts_logo_and_element_scripts(app_server: AppServer) -> None:
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        for language in ("en-US", "fr-FR"):  # the app's texts are English: the UI is too
            texts = (await http.get("/project/translations", params={"language": language})).json()["translation"]
            assert texts["auth"]["login"]["form"]["email"]["label"] == "User name"
            assert texts["auth"]["login"]["form"]["password"]["label"] == "Password"  # Chainlit's, where we say nothing
        for path in ("/logo?theme=light", "/logo?theme=dark", "/favicon", "/public/favicon.svg"):
            r = await http.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<title>Loop</title>" in r.content, path
        script = await http.get("/public/elements/AnswerInfo.jsx")
        assert script.status_code == 200 and "export default function AnswerInfo" in script.text
        assert (await http.get("/logo?theme=../../app")).status_code == 422
        for sneaky in ("/public/%2e%2e/app.py", "/public/elements/%2e%2e/%2e%2e/translations.json", "/public/%2e%2e/%2e%2e/bot/app.py", "/public/nothing.svg"):
            r = await http.get(sneaky)
            assert r.status_code in (400, 404) and b"__future__" not in r.content and b"User name" not in r.content, sneaky


async def test_starters_are_those_of_the_version_new_conversations_get(app_server: AppServer, redis_db: RedisServer) -> None:
    client = await logged_in(app_server.url)

    async def starters() -> list[dict[str, str]]:
        async with client.http() as http:
            r = await http.get("/project/settings", params={"language": "en-US"})
            assert r.status_code == 200, r.text
            settings = r.json()
        assert [p["name"] for p in settings["chatProfiles"]] == ["Loop"]  # one: the welcome, no picker
        assert "your ratings teach the assistant" in settings["chatProfiles"][0]["markdown_description"]
        return [{"label": s["label"], "message": s["message"]} for s in settings["starters"]]

    try:
        newest = prompts.load_spec(Settings().prompts_dir, "assistant")
        assert await starters() == [s.model_dump() for s in newest.starters] and newest.starters
        # A version published and served at run time: its starters, without a restart.
        spec = prompts.parse(
            {"id": "assistant", "version": "7.5.0", "system": "Be brief.", "starters": [{"label": "Weather?", "message": "What is the weather like?"}]}, "test"
        )
        prompts.publish(redis_db.client, spec)
        prompts.serve(redis_db.client, "assistant", "7.5.0")
        assert await starters() == [{"label": "Weather?", "message": "What is the weather like?"}]
        plain = prompts.parse({"id": "assistant", "version": "7.5.1", "system": "Be brief."}, "test")
        prompts.publish(redis_db.client, plain)
        prompts.serve(redis_db.client, "assistant", "7.5.1")
        assert await starters() == []
    finally:
        await client.close()


async def test_history_search_finds_what_was_said_and_filters_by_rating(app_server: AppServer, redis_db: RedisServer) -> None:
    client = await logged_in(app_server.url)
    try:
        first = await client.send("tell me about koalas")
        await client.rate(final_message(first)["metadata"]["exchange_id"], 0)
        koalas = client.thread_id
        await client.close()
        client = await logged_in(app_server.url)
        second = await client.send("and wombats?")
        await client.send("what do they eat")
        await client.rate(final_message(second)["metadata"]["exchange_id"], 1)
        wombats = client.thread_id

        async def found(search: str) -> list[str]:
            r = await client.list_threads(search=search)
            assert r.status_code == 200, r.text
            return [t["id"] for t in r.json()["data"]]

        assert await found("wombats") == [wombats]  # in the title
        assert await found("THEY EAT") == [wombats]  # in a later question, not in the title
        assert await found("you said: tell me") == [koalas]  # in an answer
        assert await found("rated:down") == [koalas] and await found("rated:up") == [wombats]
        assert await found("koalas rated:up") == [] and await found("Rated:Down koalas") == [koalas]
        assert await found("nowhere said") == []
        assert await found("") == [wombats, koalas]
    finally:
        await client.close()

"""Talks to a running Chainlit app exactly as the browser does: HTTP login, then socket.io.

Used by the simulated raters (`chatbot simulate`), the integration tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import socketio


@dataclass
class Reply:
    """What the server emitted for one user message."""

    tokens: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    refused: str | None = None  # the server refused the message (an error toast); nothing was stored
    actions: list[dict[str, Any]] = field(default_factory=list)  # action buttons the server added
    removed_actions: list[str] = field(default_factory=list)  # ids of the buttons it took away
    elements: list[dict[str, Any]] = field(default_factory=list)  # elements (e.g. under an answer)
    removed_messages: list[str] = field(default_factory=list)  # ids of messages the server took away
    timeline: list[tuple[str, str]] = field(default_factory=list)  # (event, message id), in arrival order
    first_token_s: float | None = None
    total_s: float = 0.0

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def assistant_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "assistant_message"]

    def final(self) -> dict[str, Any] | None:
        """The last version of the streamed answer (with its metadata)."""
        found = self.assistant_messages()
        return found[-1] if found else None


class ChatClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.cookie: str | None = None
        self.session_id = str(uuid.uuid4())
        self.thread_id: str | None = None
        self.sio = socketio.AsyncClient(reconnection=False)
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        events = ("new_message", "update_message", "stream_start", "stream_token", "task_start", "task_end", "first_interaction", "error", "toast", "action", "remove_action", "element", "delete_message")
        for name in events:
            self.sio.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., Awaitable[None]]:
        async def record(data: Any = None) -> None:
            await self._events.put((name, data))

        return record

    async def login(self, username: str, password: str) -> None:
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            r = await http.post("/login", data={"username": username, "password": password})
            r.raise_for_status()
            self.cookie = f"access_token={r.cookies['access_token']}"

    async def connect(self, thread_id: str | None = None) -> None:
        auth = {"clientType": "webapp", "sessionId": self.session_id, "threadId": thread_id, "userEnv": "{}", "chatProfile": None}
        headers = {"Cookie": self.cookie} if self.cookie else {}
        await self.sio.connect(self.base_url, socketio_path="/ws/socket.io", auth=auth, headers=headers, transports=["websocket"])
        await self.sio.emit("connection_successful")
        # on_chat_start has run once its task started and ended (a stray task_end may come first).
        await self._until("task_start", 30)
        await self._until("task_end", 30)

    async def _until(self, event: str, timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        while True:
            name, _ = await asyncio.wait_for(self._events.get(), max(deadline - time.perf_counter(), 0.001))
            if name == event:
                return

    async def send(self, text: str, timeout_s: float = 60, stop_after_tokens: int | None = None, message_id: str | None = None, retry: bool = True) -> Reply:
        """Send a user message; collect everything until the server says the task ended.

        stop_after_tokens: press the stop button once that many tokens arrived. retry: when the
        server refuses for the message rate, wait as it says and send again.
        """
        mid = message_id or str(uuid.uuid4())
        if not retry:
            return await self._ask_once("client_message", mid, text, timeout_s, stop_after_tokens)
        return await self._ask("client_message", mid, text, timeout_s, stop_after_tokens)

    async def edit(self, message_id: str, text: str, timeout_s: float = 60) -> Reply:
        """Edit an earlier user message: the server answers it again."""
        return await self._ask("edit_message", message_id, text, timeout_s, None)

    async def _ask(self, event: str, message_id: str, text: str, timeout_s: float, stop_after_tokens: int | None) -> Reply:
        """Send, and when the server refuses for the user's message rate, wait as told and resend."""
        deadline = time.perf_counter() + timeout_s
        while True:
            reply = await self._ask_once(event, message_id, text, max(deadline - time.perf_counter(), 0.001), stop_after_tokens)
            wait = retry_after(reply.refused)
            if wait is None or time.perf_counter() + wait > deadline:
                return reply
            await asyncio.sleep(wait)  # the server's Retry-After: a polite client, not a test waiting

    async def _ask_once(self, event: str, message_id: str, text: str, timeout_s: float, stop_after_tokens: int | None) -> Reply:
        while not self._events.empty():
            self._events.get_nowait()
        message = {
            "id": message_id,
            "threadId": self.thread_id or "",  # the server owns the id; learnt from its events
            "output": text,
            "name": "User",
            "type": "user_message",
            "createdAt": datetime.now(UTC).isoformat(),
        }
        reply = Reply()
        started = time.perf_counter()
        payload = {"message": message, "fileReferences": []} if event == "client_message" else {"message": message}
        await self.sio.emit(event, payload)
        deadline = started + timeout_s
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"no task_end within {timeout_s} s; got {reply.messages}")
            name, data = await asyncio.wait_for(self._events.get(), remaining)
            if isinstance(data, dict) and data.get("threadId"):
                self.thread_id = data["threadId"]
            if isinstance(data, dict) and name in ("new_message", "update_message", "stream_start", "delete_message"):
                reply.timeline.append((name, str(data.get("id"))))
            if name == "stream_start":
                # Chainlit sends the first token inside stream_start.
                reply.first_token_s = time.perf_counter() - started
                reply.tokens.append(data.get("output") or "")
            elif name == "stream_token":
                reply.tokens.append(data["token"])
                if stop_after_tokens is not None and len(reply.tokens) == stop_after_tokens:
                    await self.stop()
            elif name in ("new_message", "update_message"):
                reply.messages.append(data)
            elif name == "toast" and data.get("type") == "error":
                reply.refused = str(data.get("message"))
            elif name in ("action", "remove_action", "element"):
                _collect(reply, name, data)
            elif name == "delete_message":
                reply.removed_messages.append(str(data.get("id")))
            elif name == "task_end":
                reply.total_s = time.perf_counter() - started
                return reply

    # --- HTTP calls the UI makes, with this client's login -------------------------------------

    def http(self, timeout_s: float = 30) -> httpx.AsyncClient:
        headers = {"Cookie": self.cookie} if self.cookie else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout_s)

    async def rate(self, run_id: str, value: int | None, comment: str | None = None, reasons: list[str] | None = None, thread_id: str | None = None) -> httpx.Response:
        """Thumbs up (1) / down (0) on the answer of a run step, as the UI does; None un-rates.
        Past the rating limit (429) it waits as the server says and tries again, for up to a minute."""
        deadline = time.perf_counter() + 60
        async with self.http() as http:
            while True:
                if value is None:
                    r = await http.request("DELETE", "/feedback", json={"feedbackId": run_id})
                else:
                    feedback: dict[str, Any] = {"forId": run_id, "threadId": thread_id or self.thread_id, "value": value, "comment": comment}
                    if reasons is not None:
                        feedback["reasons"] = reasons
                    r = await http.put("/feedback", json={"feedback": feedback, "sessionId": self.session_id})
                wait = float(r.headers.get("retry-after", 0)) if r.status_code == 429 else None
                if wait is None or time.perf_counter() + wait > deadline:
                    return r
                await asyncio.sleep(wait)

    async def list_threads(self, first: int = 20, cursor: str | None = None, search: str | None = None, feedback: int | None = None) -> httpx.Response:
        async with self.http() as http:
            body = {"pagination": {"first": first, "cursor": cursor}, "filter": {"search": search, "feedback": feedback}}
            return await http.post("/project/threads", json=body)

    async def get_thread(self, thread_id: str) -> httpx.Response:
        async with self.http() as http:
            return await http.get(f"/project/thread/{thread_id}")

    async def delete_thread(self, thread_id: str) -> httpx.Response:
        async with self.http() as http:
            return await http.request("DELETE", "/project/thread", json={"threadId": thread_id})

    async def next_message(self, text_prefix: str, timeout_s: float = 10) -> dict[str, Any]:
        """Wait for a message the server pushes outside a user turn."""
        return await self.next_event("new_message", lambda data: str(data.get("output", "")).startswith(text_prefix), timeout_s)

    async def next_event(self, event: str, matches: Callable[[Any], bool] = lambda _: True, timeout_s: float = 10) -> Any:
        """Wait for an event the server pushes outside a user turn (e.g. the reason buttons it adds
        to an answer after a thumbs down); earlier events are dropped."""
        deadline = time.perf_counter() + timeout_s
        while True:
            name, data = await asyncio.wait_for(self._events.get(), max(deadline - time.perf_counter(), 0.001))
            if name == event and matches(data):
                return data

    async def offered(self, action: str, count: int, matches: Callable[[dict[str, Any]], bool] = lambda _: True, timeout_s: float = 10) -> list[dict[str, Any]]:
        """The next `count` action buttons named `action` the server adds (that `matches` accepts)."""
        deadline = time.perf_counter() + timeout_s
        found: list[dict[str, Any]] = []
        while len(found) < count:
            found.append(await self.next_event("action", lambda a: a.get("name") == action and matches(a), max(deadline - time.perf_counter(), 0.001)))
        return found

    async def action(self, name: str, payload: dict[str, Any], for_id: str = "", timeout_s: float = 60, answers: bool = True) -> Reply:
        """Click an action button; when it `answers` (e.g. regenerate), collect the new answer (or
        the error message, or the refusal toast, that came instead)."""
        while not self._events.empty():
            self._events.get_nowait()
        reply = Reply()
        started = time.perf_counter()
        # The app answers the POST once the callback has run: for Regenerate, once the new answer
        # was written, which takes as long as any answer.
        async with self.http(max(30.0, timeout_s)) as http:
            r = await http.post("/project/action", json={"sessionId": self.session_id, "action": {"name": name, "payload": payload, "forId": for_id, "id": str(uuid.uuid4())}})
            r.raise_for_status()
        if not answers:
            return reply
        # The callback has run; its socket events may still be in flight: wait for its last message.
        deadline = started + timeout_s
        while True:
            name_, data = await asyncio.wait_for(self._events.get(), max(deadline - time.perf_counter(), 0.001))
            if name_ == "stream_start":
                reply.tokens.append(data.get("output") or "")
            elif name_ == "stream_token":
                reply.tokens.append(data["token"])
            elif name_ in ("new_message", "update_message"):
                reply.messages.append(data)
                if (data.get("type") == "assistant_message" or data.get("isError")) and not data.get("streaming"):
                    reply.total_s = time.perf_counter() - started
                    return reply
            elif name_ == "toast" and data.get("type") == "error":
                reply.refused = str(data.get("message"))
                reply.total_s = time.perf_counter() - started
                return reply
            elif name_ in ("action", "remove_action", "element"):
                _collect(reply, name_, data)

    async def stop(self) -> None:
        """The stop button."""
        await self.sio.emit("stop")

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


def _collect(reply: Reply, event: str, data: dict[str, Any]) -> None:
    if event == "action":
        reply.actions.append(data)
    elif event == "remove_action":
        reply.removed_actions.append(str(data.get("id")))
    else:
        reply.elements.append(data)


def retry_after(refusal: str | None) -> float | None:
    """Seconds to wait from a rate-limit refusal ("Too many messages: try again in 12 s."), else None."""
    found = re.search(r"^Too many .*try again in (\d+) s", refusal or "")
    return float(found.group(1)) if found else None


def dumps(reply: Reply) -> str:
    return json.dumps(reply.messages, indent=1, default=str)

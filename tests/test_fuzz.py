"""A fuzz pass of the HTTP API from its own OpenAPI schema (schemathesis + Hypothesis), logged in
as alice, against the real app and a real Redis: no request makes the server fail (5xx), and a
request the app refuses (4xx) writes nothing. The console's routes get a pass of their own, on an
app where alice is an operator, with her CSRF token in every form. Plus: every route that can change state refuses a
request from another origin, whatever route is added later (the list comes from the schema)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok, Result

from launcher.process import ServiceGroup
from sim.client import ChatClient
from support.services import AppServer, RedisServer, app_env, start_app
from support.session import USERS, keyspace

# Routes the pass leaves alone: logging out (it would end the pass's own session) and logging in
# (limited per client address; tests/test_security.py attacks it).
SKIP = {("POST", "/logout"), ("POST", "/login"), ("POST", "/auth/header"), ("POST", "/auth/jwt")}
EXAMPLES = 25  # per operation: a pass over ~30 operations in about a minute
CONSOLE_EXAMPLES = 30  # per console operation, half of them outside the schema: ~17 operations in about a minute



@pytest.fixture
async def alice(app_server: AppServer, redis_db: RedisServer) -> AsyncIterator[ChatClient]:
    client = ChatClient(app_server.url)
    await client.login("alice", USERS["alice"])
    await client.connect()
    await client.send("something to find")  # a thread, an answer, a session: real ids to aim at
    yield client
    await client.close()


def schema_of(app: AppServer, cookie: str) -> dict[str, Any]:
    r = httpx.get(f"{app.url}/openapi.json", headers={"Cookie": cookie})
    r.raise_for_status()
    return r.json()


def parsed(result: Result[schemathesis.APIOperation, schemathesis.errors.InvalidSchema]) -> schemathesis.APIOperation:
    """An operation of the schema, which must have parsed."""
    assert isinstance(result, Ok), result.err()
    return result.ok()


@pytest.mark.slow  # a minute of generated requests: `make test` runs it, the quick loop does not
async def test_no_request_from_the_schema_fails_the_server_or_writes_when_refused(app_server: AppServer, alice: ChatClient, redis_db: RedisServer) -> None:
    schema = schemathesis.openapi.from_dict(schema_of(app_server, alice.cookie or ""))
    operations = [parsed(r) for r in schema.get_all_operations()]
    operations = [op for op in operations if (op.method.upper(), op.path) not in SKIP]
    assert any(op.path == "/feedback" for op in operations)  # our routes are in the schema
    failures: list[str] = []
    tried = 0
    headers = {"Cookie": alice.cookie or ""}

    for op in operations:
        # Real ids now and then, so some requests get past validation to the ownership checks.
        ids = st.sampled_from([alice.thread_id or "x", alice.session_id, "x"])

        @given(case=op.as_strategy(), real_id=ids)
        @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck), database=None)
        def probe(case: schemathesis.Case, real_id: str) -> None:
            nonlocal tried
            if isinstance(case.body, dict):
                for key in ("threadId", "sessionId"):
                    if key in case.body and real_id != "x":
                        case.body[key] = real_id
            before = keyspace(redis_db.url)
            response = case.call(base_url=app_server.url, headers=headers, timeout=30)
            tried += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")
            elif response.status_code >= 400 and (after := keyspace(redis_db.url)) != before:
                changed = sorted(k.decode() for k in set(before) | set(after) if before.get(k) != after.get(k))
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code} but Redis changed: {changed[:5]}")

        probe()
    assert tried >= len(operations)
    assert not failures, "\n".join(sorted(set(failures))[:20])
    # The pass's session is still alive: nothing it sent logged alice out. (Her thread may be gone:
    # deleting it with its real id is hers to do.)
    assert (await alice.list_threads()).status_code == 200


async def test_every_state_changing_route_refuses_another_origin(app_server: AppServer, alice: ChatClient, redis_db: RedisServer) -> None:
    """CSRF, on every route that can change something: the ones there today and any added later."""
    schema = schema_of(app_server, alice.cookie or "")
    routes = [(m.upper(), p) for p, ops in schema["paths"].items() for m in ops if m.upper() not in ("GET", "HEAD", "OPTIONS")]
    assert ("PUT", "/feedback") in routes and ("DELETE", "/project/thread") in routes
    before = keyspace(redis_db.url)
    async with alice.http() as http:
        for method, path in routes:
            url = path.replace("{", "").replace("}", "")  # any value: the origin is refused first
            r = await http.request(method, url, json={}, headers={"Origin": "http://127.0.0.1:1"})
            assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
    assert keyspace(redis_db.url) == before


@pytest.fixture(scope="module")
def operator_app(services: ServiceGroup, redis_server_: RedisServer, standin: str, tmp_path_factory: pytest.TempPathFactory) -> AppServer:
    """An app of its own where alice is an operator (ADMIN_USERS): the console's routes are hers."""
    data = tmp_path_factory.mktemp("fuzz-console")
    return start_app(services, app_env(redis_server_.url, f"{standin}/v1", data, ADMIN_USERS="alice"), data)


@pytest.mark.slow  # about a minute of generated requests, like the pass above
async def test_no_console_request_from_the_schema_fails_the_server_or_writes_when_refused(operator_app: AppServer, redis_db: RedisServer) -> None:
    """The console's routes (/admin), from the schema as the operator reads it, each form with her
    valid CSRF token so that the requests reach the handlers' own checks."""
    client = ChatClient(operator_app.url)
    await client.login("alice", USERS["alice"])
    headers = {"Cookie": client.cookie or ""}
    page = httpx.get(f"{operator_app.url}/admin/runs", headers=headers)  # (its "run now" form is always there)
    assert page.status_code == 200, page.text[:200]
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, "no CSRF field on the console's page"
    csrf = found.group(1)
    schema = schemathesis.openapi.from_dict(schema_of(operator_app, client.cookie or ""))
    operations = [op for op in (parsed(r) for r in schema.get_all_operations()) if op.path.startswith("/admin")]
    paths = {(op.method.upper(), op.path) for op in operations}
    assert {("GET", "/admin/review"), ("POST", "/admin/models/promote"), ("POST", "/admin/experiments/start")} <= paths, sorted(paths)
    failures: list[str] = []
    tried = 0
    answered: dict[tuple[str, str], set[int]] = {}

    for op in operations:

        # Values the schema allows, and values it refuses (each must be a 400, never a 5xx).
        cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @given(case=cases)
        @settings(max_examples=CONSOLE_EXAMPLES, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck), database=None)
        def probe(case: schemathesis.Case) -> None:
            nonlocal tried
            if case.method.upper() == "POST" and isinstance(case.body, dict):
                case.body = {**case.body, "csrf": csrf}
            before = keyspace(redis_db.url)
            response = case.call(base_url=operator_app.url, headers=headers, timeout=30, allow_redirects=False)
            tried += 1
            answered.setdefault((case.method.upper(), case.operation.path), set()).add(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r} -> {response.status_code}: {response.text[:200]}")
            elif response.status_code >= 400 and keyspace(redis_db.url) != before:
                failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r} -> {response.status_code} but Redis changed")

        probe()
    assert tried >= len(operations)
    assert not failures, "\n".join(sorted(set(failures))[:20])
    # The token let every form through to its handler: no route answered only "refused" (403).
    assert all(codes - {403} for codes in answered.values()), answered
    assert httpx.get(f"{operator_app.url}/admin", headers=headers).status_code == 200  # her session is still alive

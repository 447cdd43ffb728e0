"""The model registry: model versions, their status, and which one is in service.

The bot reads the active model on every request, so a promotion or rollback takes effect on the
next message without a restart. Every change of the model in service first loads the new one
into the model server (`feedback.serving`): the pointer moves only once the server answered with
it, so no user's answer waits for the load. Management calls (job, CLI, console) are
synchronous; the bot's one read is async.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any, Literal, cast

import redis
from pydantic import BaseModel, Field
from redis.asyncio import Redis as AsyncRedis

from feedback import audit, keys
from feedback.errors import InvalidInput
from feedback.serving import ModelServer

Status = Literal["candidate", "active", "rejected", "retired"]


class RegistryError(InvalidInput):
    """An unknown version, or a change the registry refuses (e.g. promoting a rejected model)."""


class ModelVersion(BaseModel):
    id: str
    parent: str | None = None  # the version it was trained from; None: the base model
    base_model: str
    served_name: str  # what the model server is asked for: a directory for the local server
    adapter_path: str | None = None
    dataset_version: str | None = None
    method: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    status: Status = "candidate"
    decision: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    decided_at: float | None = None

    def missing_files(self) -> list[str]:
        """Local directories this version needs that are not there (a hub id is not checked)."""
        paths = [p for p in (self.served_name, self.adapter_path) if p and p.startswith("/")]
        return [p for p in paths if not Path(p).is_dir()]

    def to_hash(self) -> dict[str, str]:
        data = self.model_dump()
        for name in ("metrics", "decision"):
            data[name] = json.dumps(data[name])
        return {k: "" if v is None else str(v) for k, v in data.items()}

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> ModelVersion:
        fields: dict[str, Any] = {k: (v or None) for k, v in data.items()}
        fields["metrics"] = json.loads(data.get("metrics") or "{}")
        fields["decision"] = json.loads(data.get("decision") or "{}")
        return cls.model_validate(fields)


# --- the bot's read ---------------------------------------------------------------------------


BASE = "base"  # the version name recorded when no promoted model is in service


async def in_service(r: AsyncRedis) -> tuple[str | None, str]:
    """(served name, version id) of the promoted model; (None, "base") means the configured model."""
    name, version = cast(list[str | None], await r.mget(keys.active_model(), keys.active_version()))
    return name, version or BASE


_bases: dict[str, str] = {}  # version id -> its base model: fixed when the version is registered


async def base_models(r: AsyncRedis, version_ids: Iterable[str]) -> dict[str, str]:
    """The base model each registered version was trained from (what its answers name), read once
    per version and process; a version not in the registry is left out."""
    wanted = sorted({v for v in version_ids if v != BASE and v not in _bases and keys.valid_id(v)})
    if wanted:
        async with r.pipeline(transaction=False) as pipe:
            for vid in wanted:
                pipe.hget(keys.model_version(vid), "base_model")
            found = await pipe.execute()
        _bases.update({vid: str(base) for vid, base in zip(wanted, found, strict=True) if base})
    return {v: _bases[v] for v in version_ids if v in _bases}


# --- names shown to people ----------------------------------------------------------------------

_GGUF = re.compile(r"(\.(Q|IQ|F|BF)\d\w*)?\.gguf$", re.IGNORECASE)


@lru_cache(maxsize=64)
def display_name(model: str) -> str:
    """A model as the chat and the console name it, never a path on the server: a local directory
    by the model it holds (the default model: the GGUF file it was converted from, see
    launcher/default_model.py; else the directory's name); a hub id or a served name as it is."""
    path = Path(model)
    if not (path.is_absolute() or model.startswith((".", "~")) or path.is_dir()):
        return model  # "org/name" on a hub, or a name the model server knows
    try:
        source = (path.expanduser() / "converted-from.txt").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        source = ""
    return _GGUF.sub("", PurePath(source).name) if source else PurePath(model).name or model


# --- management -----------------------------------------------------------------------------


def add(r: redis.Redis, version: ModelVersion, pipe: redis.client.Pipeline | None = None) -> None:
    target = pipe if pipe is not None else r.pipeline(transaction=True)
    fields: dict[Any, Any] = version.to_hash()  # redis-py types hash fields as invariant unions
    target.hset(keys.model_version(version.id), mapping=fields)
    target.zadd(keys.model_versions(), {version.id: version.created_at})
    if pipe is None:
        target.execute()


def get(r: redis.Redis, version_id: str) -> ModelVersion:
    data = cast(dict[str, str], r.hgetall(keys.model_version(version_id)))
    if not data:
        raise RegistryError(f"no model version {version_id!r}")
    return ModelVersion.from_hash(data)


def versions(r: redis.Redis) -> list[ModelVersion]:
    """All versions, oldest first."""
    ids = cast(list[str], r.zrange(keys.model_versions(), 0, -1))
    pipe = r.pipeline(transaction=False)
    for vid in ids:
        pipe.hgetall(keys.model_version(vid))
    return [ModelVersion.from_hash(d) for d in pipe.execute() if d]


def active(r: redis.Redis) -> ModelVersion | None:
    vid = cast(str | None, r.get(keys.active_version()))
    return get(r, vid) if vid else None


def activate(pipe: redis.client.Pipeline, new: ModelVersion, old: ModelVersion | None, decision: dict[str, Any] | None = None) -> None:
    """Queue, on a MULTI pipeline, the writes that put `new` in service and retire `old`. The
    caller has loaded `new` into the model server first (ModelServer.warm)."""
    now = time.time()
    if old is not None and old.id != new.id:
        pipe.hset(keys.model_version(old.id), mapping={"status": "retired"})
    fields: dict[Any, Any] = {"status": "active", "decided_at": str(now)}
    if decision is not None:
        fields["decision"] = json.dumps(decision)
    pipe.hset(keys.model_version(new.id), mapping=fields)
    pipe.set(keys.active_model(), new.served_name)
    pipe.set(keys.active_version(), new.id)


def same_base(a: str, b: str) -> bool:
    """Two base model names (hub ids, or local directories however written) name the same model."""

    def normal(name: str) -> str:
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name

    return a == b or normal(a) == normal(b)


def _check_base(version: ModelVersion, server: ModelServer) -> None:
    """A version serves only on the base model it was trained from: its weights (a merged model,
    an adapter) mean nothing on another, e.g. a demo fine-tune after LLM_MODEL changed."""
    if not same_base(version.base_model, server.base_model):
        raise RegistryError(
            f"{version.id} was trained from base model {version.base_model}, but the configured base model is "
            f"{server.base_model}: it can only serve on its own base (set LLM_MODEL to {version.base_model} to serve it)"
        )


def set_aside(r: redis.Redis, version: ModelVersion, reason: str) -> None:
    """Take the version in service out of service without loading anything (`chatbot up` found it
    can't serve, e.g. trained from another base model): the base model serves, and the version is
    kept, retired, with `reason` in its decision (`set_aside`)."""
    pipe = r.pipeline(transaction=True)
    decision = json.dumps({**version.decision, "set_aside": reason})
    pipe.hset(keys.model_version(version.id), mapping={"status": "retired", "decided_at": str(time.time()), "decision": decision})
    pipe.delete(keys.active_model(), keys.active_version())
    pipe.execute()


def promote(r: redis.Redis, version_id: str, server: ModelServer, force: bool = False, who: str | None = None) -> ModelVersion:
    """Put a version in service by hand (e.g. a retired one again), once `server` has loaded it
    (WarmUpError: not loaded, nothing changed). A rejected version needs force: the gate found it
    no better than the model it was compared with. A version of another base model never serves.
    `who`: the operator (the console's user, the CLI's OS user), recorded in the audit log."""
    new = get(r, version_id)
    _check_base(new, server)
    missing = new.missing_files()
    if missing:
        raise RegistryError(f"{version_id} can't be served: {', '.join(missing)} missing")
    if new.status == "rejected" and not force:
        raise RegistryError(f"{version_id} was rejected by the evaluation gate; use --force to promote it anyway")
    server.warm(new.served_name)
    old = active(r)
    pipe = r.pipeline(transaction=True)
    activate(pipe, new, old, {**new.decision, "manual": True})
    pipe.execute()
    if who is not None:
        detail = f"in service instead of {old.id if old else BASE}" + (", past the gate's rejection" if force and new.status == "rejected" else "")
        audit.record(r, who, "promote", f"model:{version_id}", detail)
    return get(r, version_id)


def rollback(r: redis.Redis, server: ModelServer, who: str | None = None) -> ModelVersion | None:
    """Retire the version in service and go back to its parent (None: back to the base model),
    once `server` has loaded that one (WarmUpError: not loaded, nothing changed). `who`: recorded
    in the audit log (as promote)."""
    current = active(r)
    if current is None:
        raise RegistryError("the base model is in service: nothing to roll back")
    parent = get(r, current.parent) if current.parent else None
    if parent is not None:
        _check_base(parent, server)
    if parent is not None and parent.missing_files():
        raise RegistryError(f"can't roll back to {parent.id}: {', '.join(parent.missing_files())} missing; promote another version")
    server.warm(parent.served_name if parent else None)
    pipe = r.pipeline(transaction=True)
    pipe.hset(keys.model_version(current.id), mapping={"status": "retired", "decided_at": str(time.time())})
    if parent is not None:
        activate(pipe, parent, None, {**parent.decision, "rollback_from": current.id})
    else:
        pipe.delete(keys.active_model(), keys.active_version())
    pipe.execute()
    if who is not None:
        audit.record(r, who, "rollback", f"model:{current.id}", f"retired; {parent.id if parent else BASE} in service")
    return active(r)

"""What the page shows as this product rather than as Chainlit: logo, favicon, login image, the
texts Chainlit takes from its translations, and the scripts of the custom elements.

The files ship in bot/ui/ (public/ for images and elements, translations.json for the texts) and
are served by routes put in front of Chainlit's, so they are the same whatever app root Chainlit
runs in (`chatbot up`, the tests, or `chainlit run bot/app.py` from any directory):

    /logo?theme=light|dark     bot/ui/public/logo_<theme>.svg (header, login page, welcome)
    /favicon                   bot/ui/public/favicon.svg (also the avatar and the chat profile icon)
    /public/<file>             bot/ui/public/<file>, else what Chainlit serves from its app root
    /project/translations      Chainlit's texts with bot/ui/translations.json over them
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from chainlit.config import config as chainlit_config
from chainlit.server import serve_public_file
from fastapi import FastAPI, Query, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute

UI_DIR = Path(__file__).resolve().parent / "ui"
PUBLIC_DIR = UI_DIR / "public"
TRANSLATIONS = UI_DIR / "translations.json"
LANGUAGE = r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$"

NAME = "Loop"
ICON = "/public/favicon.svg"
# The welcome screen of a new conversation (the chat profile's description).
WELCOME = (
    f"### Hi, I'm {NAME}\n"
    "Ask me anything, or start with a question below. Rate each answer with 👍 or 👎 "
    "(after a 👎, pick what was wrong): **your ratings teach the assistant** which answers to give."
)
CACHE = "public, max-age=300"


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` written over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@lru_cache(maxsize=1)
def overrides() -> dict[str, Any]:
    return dict(json.loads(TRANSLATIONS.read_text(encoding="utf-8")))


def shipped_file(name: str) -> Path | None:
    """A file shipped in bot/ui/public (never a path outside it)."""
    path = (PUBLIC_DIR / name).resolve()
    return path if path.is_relative_to(PUBLIC_DIR) and path.is_file() else None


def _svg(path: Path) -> FileResponse:
    return FileResponse(path, media_type="image/svg+xml", headers={"Cache-Control": CACHE})


async def logo(theme: str = Query("light", pattern="^(light|dark)$")) -> FileResponse:
    return _svg(PUBLIC_DIR / f"logo_{theme}.svg")


async def favicon() -> FileResponse:
    return _svg(PUBLIC_DIR / "favicon.svg")


async def public_file(filename: str) -> Response:
    path = shipped_file(filename)
    if path is None:
        return await serve_public_file(filename)  # the app root's public/ (Chainlit's route)
    media = "text/javascript" if path.suffix == ".jsx" else None
    return FileResponse(path, media_type=media, headers={"Cache-Control": CACHE})


async def translations(language: str = Query("en-US", pattern=LANGUAGE)) -> JSONResponse:
    """Chainlit's texts for the language (config.ui.language, when set, wins as in Chainlit), with
    ours over them: the app's own texts are English, so they are applied to English only."""
    effective = chainlit_config.ui.language or language
    base = chainlit_config.load_translation(effective)
    texts = merged(base, overrides()) if effective.lower().startswith("en") else base
    return JSONResponse({"translation": texts})


def install(app: FastAPI) -> None:
    """Put the routes in front of Chainlit's (the first matching route wins)."""
    routes = [
        APIRoute("/logo", logo, methods=["GET"], include_in_schema=False),
        APIRoute("/favicon", favicon, methods=["GET"], include_in_schema=False),
        APIRoute("/public/{filename:path}", public_file, methods=["GET"], include_in_schema=False),
        APIRoute("/project/translations", translations, methods=["GET"], include_in_schema=False),
    ]
    app.router.routes[0:0] = routes

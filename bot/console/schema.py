"""What each console route accepts, as pydantic models: every query parameter, path parameter and
form field, validated by FastAPI before a handler runs (and listed in the API schema, which the
fuzz pass of tests/test_fuzz.py reads). A value outside its schema is a 400 naming the field
(pages.ConsoleRoute), never a 500.

Numbers are ASCII digits only: Python's int() takes "١٢" and str.isdigit() takes "²", which
int() then refuses; pydantic's own parsing takes " 1", "+1" and "1_0". A blank field of a GET form
(the review filters send every field, empty when unused) is the same as an absent one.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from bot.console.datasets import SPLITS, VERSION_NAME
from feedback import keys
from feedback.rating import DOWN_REASONS

MAX_REVIEW_PAGE = 400  # pages of 25: the queue's reads are bounded anyway (feedback/review.py)
MAX_MARK = 500  # answers marked reviewed in one POST
MAX_PLAN = 1_000_000  # sample sizes and caps of an experiment
# A prompt version as published (PEP 440: digits, letters, '.', '+', '!', '-', '_').
VERSION_LABEL = r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,63}$"
ID = f"^{keys.ID_PATTERN.pattern}$"
INTEGER = re.compile(r"[0-9]{1,9}")
DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

Reason = Literal["wrong", "unhelpful", "too_long", "unsafe", "off_topic"]
Split = Literal["kto_train", "kto_test", "dpo_train", "dpo_test"]
# Spelled out for the type checker; the same as the lists they come from:
assert set(get_args(Reason)) == {r.value for r in DOWN_REASONS} and get_args(Split) == SPLITS


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _ascii(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str) and not pattern.fullmatch(value):
            raise ValueError(f"must be {what}, written in the digits 0-9")
        return value

    return check


def _user(value: str | None) -> str | None:
    if value is not None and not keys.valid_user(value):
        raise ValueError("must be a user name (letters, digits, '.', '@', '+', '-', '_'; at most 64)")
    return value


def _day(value: Any) -> Any:
    if isinstance(value, str):
        if not DAY.fullmatch(value):
            raise ValueError("must be a date like 2025-01-31")
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC).date()
    return value


def _confirm(value: Any) -> Any:
    return None if value in (None, "") else value


Blank = BeforeValidator(_blank_is_none)
Integer = Annotated[int, BeforeValidator(_ascii(INTEGER, "a whole number"))]
Decimal = Annotated[float, BeforeValidator(_ascii(DECIMAL, "a number like 0.05"))]
Day = Annotated[date, BeforeValidator(_day)]
Yes = Annotated[Literal["yes"] | None, BeforeValidator(_confirm)]  # a ticked checkbox sends "yes"
ModelId = Annotated[str, Field(pattern=ID, description="a model version id")]
ThreadId = Annotated[str, Field(pattern=ID, description="a thread id")]
ExperimentId = Annotated[str, Field(pattern=ID, description="an experiment id")]
PromptVersion = Annotated[str, Field(pattern=VERSION_LABEL, description="a published prompt version")]
DatasetVersion = Annotated[str, Field(pattern=f"^{VERSION_NAME.pattern}$", description="a dataset version")]
ReviewMember = Annotated[str, Field(pattern=f"^{keys.ID_PATTERN.pattern}/{keys.ID_PATTERN.pattern}$", description="<thread id>/<answer id>")]


class Strict(BaseModel):
    """A parameter the route does not know is refused too (a typo must not silently do nothing)."""

    model_config = ConfigDict(extra="forbid", str_max_length=4096)


class ReviewQuery(Strict):
    reason: Annotated[Reason | None, Blank] = None
    prompt: Annotated[PromptVersion | None, Blank] = None
    model: Annotated[ModelId | None, Blank] = None
    user: Annotated[str | None, Blank, AfterValidator(_user)] = None
    since: Annotated[Day | None, Blank] = None
    until: Annotated[Day | None, Blank] = None
    status: Annotated[Literal["open", "reviewed", "all"] | None, Blank] = None
    page: Annotated[Annotated[Integer, Field(ge=1, le=MAX_REVIEW_PAGE)] | None, Blank] = None


class ExperimentsQuery(Strict):
    id: Annotated[ExperimentId | None, Blank] = None


class CsrfForm(Strict):
    """Every console form: the CSRF token (checked by access.Gate before the other fields)."""

    csrf: str = Field(max_length=64, pattern="^[0-9a-f]{64}$")


class MarkForm(CsrfForm):
    id: list[ReviewMember] = Field(default_factory=list, max_length=MAX_MARK)
    back: str = Field("", max_length=2000)  # the review page's query string, to return to


class PromoteForm(CsrfForm):
    version: ModelId
    confirm: Yes = None
    force: Yes = None


class ConfirmForm(CsrfForm):
    confirm: Yes = None


class StartForm(CsrfForm):
    arm: list[PromptVersion] = Field(min_length=2, max_length=10)
    policy: Literal["fixed", "adaptive"] = "fixed"
    min_rated: Annotated[Integer, Field(ge=10, le=MAX_PLAN)]
    max_rated: Annotated[Integer, Field(ge=10, le=MAX_PLAN)]
    alpha: Annotated[Decimal, Field(gt=0, lt=0.5)]
    user_cap: Annotated[Integer, Field(ge=1, le=MAX_PLAN)]
    auto_serve: Yes = None

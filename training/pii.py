"""Replace personal data in chat text with typed placeholders before anything is written to disk.

What is replaced, and how it is recognized:

- ``[EMAIL]``   addresses of the usual form (local@domain.tld), by regex;
- ``[CARD]``    payment card numbers: 13-19 digits, optionally grouped by spaces or dashes,
                starting 2-6 (the card networks' ranges) and Luhn-valid (`stdnum.luhn`);
- ``[IP]``      globally routable IPv4/IPv6 addresses (`ipaddress`); private, loopback and
                documentation ranges (127.0.0.1, 192.168.x.x, ...) are everyday technical text;
- ``[ADDRESS]`` street addresses: a house number, capitalized street name words and a street type
                (221B Baker Street, 1600 Amphitheatre Pkwy), with an optional unit, city, US state
                and ZIP or UK postcode after it;
- ``[PHONE]``   phone numbers that libphonenumber (`phonenumbers`, Google's metadata) finds valid:
                international (+CC) numbers from anywhere, national numbers of `PHONE_REGIONS`.

Why not scrubadub: it pins textblob 0.15 (pulling nltk, scikit-learn, scipy: ~400 MB), its address
detector needs libpostal (a native library with a model download), and, tried here, it turned
"me at john.doe@example.com" into "{{EMAIL}}@example.com" and missed a spaced card number. The two
libraries used here are pure Python, maintained, and need nothing at run time.

Limits (documented in the dataset card): names, lowercase or free-form addresses, and national
phone numbers of other countries are not recognized.

Speed: a text is only searched by the detectors whose trigger it contains ('@', a run of digits),
and libphonenumber (the slow part) only runs on texts with 7+ digits in a phone-like run, checked
again before each region of `PHONE_REGIONS` (a number the first region replaced is not searched
for again); repeated texts (system prompts, few-shot examples) hit a cache.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import phonenumbers
from stdnum import luhn

PHONE_REGIONS = ("US", "GB")  # national formats recognized without a +country code

EMAIL = "[EMAIL]"
PHONE = "[PHONE]"
CARD = "[CARD]"
ADDRESS = "[ADDRESS]"
IP = "[IP]"
KINDS = (EMAIL, PHONE, CARD, ADDRESS, IP)

_EMAIL = re.compile(r"(?<![\w.+-])[\w.%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Speed: these patterns start with a character class and check the character before it with a
# lookbehind placed after it (`X(?<!Y.)` is `(?<!Y)X`): Python's re then skips ahead to candidate
# characters in C instead of trying the lookbehind at every position (3x faster). They use ASCII
# [0-9] (twice as fast as the Unicode-aware \d): cards, IPs and house numbers are ASCII digits.
_CARD = re.compile(r"[2-6](?<![0-9-].)(?:[ -]?[0-9]){12,18}(?![0-9])")
_IPV4 = re.compile(r"[0-9](?<![\w.].)[0-9]{0,2}\.(?:[0-9]{1,3}\.){2}[0-9]{1,3}(?![\w]|\.[0-9])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_STREET_TYPES = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|square|sq|terrace|"
    "parkway|pkwy|highway|hwy|way|circle|cir|crescent|close|gardens|trail|alley|plaza|row"
)
_ADDRESS = re.compile(
    r"[0-9](?<!\w.)[0-9]{0,5}[A-Za-z]?(?:-[0-9]{1,6})?\s+"  # house number: 12, 221B, 10-12
    r"(?:(?:North|South|East|West|[NSEW])\.?\s+)?"
    r"(?:[A-Z0-9][\w'.-]*\s+){1,3}"  # street name: capitalized words (keeps "2 blocks down the road" out)
    rf"(?i:{_STREET_TYPES})\b"
    r"(?:\s+(?:NE|NW|SE|SW|N|S|E|W)\b)?"
    r"(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Flat|#)\.?\s*[\w-]+)?"
    r"(?:,\s*[A-Z][A-Za-z'-]*(?:\s+[A-Z][A-Za-z'-]*){0,2}(?![\w]))?"  # city
    r"(?:,?\s*[A-Z]{2}\s+[0-9]{5}(?:-[0-9]{4})?)?"  # US state and ZIP
    r"(?:,?\s*[A-Z]{1,2}[0-9][A-Z0-9]?\s*[0-9][A-Z]{2}\b)?"  # UK postcode
)
_DIGIT = re.compile(r"\d")  # any script's digits: libphonenumber reads them too
_PHONE_LIKE = re.compile(r"\d(?:[\s().-]{0,3}\d){6,}")  # 7+ digits: the shortest valid numbers


class Scrubbed(NamedTuple):
    text: str
    found: tuple[str, ...]  # one placeholder per replacement, e.g. ("[EMAIL]", "[PHONE]")


def scrub(text: str) -> Scrubbed:
    """The text with personal data replaced by placeholders, and what was replaced."""
    if "@" not in text and not _has_digit(text):
        return Scrubbed(text, ())  # nothing any detector can match: the common case, cheap
    return _scrub_cached(text)


def _has_digit(text: str) -> bool:
    # Ten substring tests (each a memchr-like scan in C) take a sixth of one regex scan for
    # [0-9]: most texts have no digit, so each is scanned in full. isascii() is O(1): only
    # non-ASCII text pays for the slower Unicode-aware search.
    return (
        "0" in text or "1" in text or "2" in text or "3" in text or "4" in text or "5" in text or "6" in text or "7" in text or "8" in text or "9" in text
        or (not text.isascii() and _DIGIT.search(text) is not None)
    )  # fmt: skip


@lru_cache(maxsize=4096)  # system prompts and few-shot examples repeat in every stored prompt
def _scrub_cached(text: str) -> Scrubbed:
    found: list[str] = []
    if "@" in text:
        text = _sub(_EMAIL, text, EMAIL, found)
    if _has_digit(text):
        text = _sub(_CARD, text, CARD, found, _is_card)
        text = _sub(_IPV4, text, IP, found, _is_public_ip)
        if ":" in text:
            text = _sub(_IPV6, text, IP, found, _is_public_ip)
        text = _sub(_ADDRESS, text, ADDRESS, found)
        if _PHONE_LIKE.search(text):
            text = _phones(text, found)
    return Scrubbed(text, tuple(found))


def _sub(pattern: re.Pattern[str], text: str, placeholder: str, found: list[str], check: Callable[[str], bool] | None = None) -> str:
    def replace(m: re.Match[str]) -> str:
        if check is not None and not check(m.group()):
            return m.group()
        found.append(placeholder)
        return placeholder

    return pattern.sub(replace, text)


def _is_card(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def _is_public_ip(candidate: str) -> bool:
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:  # 999.1.1.1, a time like 12:30:45
        return False
    # IPv6: only global unicast, so a slice like xs[1::2] stays text
    return ip.is_global and (ip.version == 4 or ip in _GLOBAL_UNICAST)


def _phones(text: str, found: list[str]) -> str:
    for i, region in enumerate(PHONE_REGIONS):
        if i and not _PHONE_LIKE.search(text):
            break  # the same 7+ digit gate before each region: the usual text's number is gone by now
        spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, region)]
        for start, end in reversed(spans):
            text = text[:start] + PHONE + text[end:]
            found.append(PHONE)
    return text

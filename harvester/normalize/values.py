"""Coercion of single JSON values into typed column values, shared by the normalizers.

Every function here takes whatever a result body holds at some key and returns either a value that
PostgreSQL will accept for the target column or ``None``: a wrong type, an out-of-range number or
an unparseable timestamp is an absent value, never an exception. Pure, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

INT4_MIN = -(2**31)
INT4_MAX = 2**31 - 1
# Text that becomes part of a primary key (email, phone, address, place_id) must fit a btree
# entry (about 2.7 kB after compression); real values are far shorter. Past this many UTF-8
# bytes a value is garbage, and storing it would make PostgreSQL refuse the whole body.
MAX_KEY_BYTES = 1000
# RFC 5321: a forward path is at most 256 octets, so no deliverable address is longer.
MAX_EMAIL_CHARS = 254
# A number written as a JSON string: plain decimal notation only, so "nan", "inf", "1_000" or
# "0x10" (all of which Python's own parsers accept) stay absent values.
NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
MAX_NUMERIC_CHARS = 64
BOOLEANS = {"true": True, "false": False}


def obj(value: Any) -> Mapping[str, Any]:
    """A JSON object, or an empty mapping for anything else (so lookups never fail)."""
    return value if isinstance(value, Mapping) else {}


def text(value: Any) -> str | None:
    """A string as given (already cleaned of NULs), or None for any other type."""
    return value if isinstance(value, str) else None


def stripped(value: Any) -> str | None:
    """A non-empty string with surrounding whitespace removed, or None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def fits_key(value: str) -> bool:
    """Whether ``value`` can be (part of) an index key; see MAX_KEY_BYTES."""
    return len(value) <= MAX_KEY_BYTES and len(value.encode("utf-8")) <= MAX_KEY_BYTES


def numeric_text(value: Any) -> Any:
    """A string holding a plain decimal number as that number; anything else unchanged.

    The docs type counts, ratings and coordinates as numbers, but a stand-in serialising from
    strings (or a CSV-fed worker) sends "4.6" and "823"; those are the same values.
    """
    if not isinstance(value, str):
        return value
    candidate = value.strip()
    if len(candidate) > MAX_NUMERIC_CHARS or NUMERIC.fullmatch(candidate) is None:
        return value
    if "." in candidate or "e" in candidate.lower():
        return float(candidate)
    return int(candidate)


def integer(value: Any) -> int | None:
    """An int that fits PostgreSQL's integer; integral floats and numeric strings are accepted,
    bools are not."""
    value = numeric_text(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and INT4_MIN <= value <= INT4_MAX:
        return value
    return None


def number(value: Any) -> float | None:
    """A finite float from an int, a float or a numeric string (bools excluded)."""
    value = numeric_text(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:  # an int too large for a double
        return None
    return result if math.isfinite(result) else None


def boolean(value: Any) -> bool | None:
    """A JSON boolean, or the strings "true"/"false" in any case; nothing else guesses."""
    if isinstance(value, str):
        return BOOLEANS.get(value.strip().lower())
    return value if isinstance(value, bool) else None


def timestamp(value: Any) -> datetime | None:
    """ISO-8601 with 'Z', an offset or none at all (naive means UTC); anything else is None."""
    if not isinstance(value, str) or not value.strip():
        return None
    candidate = value.strip()
    if candidate[-1:] in ("z", "Z"):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):  # an offset that pushes the year out of range
        return None


def json_object(value: Any) -> dict[str, Any] | None:
    """A JSON object kept whole for a jsonb column, or None."""
    return dict(value) if isinstance(value, Mapping) else None


def json_container(value: Any) -> dict[str, Any] | list[Any] | None:
    """An object or an array kept whole for a jsonb column (e.g. pain_points), or None."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return None


def json_any(value: Any) -> Any:
    """Any JSON value for a free-form jsonb column; None stays None (SQL NULL)."""
    return value


def email(value: Any) -> str | None:
    """Trimmed, lower-cased, 'mailto:' dropped; None unless it looks like an address (has '@')."""
    if isinstance(value, Mapping):
        value = value.get("email") if "email" in value else value.get("address")
    candidate = stripped(value)
    if candidate is None:
        return None
    candidate = candidate.lower()
    if candidate.startswith("mailto:"):
        candidate = candidate[len("mailto:") :].split("?", 1)[0].strip()
    if "@" not in candidate or len(candidate) > MAX_EMAIL_CHARS:
        return None
    return candidate


def first_text(source: Mapping[str, Any], *keys: str) -> str | None:
    """The first non-empty stripped string among the given keys."""
    for key in keys:
        found = stripped(source.get(key))
        if found is not None:
            return found
    return None

"""The values a spec is written in: durations, counts or percentages, shares, names, and
the bounds on what a spec may be (with the JSON Schema of each shorthand)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic.json_schema import WithJsonSchema

SPEC_FILENAME = "phoenix.yaml"
# Bounds on what a spec may be, so a hostile or broken file is refused at once instead of
# exhausting memory or time: its size, its nodes once aliases are expanded, its nesting.
MAX_SPEC_BYTES = 1 << 20
MAX_EXPANDED_NODES = 50_000
MAX_DEPTH = 64
MAX_ROLE_COUNT = 10_000  # servers of one role in one environment
MAX_DURATION = 366 * 86400.0
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")

# What the parsers below accept, as JSON Schema for `phoenix schema` (what a file may say, not
# the number it becomes): _DURATION's spelling, a lookahead keeping zero out; percentages of at
# most 100%. tests/test_schema.py checks that each parser and its schema agree value by value.
_POSITIVE = r"(?=[0-9.]*[1-9])"
_UP_TO_100 = r"0*(?:100(?:\.0+)?|\d{1,2}(?:\.\d+)?)"
DURATION_JSON_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": rf"^\s*{_POSITIVE}\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)?\s*$"},
    ],
    "description": "A duration: seconds, or a string such as 500ms, 30s, 2m, 1h or 7d",
}
DURATION_OR_ZERO_JSON_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)?\s*$"},
    ],
    "description": "A duration that may be zero: seconds, or a string such as 0s, 500ms, 30s or 2m",
}
QUANTITY_JSON_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": rf"^\s*(?:\d+|{_UP_TO_100}%)\s*$"},
    ],
    "description": "A count (2) or a percentage of the role's size (25%)",
}
SHARE_JSON_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "string", "pattern": rf"^\s*{_UP_TO_100}\s*%\s*$"},
    ],
    "description": "A share between 0 and 1, or a percentage (0.95 or 95%)",
}


def parse_duration(value: Any, zero: bool = False) -> float:
    """`500ms`, `30s`, `2m`, `1h`, `7d` or a number of seconds (`zero`: 0 too)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 500ms or 2m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 500ms, 2m)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds):  # .nan and .inf: a deadline that never expires
        raise ValueError("a duration must be a finite number")
    if seconds < 0 or (seconds == 0 and not zero):
        raise ValueError("a duration must be positive" if not zero else "a duration must not be negative")
    if seconds > MAX_DURATION:
        raise ValueError("a duration must be at most 366d")
    return seconds


def parse_quantity(value: Any) -> int | str:
    """A count (`2`) or a percentage of the role's size (`25%`)."""
    if isinstance(value, bool):
        raise ValueError("expected a count or a percentage such as 25%")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if re.fullmatch(r"\d+(\.\d+)?%", text) and float(text[:-1]) <= 100:
        return text
    raise ValueError(f"{value!r} is not a count or a percentage between 0% and 100%")


def parse_share(value: Any) -> float:
    """`0.95` or `95%`."""
    if isinstance(value, str) and (match := _PERCENT.match(value)):
        value = float(match.group(1)) / 100
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{value!r} is not a share between 0 and 1 (or 0% and 100%)")
    return float(value)


# Each shorthand carries its JSON Schema: the type after validation is not what a file says.
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_JSON_SCHEMA, mode="validation")]
DurationOrZero = Annotated[
    float, BeforeValidator(lambda value: parse_duration(value, zero=True)), WithJsonSchema(DURATION_OR_ZERO_JSON_SCHEMA, mode="validation")
]
Quantity = Annotated[int | str, BeforeValidator(parse_quantity), WithJsonSchema(QUANTITY_JSON_SCHEMA, mode="validation")]
Share = Annotated[float, BeforeValidator(parse_share), WithJsonSchema(SHARE_JSON_SCHEMA, mode="validation")]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


def resolve_quantity(quantity: int | str, total: int, round_up: bool) -> int:
    """Turn a count or percentage into a number of servers (percentages round as asked)."""
    if isinstance(quantity, int):
        return quantity
    exact = float(quantity[:-1]) * total / 100
    return math.ceil(exact - 1e-9) if round_up else math.floor(exact + 1e-9)



# `logs.ship_to`: an RFC 5424 receiver over TCP (octet-counted framing). The host is written into
# rsyslog configurations: names and addresses only, nothing that could end a quoted word.
SHIP_TO_PATTERN = r"^syslog\+tcp://([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):([0-9]{1,5})$"


def parse_ship_to(value: Any) -> str:
    match = re.match(SHIP_TO_PATTERN, value) if isinstance(value, str) else None
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"{value!r} is not syslog+tcp://HOST:PORT (a host name or address, a port 1-65535)")
    return value


def ship_to_address(value: str) -> tuple[str, int]:
    """`syslog+tcp://HOST:PORT` as (host, port)."""
    match = re.match(SHIP_TO_PATTERN, value)
    return match.group(1).strip("[]"), int(match.group(2))


ShipTo = Annotated[str, BeforeValidator(parse_ship_to), WithJsonSchema({"type": "string", "pattern": SHIP_TO_PATTERN}, mode="validation")]

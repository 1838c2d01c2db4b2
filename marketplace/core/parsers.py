"""The API's JSON parser: bounded nesting and integers, so that no body can turn into a 500.

`json.loads` recurses once per nesting level (a body nested 10,000 deep dies with RecursionError)
and gives Python's unbounded integers, which overflow the database's 64-bit columns. Both are
refused here as a 400 before any view sees the data.
"""

import itertools
import json
import math
import operator
import re

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_JSON_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_ESCAPE = re.compile(r"\\.", re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def json_nesting_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON `text` nests arrays and objects deeper than `limit`, judged without recursion
    in one linear pass: exact for well-formed JSON; a malformed body may be called too deep, and is
    refused either way."""
    # Drop escapes, then the strings' contents (every second piece between quotes): the brackets
    # left are the structure.
    outside_strings = "".join(_ESCAPE.sub("", text).split('"')[::2])
    steps = _NOT_BRACKET.sub("", outside_strings).encode().translate(_STEPS)
    if not steps:
        return False
    # After k brackets of which o open, the depth is o - (k - o): the running sum of the steps
    # (2 per opener, 0 per closer) minus k.
    return max(map(operator.sub, itertools.accumulate(steps), itertools.count(1))) > limit


def _bounded_int(text: str) -> int:
    # 19 digits hold every int64: longer literals are refused before int() does any work.
    if len(text.lstrip("-")) <= 19:
        value = int(text)
        if INT64_MIN <= value <= INT64_MAX:
            return value
    shown = text if len(text) <= 24 else f"{text[:20]}..."
    raise ValueError(f"the integer {shown} is outside the signed 64-bit range")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:24]} is out of range")
    return value


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with `MAX_JSON_DEPTH` levels at most, integers within signed 64 bits and
    finite numbers only; anything else is a 400 `parse_error` with the reason."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - the body is not valid {encoding}.") from exc
        if json_nesting_exceeds(text):
            raise ParseError(f"JSON parse error - the body is nested deeper than {MAX_JSON_DEPTH} levels.")
        try:
            return json.loads(
                text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constants
            )
        except (ValueError, RecursionError) as exc:  # RecursionError: a second line behind the depth check
            raise ParseError(f"JSON parse error - {exc}") from exc

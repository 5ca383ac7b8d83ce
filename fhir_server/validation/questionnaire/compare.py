"""Comparing a QR answer value with a value from the Questionnaire (enableWhen.answer[x], minValue,
maxValue), without ever guessing.

Why one module: enableWhen operators (=, !=, >, <, >=, <=) and the minValue/maxValue extensions
need the same two questions answered — are these equal, and how do they order — for the R4 types
involved. Each function returns None when the two values cannot be compared (different types,
units that differ, dates of different precision that agree as far as both go); callers treat None
as "condition not met" / "not checkable".

Spec: R4 questionnaire-enable-operator (clarified text in research/validation.md Q-08: ordered
operators for decimal, integer, date, dateTime, time, string, Quantity; Coding only = and !=;
Coding equality on system + code, display ignored, a system in the condition requires the same
system in the answer); R4 datatypes.html (date/dateTime/time lexical forms, partial dates).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["equal", "order", "answer_value"]

_NUMBER_KEYS = frozenset(("Integer", "Decimal"))
_TEMPORAL_KEYS = frozenset(("Date", "DateTime"))


def answer_value(answer: Any) -> tuple[str, Any] | None:
    """The (value[x] key, value) of a QR answer, None when it carries no value."""
    if type(answer) is not dict:
        return None
    for key, value in answer.items():
        if key.startswith("value"):
            return key, value
    return None


def equal(expected_key: str, expected: Any, actual_key: str, actual: Any) -> bool | None:
    """Whether a QR answer value equals a Questionnaire value; None when incomparable.

    The keys are full element names ("answerCoding", "valueCoding", "valueInteger"); only the type
    suffix after `answer` / `value` matters, so an enableWhen.answerInteger compares with a
    valueDecimal answer."""
    a_type, e_type = _suffix(actual_key), _suffix(expected_key)
    if e_type == "Coding" and a_type == "Coding":
        return _coding_equal(expected, actual)
    if e_type == "Reference" and a_type == "Reference":
        if type(expected) is dict and type(actual) is dict and expected.get("reference"):
            return expected.get("reference") == actual.get("reference")
        return None
    if e_type == "Boolean" and a_type == "Boolean":
        return expected is actual if type(expected) is bool and type(actual) is bool else None
    if e_type in ("String", "Uri") and a_type in ("String", "Uri"):
        return expected == actual if isinstance(expected, str) and isinstance(actual, str) else None
    ordering = order(expected_key, expected, actual_key, actual)
    return None if ordering is None else ordering == 0


def order(expected_key: str, expected: Any, actual_key: str, actual: Any) -> int | None:
    """-1 / 0 / 1 as the answer value is below / equal to / above the Questionnaire value; None when
    they have no order (Coding, Boolean, different types, incompatible units, indeterminate dates)."""
    a_type, e_type = _suffix(actual_key), _suffix(expected_key)
    if a_type in _NUMBER_KEYS and e_type in _NUMBER_KEYS:
        return _cmp(_number(actual), _number(expected))
    if a_type in _TEMPORAL_KEYS and e_type in _TEMPORAL_KEYS:
        return _temporal_order(actual, expected)
    if a_type == "Time" and e_type == "Time":
        return _cmp(_time(actual), _time(expected))
    if a_type in ("String", "Uri") and e_type in ("String", "Uri"):
        if isinstance(actual, str) and isinstance(expected, str):
            return (actual > expected) - (actual < expected)
        return None
    if a_type == "Quantity" and e_type == "Quantity":
        return _quantity_order(actual, expected)
    return None


def _suffix(key: str) -> str:
    if key.startswith("answer"):
        return key[6:]
    if key.startswith("value"):
        return key[5:]
    return key


def _cmp(a: Any, b: Any) -> int | None:
    if a is None or b is None:
        return None
    return (a > b) - (a < b)


def _number(value: Any) -> Decimal | None:
    if type(value) is bool or type(value) not in (int, float, Decimal, str):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _coding_equal(expected: Any, actual: Any) -> bool | None:
    if type(expected) is not dict or type(actual) is not dict or not isinstance(expected.get("code"), str):
        return None
    if expected.get("code") != actual.get("code"):
        return False
    return "system" not in expected or expected.get("system") == actual.get("system")


def _quantity_order(actual: Any, expected: Any) -> int | None:
    """Quantities compare by value when their units agree (same system+code, or the same `unit`
    text when neither is coded). Unlike the Java validator (which ignores units) a mismatch is
    "incomparable", never a silent wrong answer."""
    if type(actual) is not dict or type(expected) is not dict:
        return None
    if expected.get("code") is not None or actual.get("code") is not None:
        if (expected.get("system"), expected.get("code")) != (actual.get("system"), actual.get("code")):
            return None
    elif expected.get("unit") != actual.get("unit"):
        return None
    return _cmp(_number(actual.get("value")), _number(expected.get("value")))


def _time(value: Any) -> tuple[int, int, Decimal] | None:
    if not isinstance(value, str) or len(value) < 8:
        return None
    try:
        return int(value[0:2]), int(value[3:5]), Decimal(value[6:])
    except (ValueError, InvalidOperation):
        return None


def _temporal_order(actual: Any, expected: Any) -> int | None:
    """Order two date/dateTime values. Full dateTimes with a time zone compare as instants; otherwise
    the calendar parts compare up to the shorter precision, and a tie at unequal precision (2024-05
    vs 2024-05-10) is indeterminate (R4 datatypes.html: a partial date is a period)."""
    if not isinstance(actual, str) or not isinstance(expected, str):
        return None
    if len(actual) > 10 and len(expected) > 10:
        a, e = _instant(actual), _instant(expected)
        if a is not None and e is not None:
            return _cmp(a, e)
    a_parts, e_parts = _date_parts(actual), _date_parts(expected)
    if a_parts is None or e_parts is None:
        return None
    shared = min(len(a_parts), len(e_parts))
    result = _cmp(a_parts[:shared], e_parts[:shared])
    if result == 0 and len(a_parts) != len(e_parts):
        return None
    return result


def _instant(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc) if parsed.tzinfo else None


def _date_parts(value: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in value[:10].split("-"))
    except ValueError:
        return None

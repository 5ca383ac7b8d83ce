"""fixed[x] and pattern[x] (validation.md VAL-15, VAL-16; R4 ElementDefinition.fixed[x]/.pattern[x]).

- fixed: the instance equals the value exactly; "missing elements/attributes must also be
  missing", so extra properties (a `display`, an extension) fail, and a fixed primitive may not
  carry extensions (Java: "No extensions allowed, as the specified fixed value doesn't contain any").
- pattern: every property of the pattern is present in the instance and matches recursively;
  for arrays, each pattern item matches at least one instance item; anything else is allowed.

Primitive comparison is by JSON value: strings exactly, numbers numerically (1.0 == 1.00 as JSON
numbers; parsers give int, float or Decimal), booleans only with booleans (True is not 1).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["equal_fixed", "matches_pattern", "same_primitive"]


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def same_primitive(instance: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(instance, bool):
        return type(instance) is type(expected) and instance == expected
    left, right = _number(instance), _number(expected)
    if left is not None or right is not None:
        return left is not None and right is not None and left == right
    return instance == expected


def equal_fixed(instance: Any, fixed: Any) -> bool:
    """Exact equality of JSON values (VAL-15)."""
    if isinstance(fixed, dict):
        if not isinstance(instance, dict) or instance.keys() != fixed.keys():
            return False
        return all(equal_fixed(instance[key], value) for key, value in fixed.items())
    if isinstance(fixed, list):
        if not isinstance(instance, list) or len(instance) != len(fixed):
            return False
        return all(equal_fixed(i, f) for i, f in zip(instance, fixed))
    return same_primitive(instance, fixed)


def matches_pattern(instance: Any, pattern: Any) -> bool:
    """Partial match (VAL-16)."""
    if isinstance(pattern, dict):
        if not isinstance(instance, dict):
            return False
        for key, expected in pattern.items():
            if key not in instance:
                return False
            if not matches_pattern(instance[key], expected):
                return False
        return True
    if isinstance(pattern, list):
        items = instance if isinstance(instance, list) else [instance]
        return all(any(matches_pattern(item, wanted) for item in items) for wanted in pattern)
    if isinstance(instance, list):
        return any(same_primitive(item, pattern) for item in instance)
    return same_primitive(instance, pattern)

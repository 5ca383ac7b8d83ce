"""Numbers with their implied precision (R4 search.html#number).

"When a number is searched with eq, the implied precision of the value is used: 100 is treated as
[99.5, 100.5)". We store every decimal value with the half-open range [low, high) its written
precision implies, so the matcher can apply either side's precision. Decisions:

- Values are Python floats: SQLite (REAL) and MongoDB (double) index them natively. The bounds
  are computed exactly with `decimal.Decimal` and rounded once to float.
- The precision is read from the value as parsed: a `Decimal` keeps the digits as written
  ("1.50" -> exponent -2); a float has lost trailing zeros ("1.50" -> 1.5 -> exponent -1), so a
  store that parses JSON with floats gets the precision of the shortest float repr; an int gives
  exponent 0 ("100" -> [99.5, 100.5)).
- `integer`, `positiveInt` and `unsignedInt` elements are exact: low == high == value (a point,
  not a half-open range).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["as_decimal", "implied_range"]


def as_decimal(value: object) -> Decimal | None:
    """The JSON number `value` as a Decimal carrying its written precision, or None."""
    if value.__class__ is bool:
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        try:
            result = Decimal(repr(value))
        except InvalidOperation:
            return None
        return result if result.is_finite() else None
    return None


def implied_range(value: Decimal) -> tuple[float, float]:
    """[low, high) of a decimal value: plus/minus half a unit in its last written digit."""
    half = Decimal(5).scaleb(value.as_tuple().exponent - 1)  # type: ignore[operator]
    return float(value - half), float(value + half)

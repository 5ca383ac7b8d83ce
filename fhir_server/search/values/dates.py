"""FHIR date, dateTime and instant values as the inclusive range of UTC epoch milliseconds they cover.

R4 search.html#date: "the date parameter format is yyyy-mm-ddThh:mm:ss[Z|(+|-)hh:mm] ... the
precision of the value determines the range it covers": "2020" covers the whole year,
"2020-03" the month, "2020-03-04" the day, a time to the second covers that second and a
fractional second the digits given (".5" covers 500..599 ms; three or more digits, one
millisecond). Decisions where the spec leaves room:

- A value without a timezone (a date, a partial dateTime, or a dateTime that omits the zone
  although R4 datatypes.html#dateTime requires one when a time is given) is taken as UTC.
- Seconds "60" (a leap second, allowed by the R4 regex) is accepted and rolls into the next minute.
- "hh:mm" without seconds is accepted (search values may use it; R4 search.html#date).
- Open ends of a Period are the sentinels `DATE_MIN` / `DATE_MAX` (the signed 64-bit integer
  limits, storable as an INTEGER in SQLite and an Int64 in MongoDB).
- The calendar arithmetic is proleptic Gregorian and handles years 0001-9999 without `datetime`;
  dates before 1970 are negative.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["DATE_MAX", "DATE_MIN", "date_range"]

DATE_MIN = -(2**63)
DATE_MAX = 2**63 - 1

_MS_PER_DAY = 86_400_000
_PATTERN = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _month_length(year: int, month: int) -> int:
    return 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month - 1]


@lru_cache(maxsize=16_384)
def date_range(text: str) -> tuple[int, int] | None:
    """The inclusive [low, high] epoch-millisecond range `text` covers, or None if it is no date."""
    match = _PATTERN.fullmatch(text)
    if match is None:
        return None
    year_s, month_s, day_s, hour_s, minute_s, second_s, fraction, zone = match.groups()
    year = int(year_s)
    if year == 0:
        return None
    if month_s is None:
        return _days_from_civil(year, 1, 1) * _MS_PER_DAY, _days_from_civil(year + 1, 1, 1) * _MS_PER_DAY - 1
    month = int(month_s)
    if not 1 <= month <= 12:
        return None
    if day_s is None:
        low = _days_from_civil(year, month, 1) * _MS_PER_DAY
        return low, low + _month_length(year, month) * _MS_PER_DAY - 1
    day = int(day_s)
    if not 1 <= day <= _month_length(year, month):
        return None
    low = _days_from_civil(year, month, day) * _MS_PER_DAY
    if hour_s is None:
        return low, low + _MS_PER_DAY - 1
    hour, minute = int(hour_s), int(minute_s)
    if hour > 23 or minute > 59:
        return None
    low += (hour * 60 + minute) * 60_000
    if second_s is None:
        span = 60_000
    else:
        second = int(second_s)
        if second > 60:
            return None
        low += second * 1000
        if fraction is None:
            span = 1000
        elif len(fraction) >= 3:
            low += int(fraction[:3])
            span = 1
        else:
            span = 10 ** (3 - len(fraction))
            low += int(fraction) * span
    if zone and zone != "Z":
        offset_minutes = int(zone[1:3]) * 60 + int(zone[4:6])
        if offset_minutes > 14 * 60 or int(zone[4:6]) > 59:
            return None
        # Local time = UTC + offset, so UTC = local - offset.
        low -= (offset_minutes if zone[0] == "+" else -offset_minutes) * 60_000
    return low, low + span - 1

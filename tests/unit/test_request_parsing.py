"""Small parsers of the REST layer: Prefer, If-Match, _since, _count."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fhir_server.errors import InvalidRequest
from fhir_server.interactions.history import parse_count, parse_instant
from fhir_server.interactions.preconditions import parse_if_match
from fhir_server.interactions.prefer import parse_prefer


@pytest.mark.parametrize("header,expected", [
    (None, "representation"), ("return=minimal", "minimal"), ('return="OperationOutcome"', "OperationOutcome"),
    ("respond-async, return=minimal", "minimal"), ("return=bogus", "representation"),
])
def test_prefer_return(header, expected):
    assert parse_prefer(header).return_ == expected


def test_prefer_handling_strict():
    assert parse_prefer("handling=strict").strict
    assert not parse_prefer("handling=lenient").strict


@pytest.mark.parametrize("header,expected", [('W/"3"', 3), ('"12"', 12), ("7", 7), (None, None), ("", None)])
def test_if_match_versions(header, expected):
    assert parse_if_match(header) == expected


@pytest.mark.parametrize("header", ['W/"abc"', "*", 'W/"1", W/"2"'])
def test_if_match_rejects_what_is_not_a_version(header):
    with pytest.raises(InvalidRequest):
        parse_if_match(header)


@pytest.mark.parametrize("value,expected", [
    ("2024", datetime(2024, 1, 1, tzinfo=timezone.utc)),
    ("2024-03-05", datetime(2024, 3, 5, tzinfo=timezone.utc)),
    ("2024-03-05T10:11:12Z", datetime(2024, 3, 5, 10, 11, 12, tzinfo=timezone.utc)),
    ("2024-03-05T10:11:12.250+02:00", datetime(2024, 3, 5, 8, 11, 12, 250000, tzinfo=timezone.utc)),
])
def test_since_accepts_instants_dates_and_offsets(value, expected):
    assert parse_instant(value, "_since") == expected


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-02-30", "2024-03-05T25:00:00Z"])
def test_since_rejects_malformed_values(value):
    with pytest.raises(InvalidRequest):
        parse_instant(value, "_since")


def test_count_is_clamped_and_validated():
    assert parse_count(None) == 50
    assert parse_count("5000") == 1000
    assert parse_count("0") == 1
    with pytest.raises(InvalidRequest):
        parse_count("-1")


def test_search_cursor_round_trips_infinite_sort_values():
    from fhir_server.interactions.search import decode_cursor, encode_cursor

    cursor = ("after", [float("inf"), float("-inf"), "text", 3])
    assert decode_cursor(encode_cursor(cursor)) == cursor


def test_search_cursor_rejects_what_it_did_not_issue():
    from fhir_server.interactions.search import decode_cursor

    with pytest.raises(InvalidRequest):
        decode_cursor("not-a-cursor")

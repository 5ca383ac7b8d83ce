"""The audit trail's hash chain (fhir_server/audit/chain.py): seal links each AuditEvent to the one
before it; verify walks a trail newest first and names the first broken link, for an altered,
a deleted, a reordered and a truncated trail, and for one whose oldest events a retention purge
removed (which is not a break)."""

from __future__ import annotations

import asyncio
import copy

import orjson
import pytest

from fhir_server.audit import chain


def event(n: int) -> dict:
    return {"resourceType": "AuditEvent", "id": f"ev-{n}", "action": "R", "outcome": "0",
            "recorded": f"2026-11-30T00:00:{n:02d}Z", "entity": [{"what": {"reference": f"Observation/o{n}"}}]}


def sealed_trail(count: int) -> list[dict]:
    """`count` sealed events, oldest first, as the store would keep them (with meta added after)."""
    events, link = [], chain.START
    for n in range(1, count + 1):
        sealed, link = chain.seal(event(n), link)
        events.append({**sealed, "meta": {"versionId": "1", "lastUpdated": sealed["recorded"]}})
    return events


def verify(events: list[dict | None], ids: list[str] | None = None) -> chain.Verification:
    """chain.verify over stored (id, body) pairs given oldest first (None: a deletion marker)."""
    ids = ids or [e["id"] if e is not None else "gone" for e in events]
    stored = [(i, orjson.dumps(e) if e is not None else None) for i, e in zip(ids, events)]

    async def newest_first():
        for pair in reversed(stored):
            yield pair

    return asyncio.run(chain.verify(newest_first()))


def parts(event: dict) -> dict[str, str]:
    [extension] = [x for x in event["extension"] if x["url"] == chain.CHAIN_URL]
    return {p["url"]: p["valueString"] for p in extension["extension"]}


# -- seal ---------------------------------------------------------------------------------------------


def test_seal_numbers_the_events_and_links_each_to_the_previous_hash():
    events = sealed_trail(3)
    assert chain.positions(events) == [1, 2, 3]
    assert parts(events[0])["previous"] == chain.GENESIS
    assert parts(events[1])["previous"] == parts(events[0])["hash"]
    assert parts(events[2])["previous"] == parts(events[1])["hash"]
    assert len({parts(e)["hash"] for e in events}) == 3


def test_seal_returns_the_link_the_next_event_needs_and_link_of_reads_it_back():
    sealed, link = chain.seal(event(1), chain.START)
    assert link == chain.Link(1, parts(sealed)["hash"])
    assert chain.link_of(orjson.dumps(sealed)) == link
    assert chain.link_of(None) == chain.START
    assert chain.link_of(orjson.dumps(event(9))) == chain.START  # an unsealed event starts nothing


def test_the_hash_ignores_meta_and_key_order_but_not_content():
    sealed, link = chain.seal(event(1), chain.START)
    reordered = dict(reversed(list(sealed.items())))
    reordered["meta"] = {"versionId": "7", "lastUpdated": "2030-01-01T00:00:00Z"}
    assert verify([reordered]).first_break is None
    assert chain.seal(event(1), chain.START)[1] == link  # deterministic


def test_seal_keeps_the_events_own_extensions():
    other = {"url": "http://example.org/x", "valueString": "kept"}
    sealed, _ = chain.seal({**event(1), "extension": [other]}, chain.START)
    assert sealed["extension"][0] == other
    assert verify([sealed]).first_break is None


# -- verify -------------------------------------------------------------------------------------------


def test_a_whole_trail_verifies_and_reports_its_head():
    events = sealed_trail(5)
    result = verify(events)
    assert result.first_break is None and result.breaks == []
    assert result.events == 5
    assert result.head == chain.Link(5, parts(events[-1])["hash"])


def test_an_empty_trail_is_whole():
    result = verify([])
    assert result.events == 0 and result.first_break is None and result.head == chain.START


@pytest.mark.parametrize("position", [1, 3, 5])
def test_an_altered_event_is_named_by_its_position(position):
    events = sealed_trail(5)
    events[position - 1]["outcome"] = "8"
    broken = verify(events).first_break
    assert broken is not None
    assert (broken.position, broken.event_id) == (position, f"ev-{position}")
    assert "altered" in broken.reason


def test_an_altered_hash_breaks_the_event_and_the_next_link():
    events = sealed_trail(4)
    [extension] = [x for x in events[1]["extension"] if x["url"] == chain.CHAIN_URL]
    extension["extension"][2]["valueString"] = "f" * 64
    result = verify(events)
    assert result.first_break.position == 2
    assert {b.position for b in result.breaks} == {2, 3}  # its content no longer matches; 3 no longer chains


def test_an_event_resealed_after_altering_breaks_the_link_after_it():
    events = sealed_trail(5)
    previous = parts(events[1])
    altered = {k: v for k, v in events[2].items() if k not in ("extension", "meta")}
    altered["outcome"] = "8"
    events[2], _ = chain.seal(altered, chain.Link(2, previous["hash"]))
    result = verify(events)
    assert result.first_break.position == 4
    assert "does not chain" in result.first_break.reason


@pytest.mark.parametrize("position", [2, 3, 4])
def test_a_deleted_event_is_named_by_the_missing_position(position):
    events = sealed_trail(5)
    del events[position - 1]
    broken = verify(events).first_break
    assert broken is not None and broken.position == position
    assert f"events {position}..{position} are missing" in broken.reason


def test_several_deleted_events_are_named_as_a_range():
    events = sealed_trail(8)
    del events[2:5]  # positions 3, 4, 5
    broken = verify(events).first_break
    assert broken.position == 3 and "events 3..5 are missing" in broken.reason


def test_a_deletion_marker_in_place_of_an_event_is_a_break():
    events: list[dict | None] = list(sealed_trail(4))
    events[1] = None
    result = verify(events)
    assert result.first_break is not None
    assert any("deleted" in b.reason for b in result.breaks)


def test_a_reordered_trail_is_found():
    events = sealed_trail(5)
    events[1], events[2] = events[2], events[1]  # stored in the wrong order
    result = verify(events)
    assert result.first_break is not None
    assert result.first_break.position in (2, 3, 4)


def test_an_event_moved_to_another_chain_position_is_found():
    """Rewriting the position number of an event (to hide a deletion) changes its hash."""
    events = sealed_trail(5)
    del events[2]
    for event in events[2:]:  # renumber 4, 5 as 3, 4 without resealing
        [extension] = [x for x in event["extension"] if x["url"] == chain.CHAIN_URL]
        extension["extension"][0]["valueString"] = str(int(extension["extension"][0]["valueString"]) - 1)
    result = verify(events)
    assert result.first_break is not None and result.first_break.position == 3


def test_a_trail_whose_oldest_events_were_purged_still_verifies():
    """Retention removes the oldest events: the oldest kept one points at a purged event, which is allowed."""
    events = sealed_trail(6)[3:]
    result = verify(events)
    assert result.first_break is None
    assert result.events == 3 and result.head.position == 6
    assert result.oldest == 4  # what verify reports, for the operator to hold against the retention policy
    assert verify(sealed_trail(2)).oldest == 1
    assert verify([]).oldest is None


def test_truncating_the_first_event_is_accepted_as_a_purge_but_a_forged_first_event_is_not():
    """Deleting event 1 looks like retention (the head still says what the trail held); a 'first' event
    that does not start from the genesis hash is refused."""
    events = sealed_trail(4)
    assert verify(events[1:]).first_break is None
    forged = {k: v for k, v in event(1).items()}
    forged_sealed, _ = chain.seal(forged, chain.Link(0, "a" * 64))
    result = verify([forged_sealed, *[copy.deepcopy(e) for e in events[1:]]])
    assert result.first_break is not None and result.first_break.position == 1


def test_the_newest_events_removed_leave_a_whole_but_shorter_chain_with_an_older_head():
    """Only the head kept elsewhere shows it: verify reports the head for the operator to compare."""
    events = sealed_trail(6)
    before = verify(events).head
    after = verify(events[:4])
    assert after.first_break is None
    assert after.head.position == 4 and after.head != before


def test_an_event_without_the_chain_extension_is_a_break():
    events = sealed_trail(3)
    events[1] = {k: v for k, v in events[1].items() if k != "extension"}
    result = verify(events)
    assert result.first_break is not None
    assert any("no chain extension" in b.reason for b in result.breaks)


def test_two_events_at_one_position_are_reported_as_a_fork():
    """Two writers that both chained to the same event (their appends were not serialised)."""
    events = sealed_trail(3)
    fork, _ = chain.seal(event(9), chain.Link(2, parts(events[1])["hash"]))
    result = verify([*events, fork])
    assert result.first_break is not None and result.first_break.position == 3
    assert "fork" in result.first_break.reason and "missing" not in result.first_break.reason


def test_a_swap_is_reported_as_a_reorder_not_as_missing_events():
    events = sealed_trail(5)
    events[1], events[2] = events[2], events[1]
    reasons = [b.reason for b in verify(events).breaks]
    assert any("reordered" in r for r in reasons)
    assert not any(".." in r and "missing" in r and int(r.split("..")[0].split()[-1]) > int(r.split("..")[1].split()[0])
                   for r in reasons)  # never "events 4..1 are missing"

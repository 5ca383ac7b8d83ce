"""The Store protocol's contract, run against every backend (MongoDB joins when it lands)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from fhir_server.storage import HistoryQuery, ResourceExists, VersionConflict


async def _write(store, id: str, **fields):
    async with store.unit_of_work() as uow:
        return await uow.write("Patient", id, {"resourceType": "Patient", **fields}, method="PUT")


async def test_write_sets_id_version_and_last_updated_in_stored_bytes(store):
    v = await _write(store, "a", active=True)
    body = orjson.loads(v.body)
    assert (v.version, body["id"], body["meta"]["versionId"]) == (1, "a", "1")
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert list(body)[:3] == ["resourceType", "id", "meta"]


async def test_read_returns_the_exact_bytes_written(store):
    written = await _write(store, "a", active=True)
    read = await store.read("Patient", "a")
    assert read.body == written.body
    assert read.version == 1 and not read.deleted


async def test_each_write_is_a_new_version_and_old_ones_stay(store):
    await _write(store, "a", active=True)
    await _write(store, "a", active=False)
    assert (await store.read("Patient", "a")).version == 2
    assert orjson.loads((await store.vread("Patient", "a", 1)).body)["active"] is True
    assert await store.vread("Patient", "a", 3) is None


async def test_expected_version_mismatch_raises_version_conflict(store):
    await _write(store, "a")
    with pytest.raises(VersionConflict):
        async with store.unit_of_work() as uow:
            await uow.write("Patient", "a", {"resourceType": "Patient"}, method="PUT", expected_version=2)
    assert (await store.read("Patient", "a")).version == 1


async def test_must_not_exist_refuses_a_taken_id(store):
    await _write(store, "a")
    with pytest.raises(ResourceExists):
        async with store.unit_of_work() as uow:
            await uow.write("Patient", "a", {"resourceType": "Patient"}, method="POST", must_not_exist=True)


async def test_delete_records_a_marker_version(store):
    await _write(store, "a")
    async with store.unit_of_work() as uow:
        marker = await uow.delete("Patient", "a")
    assert marker.version == 2 and marker.deleted
    current = await store.read("Patient", "a")
    assert current.deleted and current.version == 2


async def test_delete_of_missing_or_deleted_resource_returns_none(store):
    async with store.unit_of_work() as uow:
        assert await uow.delete("Patient", "nope") is None
    await _write(store, "a")
    async with store.unit_of_work() as uow:
        await uow.delete("Patient", "a")
    async with store.unit_of_work() as uow:
        assert await uow.delete("Patient", "a") is None


async def test_unit_of_work_is_all_or_nothing(store):
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await uow.write("Patient", "x", {"resourceType": "Patient"}, method="PUT")
            await uow.write("Patient", "y", {"resourceType": "Patient"}, method="PUT")
            raise RuntimeError("a later entry failed")
    assert await store.read("Patient", "x") is None
    assert await store.read("Patient", "y") is None


async def test_unit_of_work_reads_its_own_writes(store):
    async with store.unit_of_work() as uow:
        await uow.write("Patient", "x", {"resourceType": "Patient"}, method="PUT")
        assert (await uow.read("Patient", "x")).version == 1
        assert await store.read("Patient", "x") is None  # not visible to others before commit


async def test_writes_in_one_unit_of_work_share_last_updated(store):
    async with store.unit_of_work() as uow:
        a = await uow.write("Patient", "a", {"resourceType": "Patient"}, method="PUT")
        b = await uow.write("Patient", "b", {"resourceType": "Patient"}, method="PUT")
    assert a.last_updated == b.last_updated


async def test_concurrent_writers_with_the_same_expected_version_cannot_both_win(store):
    await _write(store, "a")

    async def attempt():
        async with store.unit_of_work() as uow:
            return await uow.write("Patient", "a", {"resourceType": "Patient"}, method="PUT", expected_version=1)

    results = await asyncio.gather(attempt(), attempt(), return_exceptions=True)
    assert sum(isinstance(r, VersionConflict) for r in results) == 1
    assert (await store.read("Patient", "a")).version == 2


async def test_history_is_newest_first_with_cursor_paging(store):
    for n in range(5):
        await _write(store, "a", birthDate=f"200{n}")
    page = await store.history(HistoryQuery("Patient", "a", count=2))
    assert [v.version for v in page.versions] == [5, 4] and page.total == 5
    page2 = await store.history(HistoryQuery("Patient", "a", count=2, at_or_before_seq=page.next_seq))
    assert [v.version for v in page2.versions] == [3, 2]
    page3 = await store.history(HistoryQuery("Patient", "a", count=2, at_or_before_seq=page2.next_seq))
    assert [v.version for v in page3.versions] == [1] and page3.next_seq is None


async def test_history_filters_by_type_and_since(store):
    await _write(store, "a")
    async with store.unit_of_work() as uow:
        org = await uow.write("Organization", "o", {"resourceType": "Organization"}, method="PUT")
    assert {v.resource_type for v in (await store.history(HistoryQuery("Organization"))).versions} == {"Organization"}
    since = await store.history(HistoryQuery(since=org.last_updated))
    assert org.id in {v.id for v in since.versions}
    assert all(v.last_updated >= org.last_updated for v in since.versions)


async def test_data_survives_reopening(store):
    await _write(store, "a", active=True)
    await store.close()
    await store.open()  # a fresh connection to the same database
    assert orjson.loads((await store.read("Patient", "a")).body)["active"] is True

"""Bulk export pieces without a server: kick-off parsing, the runner on a real SQLite store
(levels, _since, _typeFilter, splitting, the transactionTime cut-off, deleted resources, resuming
from a checkpoint), the retention sweep, the shared poll marker."""

from __future__ import annotations

import os
import time

import orjson
import pytest

from fhir_server.errors import Forbidden, InvalidRequest
from fhir_server.exchange.bulk import files
from fhir_server.exchange.bulk.jobs import ExportRequest
from fhir_server.exchange.bulk.kickoff import group_members, parameters_from_body, parse_kickoff, prefer_tokens
from fhir_server.exchange.bulk import runner
from fhir_server.exchange.bulk import checkpoint
from fhir_server.exchange.bulk.cutoff import hold_past
from fhir_server.exchange.bulk.runner import manifest, run_export
from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store
from fhir_server.storage.serialization import format_instant, utc_now_ms
from smart_auth.principal import Principal
from smart_auth.scopes import ScopeSet

SUPER = Principal.anonymous_superuser()


def system(scope: str) -> Principal:
    return Principal(client_id="c", subject="c", scopes=ScopeSet.parse(scope))


def test_prefer_and_parameters():
    assert {"respond-async", "handling=lenient"} <= prefer_tokens("respond-async, handling=lenient")
    pairs = parameters_from_body({"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient"}, {"name": "patient", "valueReference": {"reference": "Patient/1"}}]})
    assert pairs == [("_type", "Patient"), ("patient", "Patient/1")]
    with pytest.raises(InvalidRequest):
        parameters_from_body({"resourceType": "Patient"})


def test_kickoff_types_cut_to_scopes_and_unsupported_params():
    req = parse_kickoff("system", [("_type", "Patient,Observation")], system("system/Patient.rs"), lenient=False,
                        group_members=None, method="GET")
    assert req.types == ["Patient"] and req.warnings
    with pytest.raises(Forbidden):
        parse_kickoff("system", [], system("user/*.rs"), lenient=False, group_members=None, method="GET")
    with pytest.raises(InvalidRequest):
        parse_kickoff("system", [("_elements", "id")], SUPER, lenient=False, group_members=None, method="GET")
    lenient = parse_kickoff("system", [("_elements", "id")], SUPER, lenient=True, group_members=None, method="GET")
    assert any("_elements" in w for w in lenient.warnings)
    for name, value in (("includeAssociatedData", "LatestProvenanceResources"), ("_until", "2030-01-01T00:00:00Z")):
        with pytest.raises(InvalidRequest, match=name):
            parse_kickoff("system", [(name, value)], SUPER, lenient=False, group_members=None, method="GET")
        ignored = parse_kickoff("system", [(name, value)], SUPER, lenient=True, group_members=None, method="GET")
        assert any(name in w for w in ignored.warnings)
    with pytest.raises(InvalidRequest):
        parse_kickoff("patient", [("_type", "Practitioner")], SUPER, lenient=False, group_members=None, method="GET")
    with pytest.raises(InvalidRequest):
        parse_kickoff("system", [("patient", "Patient/1")], SUPER, lenient=False, group_members=None, method="POST")
    with pytest.raises(InvalidRequest):
        parse_kickoff("system", [("_typeFilter", "Observation?_include=Observation:subject")], SUPER, lenient=False,
                      group_members=None, method="GET")


def test_group_members():
    group = {"member": [{"entity": {"reference": "Patient/a"}}, {"entity": {"reference": "Practitioner/x"}},
                        {"entity": {"reference": "Patient/b"}, "inactive": True}]}
    assert group_members(group) == ["a"]


@pytest.fixture()
async def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'f.db'}", indexer=extract_index)
    await s.open()
    async with s.unit_of_work() as uow:
        for p in ("a", "b"):
            await uow.write("Patient", p, {"resourceType": "Patient", "id": p}, method="PUT")
        for i in range(30):
            await uow.write("Observation", f"o{i}", {
                "resourceType": "Observation", "id": f"o{i}", "status": "final" if i % 2 else "amended",
                "code": {"text": "x"}, "subject": {"reference": f"Patient/{'a' if i < 20 else 'b'}"}}, method="PUT")
        await uow.write("Practitioner", "d", {"resourceType": "Practitioner", "id": "d"}, method="PUT")
    yield s
    await s.close()


def _read(folder, outputs, t):
    return [orjson.loads(line) for o in outputs if o.type == t for line in (folder / o.name).read_bytes().splitlines()]


async def test_runner_levels_filters_and_split(store, tmp_path):
    req = ExportRequest(level="system", types=["Patient", "Observation", "Practitioner"])
    result = await run_export(store, req, tmp_path / "s", max_file_bytes=600, page_size=7)
    out, errors = result.output, result.error
    obs_files = [o for o in out if o.type == "Observation"]
    assert len(obs_files) > 1 and sum(o.count for o in obs_files) == 30
    assert all((tmp_path / "s" / o.name).stat().st_size <= 600 for o in obs_files)
    assert not list((tmp_path / "s").glob(".*part")) and errors == []
    req = ExportRequest(level="patient", types=["Patient", "Observation", "Practitioner"], patients=["b"],
                        type_filters={"Observation": ["status=final"]})
    out = (await run_export(store, req, tmp_path / "g")).output
    assert {r["id"] for r in _read(tmp_path / "g", out, "Patient")} == {"b"}
    assert {r["id"] for r in _read(tmp_path / "g", out, "Observation")} == {f"o{i}" for i in range(21, 30, 2)}
    assert not [o for o in out if o.type == "Practitioner"]
    req = ExportRequest(level="system", types=["Observation"], since="2999-01-01T00:00:00Z")
    out = (await run_export(store, req, tmp_path / "n")).output
    assert out == []
    # a v2-restricted system scope narrows the export like a search
    req = ExportRequest(level="system", types=["Observation"], scope="system/Observation.rs?status=amended",
                        client_id="c")
    out = (await run_export(store, req, tmp_path / "r")).output
    assert len(_read(tmp_path / "r", out, "Observation")) == 15


def test_sweep(tmp_path):
    old, running, fresh = (tmp_path / n for n in ("old", "running", "fresh"))
    for folder in (old, running, fresh):
        folder.mkdir()
    (old / files.MANIFEST).write_text("{}")
    os.utime(old / files.MANIFEST, (time.time() - 100, time.time() - 100))
    (fresh / files.MANIFEST).write_text("{}")
    assert files.sweep(tmp_path, 50) == 1
    assert not old.exists() and running.exists() and fresh.exists()


# -- transactionTime cut-off, deleted resources -----------------------------------------------------


async def _moment() -> str:
    """A transactionTime after everything stored so far; the clock is past it on return."""
    moment = utc_now_ms()
    await hold_past(moment)
    return format_instant(moment)


async def test_cutoff_leaves_later_changes_to_the_next_export(store, tmp_path):
    t1 = await _moment()
    async with store.unit_of_work() as uow:  # changed after transactionTime, before the job reads
        await uow.write("Observation", "o1", {"resourceType": "Observation", "id": "o1", "status": "cancelled",
                                              "code": {"text": "x"}, "subject": {"reference": "Patient/a"}},
                        method="PUT")
        await uow.write("Observation", "new", {"resourceType": "Observation", "id": "new", "status": "final",
                                               "code": {"text": "x"}, "subject": {"reference": "Patient/a"}},
                        method="PUT")
    req = ExportRequest(level="system", types=["Observation"], transaction_time=t1)
    out = (await run_export(store, req, tmp_path / "first")).output
    first = {r["id"] for r in _read(tmp_path / "first", out, "Observation")}
    assert first == {f"o{i}" for i in range(30)} - {"o1"}  # o1 was modified after t1; "new" too
    t2 = await _moment()
    req = ExportRequest(level="system", types=["Observation"], since=t1, transaction_time=t2)
    out = (await run_export(store, req, tmp_path / "next")).output
    later = _read(tmp_path / "next", out, "Observation")
    assert {r["id"] for r in later} == {"o1", "new"} and later[0]["meta"]["lastUpdated"] > t1
    assert first | {r["id"] for r in later} == {f"o{i}" for i in range(30)} | {"new"}  # nothing lost


async def _deleted(folder, result) -> set[str]:
    urls = set()
    for d in result.deleted:
        for line in (folder / d.name).read_bytes().splitlines():
            bundle = orjson.loads(line)
            assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
            [entry] = bundle["entry"]
            assert entry["request"]["method"] == "DELETE"
            urls.add(entry["request"]["url"])
    return urls


async def test_deleted_since_honours_level_type_scopes_and_cutoff(store, tmp_path):
    since = await _moment()
    async with store.unit_of_work() as uow:
        for id in ("o2", "o3", "o25"):  # o2, o3: patient a (o2 amended, o3 final); o25: patient b
            await uow.delete("Observation", id)
        await uow.delete("Practitioner", "d")
        await uow.delete("Observation", "o4")
    async with store.unit_of_work() as uow:  # deleted, then created again: in the output, not deleted
        await uow.write("Observation", "o4", {"resourceType": "Observation", "id": "o4", "status": "final",
                                              "code": {"text": "x"}, "subject": {"reference": "Patient/a"}},
                        method="PUT")
    cutoff = await _moment()
    async with store.unit_of_work() as uow:  # after transactionTime: the next export's
        await uow.delete("Observation", "o5")
    everything = ExportRequest(level="system", types=["Observation", "Practitioner"], since=since,
                               transaction_time=cutoff)
    result = await run_export(store, everything, tmp_path / "all")
    assert await _deleted(tmp_path / "all", result) == {"Observation/o2", "Observation/o3", "Observation/o25",
                                                        "Practitioner/d"}
    assert [d.type for d in result.deleted] == ["Bundle", "Bundle"]
    body = manifest(everything, result, lambda n: n)
    assert [d["count"] for d in body["deleted"]] == [3, 1]
    assert {r["id"] for r in _read(tmp_path / "all", result.output, "Observation")} == {"o4"}
    # Patient/Group level: only the patients' compartments
    group = ExportRequest(level="group", types=["Observation"], patients=["b"], since=since, transaction_time=cutoff)
    result = await run_export(store, group, tmp_path / "group")
    assert await _deleted(tmp_path / "group", result) == {"Observation/o25"}
    # _type and a v2 scope restriction
    scoped = ExportRequest(level="system", types=["Observation"], since=since, transaction_time=cutoff,
                           scope="system/Observation.rs?status=amended", client_id="c")
    result = await run_export(store, scoped, tmp_path / "scoped")
    assert await _deleted(tmp_path / "scoped", result) == {"Observation/o2"}
    # _typeFilter: judged on the last live version
    filtered = ExportRequest(level="patient", types=["Observation"], since=since, transaction_time=cutoff,
                             type_filters={"Observation": ["subject=Patient/a"]})
    result = await run_export(store, filtered, tmp_path / "filtered")
    assert await _deleted(tmp_path / "filtered", result) == {"Observation/o2", "Observation/o3"}
    # without _since: no deleted list at all
    assert "deleted" not in manifest(ExportRequest(level="system", types=["Observation"]), result, lambda n: n)


# -- resuming from the checkpoint ---------------------------------------------------------------------


class Crash(Exception):
    """Stands for the process dying: nothing after it runs (no cleanup but the `finally` blocks)."""


def _files(folder) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.ndjson") if p.name != files.CHECKPOINT}


@pytest.mark.parametrize("level", ["system", "group"])
async def test_interrupted_export_goes_on_from_its_checkpoint(store, tmp_path, monkeypatch, level):
    async with store.unit_of_work() as uow:
        for i in range(300):
            await uow.write("Observation", f"x{i}", {
                "resourceType": "Observation", "id": f"x{i}", "status": "final", "code": {"text": "x"},
                "subject": {"reference": f"Patient/{'ab'[i % 2]}"},  # every third also in b's compartment:
                "performer": [{"reference": "Patient/b"}] if i % 3 == 0 else []}, method="PUT")  # written once
    monkeypatch.setattr(runner, "CHUNK", 1)  # group level: one pass per patient, resumed mid-pass
    req = ExportRequest(level=level, types=["Patient", "Observation"], patients=["a", "b"] if level == "group" else None,
                        transaction_time=await _moment())
    folder = tmp_path / "job"
    reference = await run_export(store, req, tmp_path / "whole", max_file_bytes=700, page_size=17)
    expected = sorted(r["id"] for r in _read(tmp_path / "whole", reference.output, "Observation"))
    assert len(expected) == 330
    mid_page = mid_file = 0
    real_record = checkpoint.record
    for attempt in range(12):
        # interrupted again and again: half the time just after a checkpoint was written (inside a
        # page), half the time between pages, each time soon after the previous interruption
        known = checkpoint.load(folder)
        stop_after = (len(known.outputs) if known else 0) + 1 + attempt % 3
        in_page = attempt % 2 == 0

        def record_then_crash(where, done, position, stop_after=stop_after, in_page=in_page):
            real_record(where, done, position)
            if in_page and len(checkpoint.load(where).outputs) >= stop_after:
                raise Crash()

        def crash(stop_after=stop_after, in_page=in_page) -> bool:
            point = checkpoint.load(folder)
            if not in_page and point is not None and len(point.outputs) >= stop_after:
                raise Crash()
            return False

        monkeypatch.setattr(runner, "record", record_then_crash)
        before = _files(folder) if folder.exists() else {}
        with pytest.raises(Crash):
            await run_export(store, req, folder, max_file_bytes=700, page_size=17, is_cancelled=crash)
        point = checkpoint.load(folder)
        kept = {o.name for o in point.outputs}
        mid_page += bool(point.position.cursor and point.position.page_files)  # the resumed page skips some
        assert set(before) <= kept  # what was complete before stays listed ...
        after = _files(folder)
        assert all(after[name] == before[name] for name in before)  # ... untouched (same inode, same mtime)
        mid_file += bool(list(folder.glob(".*.part")))  # it really stopped in the middle of a file
    monkeypatch.setattr(runner, "record", real_record)
    assert mid_page and mid_file
    completed = _files(folder)
    result = await run_export(store, req, folder, max_file_bytes=700, page_size=17)
    assert all(_files(folder)[name] == stat for name, stat in completed.items() if name in
               {o.name for o in checkpoint.load(folder).outputs})
    got = sorted(r["id"] for r in _read(folder, result.output, "Observation"))
    assert got == expected  # every resource exactly once
    assert {r["id"] for r in _read(folder, result.output, "Patient")} == {"a", "b"}
    assert all(sum(1 for _ in open(folder / o.name, "rb")) == o.count for o in result.output)
    assert not list(folder.glob(".*.part"))


def test_poll_marker_is_shared_through_the_folder(tmp_path):
    folder = tmp_path / "job"
    assert not files.polled_too_soon(folder, 1.0, now=1000.0)
    assert files.polled_too_soon(folder, 1.0, now=1000.5)  # another process reading the same folder agrees
    assert not files.polled_too_soon(folder, 1.0, now=1001.2)
    assert not files.polled_too_soon(folder, 0.0, now=1001.2)  # no minimum interval: never too soon

"""Bulk export pieces without a server: kick-off parsing, the runner on a real SQLite store
(levels, _since, _typeFilter, splitting), the retention sweep."""

from __future__ import annotations

import os
import time

import orjson
import pytest

from fhir_server.errors import Forbidden, InvalidRequest
from fhir_server.exchange.bulk import files
from fhir_server.exchange.bulk.jobs import ExportRequest
from fhir_server.exchange.bulk.kickoff import group_members, parameters_from_body, parse_kickoff, prefer_tokens
from fhir_server.exchange.bulk.runner import run_export
from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store
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
    out, errors = await run_export(store, req, tmp_path / "s", max_file_bytes=600, page_size=7)
    obs_files = [o for o in out if o.type == "Observation"]
    assert len(obs_files) > 1 and sum(o.count for o in obs_files) == 30
    assert all((tmp_path / "s" / o.name).stat().st_size <= 600 for o in obs_files)
    assert not list((tmp_path / "s").glob(".*part")) and errors == []
    req = ExportRequest(level="patient", types=["Patient", "Observation", "Practitioner"], patients=["b"],
                        type_filters={"Observation": ["status=final"]})
    out, _ = await run_export(store, req, tmp_path / "g")
    assert {r["id"] for r in _read(tmp_path / "g", out, "Patient")} == {"b"}
    assert {r["id"] for r in _read(tmp_path / "g", out, "Observation")} == {f"o{i}" for i in range(21, 30, 2)}
    assert not [o for o in out if o.type == "Practitioner"]
    req = ExportRequest(level="system", types=["Observation"], since="2999-01-01T00:00:00Z")
    out, _ = await run_export(store, req, tmp_path / "n")
    assert out == []
    # a v2-restricted system scope narrows the export like a search
    req = ExportRequest(level="system", types=["Observation"], scope="system/Observation.rs?status=amended",
                        client_id="c")
    out, _ = await run_export(store, req, tmp_path / "r")
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

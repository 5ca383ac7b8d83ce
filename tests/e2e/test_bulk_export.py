"""Bulk Data Access 2.0 export end to end (fhir_server/exchange/bulk, api/bulk_routes.py): a real
server with authorization on, a backend-services token (system/ scopes), kick-off at system,
Patient and Group level, polling, the manifest, every file downloaded and parsed, counts against
the store; _since, _type, _typeFilter at every level; DELETE; another client; 429 (also across two
server processes); the transactionTime cut-off and an incremental export with its deleted list; a
job killed mid-export that goes on from its checkpoint."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import httpx
import orjson
import pytest

from fhir_server.exchange.bulk import checkpoint, files
from tests.e2e.smart_support import seed_two_patients, start_smart_server
from tests.support import FHIR_JSON, ServerProcess, free_port

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    old = os.environ.get("FHIR_EXPORT_RETRY_AFTER")
    os.environ["FHIR_EXPORT_RETRY_AFTER"] = "1"
    srv = start_smart_server(tmp_path_factory.mktemp("bulk"))
    try:
        srv.data = seed_two_patients(srv)
        srv.put({"resourceType": "Group", "id": "grp-a", "type": "person", "actual": True,
                 "member": [{"entity": {"reference": "Patient/pat-a"}}]})
        srv.put({"resourceType": "Group", "id": "grp-empty", "type": "person", "actual": True})
        yield srv
    finally:
        srv.process.stop()
        if old is None:
            os.environ.pop("FHIR_EXPORT_RETRY_AFTER", None)
        else:
            os.environ["FHIR_EXPORT_RETRY_AFTER"] = old


def token(server, scope: str = "system/*.rs", client_id: str = "ehr-backend") -> dict:
    access, _ = server.auth.tokens.access_token(issuer=server.base, audience=server.base, client_id=client_id,
                                                subject=client_id, scope=scope, grant_id=uuid.uuid4().hex)
    return {"Authorization": f"Bearer {access}"}


def kickoff(server, path: str, auth: dict, params=None, body=None, headers=None) -> httpx.Response:
    h = {**ASYNC, **auth, **(headers or {})}
    if body is not None:
        return httpx.post(f"{server.base}{path}", json=body, headers={**h, "Content-Type": "application/fhir+json"},
                          params=params)
    return httpx.get(f"{server.base}{path}", params=params, headers=h)


def wait(status_url: str, auth: dict, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(status_url, headers={**auth, "Accept": "application/json"})
        if r.status_code != 202:
            return r
        assert r.headers["X-Progress"]
        time.sleep(float(r.headers["Retry-After"]))
    raise AssertionError("export did not finish")


def export(server, path: str, auth: dict, params=None, body=None) -> tuple[dict, dict[str, list[dict]]]:
    r = kickoff(server, path, auth, params, body)
    assert r.status_code == 202, r.text
    done = wait(r.headers["Content-Location"], auth)
    assert done.status_code == 200, done.text
    assert done.headers["content-type"].startswith("application/json")
    manifest = done.json()
    assert manifest["requiresAccessToken"] is True
    assert {"transactionTime", "request", "output", "error"} <= manifest.keys()
    by_type: dict[str, list[dict]] = {}
    for item in manifest["output"]:
        f = httpx.get(item["url"], headers={**auth, "Accept": "application/fhir+ndjson"})
        assert f.status_code == 200
        assert f.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in f.content.splitlines() if line]
        assert len(lines) == item["count"]
        assert all(x["resourceType"] == item["type"] for x in lines)
        by_type.setdefault(item["type"], []).extend(lines)
    return manifest, by_type


def ids(by_type, t) -> set[str]:
    return {r["id"] for r in by_type.get(t, [])}


def store_count(server, t: str, query: str = "") -> int:
    r = httpx.get(f"{server.base}/{t}?_summary=count&{query}", headers={**token(server), **FHIR_JSON})
    return r.json()["total"]


def test_system_export_matches_store(server):
    auth = token(server)
    manifest, by_type = export(server, "/$export", auth, {"_type": "Patient,Observation,Encounter,Practitioner,Group"})
    for t in ("Patient", "Observation", "Encounter", "Practitioner", "Group"):
        assert len(by_type[t]) == store_count(server, t), t
    assert ids(by_type, "Observation") == {"obs-a-lab", "obs-a-vital", "obs-b-lab"}
    assert manifest["error"] == []
    # without _type: every type the token may read, including the implementation guide's resources
    _, everything = export(server, "/$export", auth)
    assert ids(everything, "Patient") == {"pat-a", "pat-b"} and "StructureDefinition" in everything


def test_patient_and_group_levels(server):
    auth = token(server)
    _, by_type = export(server, "/Patient/$export", auth)
    assert ids(by_type, "Patient") == {"pat-a", "pat-b"}
    assert ids(by_type, "Observation") == {"obs-a-lab", "obs-a-vital", "obs-b-lab"}
    assert "Practitioner" not in by_type  # not in the Patient compartment
    assert ids(by_type, "Group") == {"grp-a"}  # Group.member is a compartment link (the empty Group is not)
    _, group = export(server, "/Group/grp-a/$export", auth)
    assert ids(group, "Patient") == {"pat-a"}
    assert ids(group, "Observation") == {"obs-a-lab", "obs-a-vital"} and ids(group, "Encounter") == {"enc-a"}
    manifest, empty = export(server, "/Group/grp-empty/$export", auth)
    assert manifest["output"] == []
    assert kickoff(server, "/Group/nope/$export", auth).status_code == 404
    # POST with the patient parameter (Patient level)
    body = {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/pat-b"}},
                                                        {"name": "_type", "valueString": "Patient,Observation"}]}
    _, posted = export(server, "/Patient/$export", auth, body=body)
    assert ids(posted, "Patient") == {"pat-b"} and ids(posted, "Observation") == {"obs-b-lab"}


def test_type_filter_and_type_at_every_level(server):
    auth = token(server)
    params = {"_type": "Observation", "_typeFilter": "Observation?category=laboratory"}
    _, system = export(server, "/$export", auth, params)
    _, patient = export(server, "/Patient/$export", auth, params)
    _, group = export(server, "/Group/grp-a/$export", auth, params)
    assert ids(system, "Observation") == ids(patient, "Observation") == {"obs-a-lab", "obs-b-lab"}
    assert ids(group, "Observation") == {"obs-a-lab"}
    assert set(system) == set(patient) == set(group) == {"Observation"}
    # two _typeFilter values for one type are ORed
    _, either = export(server, "/$export", auth, [("_type", "Observation"),
                                                  ("_typeFilter", "Observation?category=laboratory"),
                                                  ("_typeFilter", "Observation?_id=obs-a-vital")])
    assert ids(either, "Observation") == {"obs-a-lab", "obs-b-lab", "obs-a-vital"}
    bad = kickoff(server, "/$export", auth, {"_typeFilter": "Observation?_sort=date"})
    assert bad.status_code == 400


def test_since_at_every_level(server):
    auth = token(server)
    time.sleep(1.1)  # whatever was stored so far is older than `since` (a whole second, rounded down)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.1)
    obs = dict(server.data["obs-a-vital"])
    obs["status"] = "amended"
    server.put(obs)
    for path in ("/$export", "/Patient/$export", "/Group/grp-a/$export"):
        _, by_type = export(server, path, auth, {"_since": since, "_type": "Patient,Observation"})
        assert ids(by_type, "Observation") == {"obs-a-vital"}, path
        assert "Patient" not in by_type, path
    assert kickoff(server, "/$export", auth, {"_since": "yesterday"}).status_code == 400


def test_scopes_cut_the_types_and_only_system_scopes_export(server):
    narrow = token(server, "system/Patient.rs")
    manifest, by_type = export(server, "/$export", narrow)
    assert set(by_type) == {"Patient"}
    manifest, by_type = export(server, "/Patient/$export", narrow, {"_type": "Patient,Observation"})
    assert set(by_type) == {"Patient"}
    assert manifest["error"] and manifest["error"][0]["type"] == "OperationOutcome"
    assert kickoff(server, "/$export", token(server, "user/*.rs")).status_code == 403
    assert kickoff(server, "/$export", {}).status_code == 401


def test_kickoff_validation(server):
    auth = token(server)
    assert httpx.get(f"{server.base}/$export", headers=auth).status_code == 400  # no Prefer: respond-async
    assert kickoff(server, "/$export", auth, {"_outputFormat": "text/csv"}).status_code == 400
    for fmt in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
        assert kickoff(server, "/$export", auth, {"_outputFormat": fmt, "_type": "Group"}).status_code == 202
    assert kickoff(server, "/$export", auth, {"_elements": "id"}).status_code == 400
    assert kickoff(server, "/$export", auth, {"includeAssociatedData": "LatestProvenanceResources"}).status_code == 400
    until = kickoff(server, "/$export", auth, {"_until": "2030-01-01T00:00:00Z"})
    assert until.status_code == 400 and "2.0.0" in until.text  # _until is Bulk Data 3.0, not 2.0.0
    lenient = {"Prefer": "respond-async, handling=lenient"}
    r = kickoff(server, "/$export", auth, {"_elements": "id", "_type": "Patient"}, headers=lenient)
    assert r.status_code == 202
    manifest = wait(r.headers["Content-Location"], auth).json()
    outcome = httpx.get(manifest["error"][0]["url"], headers=auth).content.splitlines()
    assert b"_elements" in outcome[0]
    assert kickoff(server, "/$export", auth, {"_type": "Nonsense"}).status_code == 400
    assert kickoff(server, "/Patient/$export", auth, {"_type": "Practitioner"}).status_code == 400


def test_other_client_cannot_see_and_delete_removes(server):
    auth = token(server)
    r = kickoff(server, "/$export", auth, {"_type": "Patient"})
    status = r.headers["Content-Location"]
    manifest = wait(status, auth).json()
    other = token(server, client_id="someone-else")
    assert httpx.get(status, headers=other).status_code == 404
    assert httpx.get(manifest["output"][0]["url"], headers=other).status_code == 404
    assert httpx.delete(status, headers=other).status_code == 404
    assert httpx.get(manifest["output"][0]["url"]).status_code == 401  # requiresAccessToken
    assert httpx.delete(status, headers=auth).status_code == 202
    gone = httpx.get(status, headers=auth)
    assert gone.status_code == 404 and gone.json()["resourceType"] == "OperationOutcome"
    assert httpx.get(manifest["output"][0]["url"], headers=auth).status_code == 404
    assert httpx.get(f"{server.base}/$export-status/unknownjob", headers=auth).status_code == 404


# -- transactionTime cut-off, incremental export with deletions, two server processes ---------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A server whose jobs wait 2 s after transactionTime before reading (FHIR_EXPORT_SETTLE_SECONDS:
    the window in which a test changes data after kick-off), and a second server process on the same
    database and export folder (as `serve --workers 2` would be)."""
    env = {"FHIR_EXPORT_RETRY_AFTER": "1", "FHIR_EXPORT_SETTLE_SECONDS": "2"}
    first = second = None
    try:
        first = start_smart_server(tmp_path_factory.mktemp("bulk-pair"), env=env)
        first.data = seed_two_patients(first)
        first.put({"resourceType": "Group", "id": "grp-a", "type": "person", "actual": True,
                   "member": [{"entity": {"reference": "Patient/pat-a"}}]})
        second = ServerProcess(first.process.database, port=free_port(), auth=True, env=env,
                               log_path=first.process.database.with_suffix(".second.log")).start()
        yield first, second
    finally:
        for process in (second, first.process if first else None):
            if process is not None:
                process.stop()


def test_changes_after_transaction_time_go_to_the_next_export(pair):
    server, _ = pair
    auth = token(server)
    started = kickoff(server, "/$export", auth, {"_type": "Patient,Observation"})
    assert started.status_code == 202
    # after kick-off, before the job reads (it waits 2 s): an update, a deletion, a new resource
    vital = dict(server.data["obs-a-vital"], status="amended")
    server.put(vital)
    writer = {"Authorization": f"Bearer {server.system_token()}"}
    assert httpx.delete(f"{server.base}/Observation/obs-b-lab", headers=writer).status_code in (200, 204)
    server.put(dict(server.data["obs-a-lab"], id="obs-a-new"))
    done = wait(started.headers["Content-Location"], auth)
    assert done.status_code == 200, done.text
    first = done.json()
    by_type: dict[str, set[str]] = {}
    for item in first["output"]:
        lines = httpx.get(item["url"], headers=auth).content.splitlines()
        by_type.setdefault(item["type"], set()).update(orjson.loads(line)["id"] for line in lines)
    assert by_type["Observation"] == {"obs-a-lab"}  # the three changed after transactionTime are the next one's
    assert by_type["Patient"] == {"pat-a", "pat-b"}
    assert "deleted" not in first  # no _since: no deleted list
    since = first["transactionTime"]
    # the incremental export (_since = the previous transactionTime) gets exactly those changes
    manifest, changed = export(server, "/$export", auth, {"_type": "Patient,Observation", "_since": since})
    assert ids(changed, "Observation") == {"obs-a-vital", "obs-a-new"} and "Patient" not in changed
    assert [r["status"] for r in changed["Observation"] if r["id"] == "obs-a-vital"] == ["amended"]
    assert _deleted_urls(manifest, auth) == ["Observation/obs-b-lab"]
    assert manifest["transactionTime"] > since
    # Group level: only the members' compartments (obs-b-lab was pat-b's)
    manifest, group = export(server, "/Group/grp-a/$export", auth, {"_type": "Observation", "_since": since})
    assert ids(group, "Observation") == {"obs-a-vital", "obs-a-new"}
    assert manifest["deleted"] == []
    # _type and the token's scopes bound the deletions too
    manifest, _ = export(server, "/$export", auth, {"_type": "Patient", "_since": since})
    assert manifest["deleted"] == []
    manifest, _ = export(server, "/$export", token(server, "system/Patient.rs system/Encounter.rs"), {"_since": since})
    assert manifest["deleted"] == []


def _deleted_urls(manifest: dict, auth: dict) -> list[str]:
    urls = []
    for item in manifest["deleted"]:
        assert item["type"] == "Bundle"
        f = httpx.get(item["url"], headers=auth)
        assert f.status_code == 200 and f.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in f.content.splitlines()]
        assert len(lines) == item["count"]
        for bundle in lines:
            assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
            urls += [e["request"]["url"] for e in bundle["entry"] if e["request"]["method"] == "DELETE"]
    return urls


def test_polling_too_fast_is_caught_across_server_processes(pair):
    first, second = pair
    auth = token(first)
    started = kickoff(first, "/$export", auth, {"_type": "Patient"})
    status = started.headers["Content-Location"]
    on_second = status.replace(first.base, second.base)
    assert httpx.get(status, headers=auth).status_code == 202  # the job waits 2 s: still running
    access, _ = first.auth.tokens.access_token(issuer=second.base, audience=second.base, client_id="ehr-backend",
                                               subject="ehr-backend", scope="system/*.rs", grant_id=uuid.uuid4().hex)
    auth = {"Authorization": f"Bearer {access}"}  # the same client, its token for the other process's URL
    too_soon = httpx.get(on_second, headers=auth)  # the other process knows of that poll
    assert too_soon.status_code == 429 and too_soon.headers["Retry-After"] == "1"
    assert too_soon.json()["issue"][0]["code"] == "throttled"
    time.sleep(1.1)
    assert wait(on_second, auth).status_code == 200  # polling at the pace of Retry-After is fine


# -- a job interrupted by a restart, polling too fast, split files ---------------------------------------------


async def _load_observations(database, n: int) -> None:
    from fhir_server.storage import open_store

    store = open_store(f"sqlite:///{database}")  # no indexer: a system export needs no index rows
    await store.open()
    try:
        for start in range(0, n, 2000):
            async with store.unit_of_work() as uow:
                for i in range(start, min(n, start + 2000)):
                    await uow.write("Observation", f"bulk-{i}", {
                        "resourceType": "Observation", "id": f"bulk-{i}", "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                        "subject": {"reference": "Patient/pat-a"}, "valueQuantity": {"value": i, "unit": "/min"}},
                        method="PUT")
    finally:
        await store.close()


def test_job_killed_mid_export_goes_on_from_its_checkpoint(tmp_path):
    env = {"FHIR_EXPORT_RETRY_AFTER": "1", "FHIR_EXPORT_LEASE_SECONDS": "4", "FHIR_EXPORT_MAX_FILE_BYTES": "20000"}
    n = 60_000
    asyncio.run(_load_observations(tmp_path / "fhir.db", n))
    server = start_smart_server(tmp_path, env=env)
    auth = token(server)
    r = kickoff(server, "/$export", auth, {"_type": "Observation"})
    status = r.headers["Content-Location"]
    first = httpx.get(status, headers=auth)
    assert first.status_code == 202
    assert httpx.get(status, headers=auth).status_code == 429  # polled faster than Retry-After
    folder = tmp_path / "fhir.db.exports" / status.rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len((checkpoint.load(folder) or checkpoint.Checkpoint()).outputs) < 3:
        time.sleep(0.005)
    server.process.kill()  # SIGKILL mid-job: the files so far stay behind, the lease with them
    assert not (folder / "manifest.json").exists()  # it really was interrupted
    kept = {o.name: o.count for o in checkpoint.load(folder).outputs}
    assert len(kept) >= 3 and sum(kept.values()) < n
    stats = {name: ((folder / name).stat().st_ino, (folder / name).stat().st_mtime_ns) for name in kept}
    process = ServerProcess(server.process.database, port=server.process.port, auth=True, env=env).start()
    try:
        done = wait(status, auth, timeout=120)
        assert done.status_code == 200, done.text
        manifest = done.json()
        assert len(manifest["output"]) > len(kept)  # split at FHIR_EXPORT_MAX_FILE_BYTES
        listed = {item["url"].rsplit("/", 1)[1]: item["count"] for item in manifest["output"]}
        assert {name: listed.get(name) for name in kept} == kept  # the completed files are the manifest's ...
        for name, stat in stats.items():  # ... as they were: kept, not written again
            assert ((folder / name).stat().st_ino, (folder / name).stat().st_mtime_ns) == stat, name
        seen: set[str] = set()
        total = 0
        for item in manifest["output"]:
            f = httpx.get(item["url"], headers=auth)
            lines = f.content.splitlines()
            assert len(lines) == item["count"] and len(f.content) <= 20_000
            seen.update(orjson.loads(line)["id"] for line in lines)
            total += len(lines)
        assert total == len(seen) == n  # every resource exactly once: nothing lost, nothing twice
        assert not (folder / files.CHECKPOINT).exists()  # done: the checkpoint is gone with the job's state
    finally:
        process.stop()

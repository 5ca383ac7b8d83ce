"""Batch and transaction processing on a real embedded store, without HTTP."""

from __future__ import annotations

import orjson
import pytest

from fhir_server.errors import FhirError, InvalidRequest
from fhir_server.interactions.bundle import parse_entries, response_bundle, run_batch, run_transaction
from fhir_server.interactions.prefer import Prefer
from fhir_server.storage import HistoryQuery, open_store
from smart_auth.principal import Principal

SUPERUSER = Principal.anonymous_superuser()  # authorization has its own tests (test_access.py)

BASE = "http://example.org/fhir"


@pytest.fixture
async def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    await s.open()
    yield s
    await s.close()


def _bundle(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict, full_url: str | None = None) -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


async def test_transaction_processes_in_spec_order(store):
    await _seed(store, "Patient", "gone")
    kind, entries = parse_entries(_bundle(
        "transaction",
        {"request": {"method": "GET", "url": "Patient/gone/_history"}},
        {"resource": {"resourceType": "Patient", "id": "p"}, "request": {"method": "PUT", "url": "Patient/p"}},
        _post({"resourceType": "Organization"}),
        {"request": {"method": "DELETE", "url": "Patient/gone"}},
    ), BASE)
    await run_transaction(store, entries, BASE, SUPERUSER)
    page = await store.history(HistoryQuery(count=10))
    methods = [v.method for v in reversed(page.versions)]
    assert methods == ["PUT", "DELETE", "POST", "PUT"]  # seed, then DELETE, POST, PUT


async def test_references_to_full_urls_are_rewritten_everywhere(store):
    patient_url = "urn:uuid:00000000-0000-0000-0000-000000000001"
    kind, entries = parse_entries(_bundle(
        "transaction",
        _post({"resourceType": "Observation", "status": "final", "code": {"text": "t"},
               "subject": {"reference": patient_url},
               "hasMember": [{"reference": patient_url}]}),
        _post({"resourceType": "Patient"}, patient_url),
    ), BASE)
    results = await run_transaction(store, entries, BASE, SUPERUSER)
    patient = results[1].version
    obs = orjson.loads(results[0].version.body)
    assert obs["subject"]["reference"] == f"Patient/{patient.id}"
    assert obs["hasMember"][0]["reference"] == f"Patient/{patient.id}"


async def test_put_entry_with_urn_full_url_maps_to_its_url(store):
    url = "urn:uuid:00000000-0000-0000-0000-000000000002"
    kind, entries = parse_entries(_bundle(
        "transaction",
        {"fullUrl": url, "resource": {"resourceType": "Patient", "id": "fixed"}, "request": {"method": "PUT", "url": "Patient/fixed"}},
        _post({"resourceType": "Encounter", "status": "planned", "class": {"code": "VR"}, "subject": {"reference": url}}),
    ), BASE)
    results = await run_transaction(store, entries, BASE, SUPERUSER)
    assert orjson.loads(results[1].version.body)["subject"]["reference"] == "Patient/fixed"


async def test_failed_transaction_leaves_store_untouched(store):
    kind, entries = parse_entries(_bundle(
        "transaction", _post({"resourceType": "Patient"}), _post({"resourceType": "Patient", "active": 3}),
    ), BASE)
    with pytest.raises(FhirError) as err:
        await run_transaction(store, entries, BASE, SUPERUSER)
    assert err.value.status == 400
    assert (await store.history(HistoryQuery())).total == 0


async def test_batch_failure_does_not_roll_back_other_entries(store):
    kind, entries = parse_entries(_bundle(
        "batch", _post({"resourceType": "Patient"}), _post({"resourceType": "Patient", "active": 3}),
    ), BASE)
    results = await run_batch(store, entries, BASE, SUPERUSER)
    assert [r.status for r in results] == [201, 400]
    assert (await store.history(HistoryQuery())).total == 1


async def test_absolute_request_urls_under_the_base_are_accepted(store):
    kind, entries = parse_entries(_bundle(
        "transaction",
        {"resource": {"resourceType": "Patient", "id": "abs"}, "request": {"method": "PUT", "url": f"{BASE}/Patient/abs"}},
    ), BASE)
    results = await run_transaction(store, entries, BASE, SUPERUSER)
    assert results[0].version.id == "abs"


@pytest.mark.parametrize("bundle", [
    {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}}]},
    {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "TRACE", "url": "Patient"}}]},
    {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "GET", "url": "http://elsewhere/Patient/1"}}]},
    {"resourceType": "Bundle", "type": "searchset"},
])
def test_malformed_bundles_are_rejected(bundle):
    with pytest.raises(InvalidRequest):
        parse_entries(bundle, BASE)


async def test_response_bundle_embeds_stored_bytes_and_keeps_entry_order(store):
    kind, entries = parse_entries(_bundle("batch", _post({"resourceType": "Patient"}), _post({"resourceType": "Basic", "code": {"text": "x"}})), BASE)
    results = await run_batch(store, entries, BASE, SUPERUSER)
    out = orjson.loads(response_bundle(kind, results, Prefer()))
    assert out["type"] == "batch-response"
    assert [e["resource"]["resourceType"] for e in out["entry"]] == ["Patient", "Basic"]
    assert out["entry"][0]["resource"] == orjson.loads(results[0].version.body)


async def _seed(store, resource_type: str, id: str) -> None:
    async with store.unit_of_work() as uow:
        await uow.write(resource_type, id, {"resourceType": resource_type}, method="PUT")


async def test_batch_reads_history_at_every_level(store):
    await _seed(store, "Patient", "h1")
    kind, entries = parse_entries(_bundle(
        "batch",
        {"request": {"method": "GET", "url": "Patient/h1/_history"}},
        {"request": {"method": "GET", "url": "Patient/_history"}},
        {"request": {"method": "GET", "url": "_history"}},
    ), BASE)
    results = await run_batch(store, entries, BASE, SUPERUSER)
    assert [r.status for r in results] == [200, 200, 200]
    assert all(orjson.loads(r.body)["type"] == "history" for r in results)

"""Batch and transaction Bundles posted to the base URL."""

from __future__ import annotations

import base64
import uuid

from tests.support import FHIR_JSON


def _post_bundle(client, bundle: dict, **headers):
    return client.post("/", json=bundle, headers={**FHIR_JSON, **headers})


def test_transaction_rewrites_urn_uuid_references_to_new_ids(client):
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
             "resource": {"resourceType": "Patient", "active": True}, "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
             "resource": {"resourceType": "Encounter", "status": "finished", "class": {"code": "VR"},
                          "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}},
             "request": {"method": "POST", "url": "Encounter"}},
        ],
    }
    r = _post_bundle(client, bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    patient_loc, encounter_loc = (e["response"]["location"] for e in out["entry"])
    patient_id = patient_loc.split("/")[1]
    encounter = client.get("/" + encounter_loc.split("/_history")[0]).json()
    assert encounter["subject"]["reference"] == f"Patient/{patient_id}"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created", "201 Created"]


def test_transaction_failing_entry_writes_nothing(client):
    keep_id = f"tx-{uuid.uuid4().hex[:8]}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": keep_id}, "request": {"method": "PUT", "url": f"Patient/{keep_id}"}},
            {"resource": {"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}},
             "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    r = _post_bundle(client, bundle)
    assert r.status_code == 400
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1]" in outcome["issue"][0]["diagnostics"]
    assert client.get(f"/Patient/{keep_id}").status_code == 404


def test_transaction_processes_deletes_before_creates_and_reads_last(client):
    id = f"tx-{uuid.uuid4().hex[:8]}"
    client.put(f"/Patient/{id}", json={"resourceType": "Patient", "id": id}, headers=FHIR_JSON)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{id}"}},
            {"resource": {"resourceType": "Patient", "id": id, "active": True}, "request": {"method": "PUT", "url": f"Patient/{id}"}},
        ],
    }
    out = _post_bundle(client, bundle).json()
    # the GET runs after the PUT (http.html#trules), so it sees version 2
    assert out["entry"][0]["resource"]["meta"]["versionId"] == "2"
    assert out["entry"][1]["response"]["status"] == "200 OK"


def test_transaction_with_same_resource_twice_is_400(client):
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "dup"}, "request": {"method": "PUT", "url": "Patient/dup"}},
            {"request": {"method": "DELETE", "url": "Patient/dup"}},
        ],
    }
    assert _post_bundle(client, bundle).status_code == 400


def test_transaction_stale_if_match_is_412_and_nothing_written(client):
    id = f"tx-{uuid.uuid4().hex[:8]}"
    client.put(f"/Patient/{id}", json={"resourceType": "Patient", "id": id}, headers=FHIR_JSON)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Organization", "name": "x"}, "request": {"method": "POST", "url": "Organization"}},
            {"resource": {"resourceType": "Patient", "id": id, "active": True},
             "request": {"method": "PUT", "url": f"Patient/{id}", "ifMatch": 'W/"5"'}},
        ],
    }
    assert _post_bundle(client, bundle).status_code == 412
    assert client.get(f"/Patient/{id}").json()["meta"]["versionId"] == "1"


def test_transaction_patch_entry_uses_binary_json_patch(client):
    id = f"tx-{uuid.uuid4().hex[:8]}"
    client.put(f"/Patient/{id}", json={"resourceType": "Patient", "id": id}, headers=FHIR_JSON)
    patch = base64.b64encode(b'[{"op":"add","path":"/active","value":true}]').decode()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch},
                   "request": {"method": "PATCH", "url": f"Patient/{id}"}}],
    }
    r = _post_bundle(client, bundle)
    assert r.status_code == 200, r.text
    assert client.get(f"/Patient/{id}").json()["active"] is True


def test_batch_entries_succeed_or_fail_independently(client):
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": {"resourceType": "Patient", "active": True}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "active": "yes"}, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/not-there"}},
        ],
    }
    r = _post_bundle(client, bundle)
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1].startswith("400")
    assert statuses[2].startswith("404")
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    created = out["entry"][0]["response"]["location"].split("/_history")[0]
    assert client.get("/" + created).status_code == 200


def test_bundle_response_honours_prefer_minimal(client):
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]}
    out = _post_bundle(client, bundle, Prefer="return=minimal").json()
    assert "resource" not in out["entry"][0]
    assert out["entry"][0]["response"]["location"].startswith("Patient/")


def test_posting_a_non_bundle_to_base_is_400(client):
    assert _post_bundle(client, {"resourceType": "Patient"}).status_code == 400


def test_posting_a_collection_bundle_to_base_is_400(client):
    assert _post_bundle(client, {"resourceType": "Bundle", "type": "collection"}).status_code == 400

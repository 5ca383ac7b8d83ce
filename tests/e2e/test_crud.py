"""create, read, vread, update, patch, delete over HTTP against the real server."""

from __future__ import annotations

import httpx

from tests.support import FHIR_JSON

PATIENT = {"resourceType": "Patient", "name": [{"family": "Testperson", "given": ["Ada"]}], "gender": "female"}


def create(client: httpx.Client, resource: dict, **headers) -> httpx.Response:
    r = client.post(f"/{resource['resourceType']}", json=resource, headers={**FHIR_JSON, **headers})
    assert r.status_code == 201, r.text
    return r


def test_create_assigns_id_version_and_location(client, server):
    r = create(client, {**PATIENT, "id": "ignored-client-id"})
    body = r.json()
    assert body["id"] != "ignored-client-id"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["location"] == f"{server.base}/Patient/{body['id']}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["content-type"].startswith("application/fhir+json")


def test_create_keeps_client_meta_but_owns_version_and_timestamp(client):
    meta = {"versionId": "99", "lastUpdated": "2001-01-01T00:00:00Z", "tag": [{"system": "urn:t", "code": "x"}]}
    body = create(client, {**PATIENT, "meta": meta}).json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert body["meta"]["tag"] == [{"system": "urn:t", "code": "x"}]


def test_read_returns_the_stored_resource_with_etag_and_last_modified(client):
    created = create(client, PATIENT).json()
    r = client.get(f"/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["last-modified"].endswith("GMT")


def test_read_unknown_id_is_404_outcome(client):
    r = client.get("/Patient/does-not-exist")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["code"] == "not-found"


def test_update_creates_a_new_version(client):
    created = create(client, PATIENT).json()
    r = client.put(f"/Patient/{created['id']}", json={**PATIENT, "id": created["id"], "active": True}, headers=FHIR_JSON)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert r.json()["active"] is True
    assert r.headers["etag"] == 'W/"2"'


def test_update_as_create_with_client_id_is_201(client, server):
    r = client.put("/Patient/client-chosen-1", json={**PATIENT, "id": "client-chosen-1"}, headers=FHIR_JSON)
    assert r.status_code == 201
    assert r.headers["location"] == f"{server.base}/Patient/client-chosen-1/_history/1"
    assert client.get("/Patient/client-chosen-1").status_code == 200


def test_update_with_matching_if_match_succeeds(client):
    created = create(client, PATIENT).json()
    r = client.put(f"/Patient/{created['id']}", json={**PATIENT, "id": created["id"]},
                   headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert r.status_code == 200


def test_update_with_stale_if_match_is_412_and_changes_nothing(client):
    created = create(client, PATIENT).json()
    client.put(f"/Patient/{created['id']}", json={**PATIENT, "id": created["id"]}, headers=FHIR_JSON)
    r = client.put(f"/Patient/{created['id']}", json={**PATIENT, "id": created["id"], "active": False},
                   headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"
    current = client.get(f"/Patient/{created['id']}").json()
    assert current["meta"]["versionId"] == "2" and "active" not in current


def test_update_with_id_mismatch_is_400(client):
    created = create(client, PATIENT).json()
    r = client.put(f"/Patient/{created['id']}", json={**PATIENT, "id": "other"}, headers=FHIR_JSON)
    assert r.status_code == 400


def test_update_without_id_in_body_is_400(client):
    r = client.put("/Patient/some-id", json=PATIENT, headers=FHIR_JSON)
    assert r.status_code == 400
    assert client.get("/Patient/some-id").status_code == 404


def test_update_with_invalid_id_is_400(client):
    bad = "x" * 65
    r = client.put(f"/Patient/{bad}", json={**PATIENT, "id": bad}, headers=FHIR_JSON)
    assert r.status_code == 400


def test_vread_returns_each_version(client):
    created = create(client, PATIENT).json()
    client.put(f"/Patient/{created['id']}", json={**PATIENT, "id": created["id"], "active": True}, headers=FHIR_JSON)
    v1 = client.get(f"/Patient/{created['id']}/_history/1")
    v2 = client.get(f"/Patient/{created['id']}/_history/2")
    assert v1.status_code == v2.status_code == 200
    assert "active" not in v1.json() and v2.json()["active"] is True
    assert v1.headers["etag"] == 'W/"1"'
    assert client.get(f"/Patient/{created['id']}/_history/3").status_code == 404


def test_patch_applies_json_patch_and_bumps_version(client):
    created = create(client, PATIENT).json()
    r = client.patch(f"/Patient/{created['id']}", content=b'[{"op":"add","path":"/active","value":true}]',
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True and r.json()["meta"]["versionId"] == "2"


def test_patch_producing_invalid_resource_is_rejected_and_changes_nothing(client):
    created = create(client, PATIENT).json()
    r = client.patch(f"/Patient/{created['id']}", content=b'[{"op":"add","path":"/active","value":"yes"}]',
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 400
    assert client.get(f"/Patient/{created['id']}").json()["meta"]["versionId"] == "1"


def test_patch_failed_test_operation_is_422(client):
    created = create(client, PATIENT).json()
    r = client.patch(f"/Patient/{created['id']}", content=b'[{"op":"test","path":"/gender","value":"male"}]',
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
    assert "female" not in r.text  # no resource content echoed back


def test_patch_with_stale_if_match_is_412(client):
    created = create(client, PATIENT).json()
    r = client.patch(f"/Patient/{created['id']}", content=b'[{"op":"add","path":"/active","value":true}]',
                     headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"7"'})
    assert r.status_code == 412


def test_patch_with_fhir_json_content_type_is_415(client):
    created = create(client, PATIENT).json()
    r = client.patch(f"/Patient/{created['id']}", json=[], headers=FHIR_JSON)
    assert r.status_code == 415


def test_delete_then_read_is_410_and_history_records_it(client):
    created = create(client, PATIENT).json()
    r = client.delete(f"/Patient/{created['id']}")
    assert r.status_code == 204
    assert client.get(f"/Patient/{created['id']}").status_code == 410
    history = client.get(f"/Patient/{created['id']}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]


def test_delete_is_idempotent(client):
    created = create(client, PATIENT).json()
    assert client.delete(f"/Patient/{created['id']}").status_code == 204
    assert client.delete(f"/Patient/{created['id']}").status_code == 204
    assert client.delete("/Patient/never-existed").status_code == 204


def test_update_after_delete_revives_the_resource(client):
    created = create(client, PATIENT).json()
    client.delete(f"/Patient/{created['id']}")
    r = client.put(f"/Patient/{created['id']}", json={**PATIENT, "id": created["id"]}, headers=FHIR_JSON)
    assert r.status_code == 201
    assert r.json()["meta"]["versionId"] == "3"


def test_vread_of_deletion_version_is_410(client):
    created = create(client, PATIENT).json()
    client.delete(f"/Patient/{created['id']}")
    assert client.get(f"/Patient/{created['id']}/_history/2").status_code == 410


def test_prefer_return_minimal_has_no_body(client):
    r = client.post("/Patient", json=PATIENT, headers={**FHIR_JSON, "Prefer": "return=minimal"})
    assert r.status_code == 201
    assert r.content == b""
    assert r.headers["location"] and r.headers["etag"] == 'W/"1"'


def test_prefer_return_operation_outcome(client):
    r = client.post("/Patient", json=PATIENT, headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"})
    assert r.status_code == 201
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["severity"] == "information"


def test_every_modelled_resource_type_can_be_created(client):
    """Not a hand-picked list: a type the spec has but few servers bother with works too."""
    for resource in (
        {"resourceType": "Basic", "code": {"text": "note"}},
        {"resourceType": "QuestionnaireResponse", "status": "completed"},
        {"resourceType": "Media", "status": "completed", "content": {"contentType": "image/jpeg"}},
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
         "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/p1"}},
    ):
        create(client, resource)

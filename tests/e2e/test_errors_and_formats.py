"""Bad input gets a clear OperationOutcome and changes nothing; JSON negotiation, _format, _pretty."""

from __future__ import annotations

import pytest

import uuid

from tests.support import FHIR_JSON


def _history_total(client) -> int:
    return client.get("/_history?_count=1").json()["total"]


def _is_outcome(r, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] in ("error", "fatal")
    return body


def test_malformed_json_is_400_and_stores_nothing(client):
    before = _history_total(client)
    _is_outcome(client.post("/Patient", content=b'{"resourceType": "Patient", ', headers=FHIR_JSON), 400)
    assert _history_total(client) == before


def test_body_type_must_match_url(client):
    r = client.post("/Patient", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
                    headers=FHIR_JSON)
    _is_outcome(r, 400)


def test_unknown_resource_type_is_404(client):
    _is_outcome(client.post("/Spaceship", json={"resourceType": "Spaceship"}, headers=FHIR_JSON), 404)
    _is_outcome(client.get("/Spaceship/1"), 404)


def test_structure_errors_name_the_element_paths(client):
    r = client.post("/Patient", json={"resourceType": "Patient", "active": "true", "gender": "robot", "foo": 1},
                    headers=FHIR_JSON)
    body = _is_outcome(r, 400)
    expressions = {e for issue in body["issue"] for e in issue.get("expression", [])}
    assert {"Patient.active", "Patient.gender", "Patient.foo"} <= expressions
    assert "robot" not in r.text  # the offending value is not echoed


def test_unsupported_media_type_is_415(client):
    r = client.post("/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'/>",
                    headers={"Content-Type": "application/fhir+xml"})
    _is_outcome(r, 415)


def test_missing_content_type_is_415(client):
    _is_outcome(client.post("/Patient", content=b'{"resourceType":"Patient"}'), 415)


def test_body_over_the_limit_is_413(client):
    huge = b'{"resourceType":"Patient","id":"' + b"x" * (33 * 1024 * 1024) + b'"}'
    _is_outcome(client.post("/Patient", content=huge, headers=FHIR_JSON), 413)


def test_xml_only_accept_is_406(client):
    _is_outcome(client.get("/metadata", headers={"Accept": "application/fhir+xml"}), 406)


def test_format_parameter_selects_json(client):
    r = client.get("/metadata", params={"_format": "json"}, headers={"Accept": "application/fhir+xml"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")


def test_format_xml_is_406(client):
    _is_outcome(client.get("/metadata", params={"_format": "xml"}), 406)


def test_accept_application_json_is_answered_as_application_json(client):
    r = client.get("/metadata", headers={"Accept": "application/json"})
    assert r.headers["content-type"].startswith("application/json")


def test_pretty_indents_the_body(client):
    id = f"p-{uuid.uuid4().hex[:8]}"
    client.put(f"/Patient/{id}", json={"resourceType": "Patient", "id": id}, headers=FHIR_JSON)
    compact = client.get(f"/Patient/{id}")
    pretty = client.get(f"/Patient/{id}", params={"_pretty": "true"})
    assert b"\n" not in compact.content
    assert b'\n  "resourceType": "Patient"' in pretty.content
    assert pretty.json() == compact.json()


def test_unknown_route_is_404_outcome(client):
    _is_outcome(client.get("/Patient/1/_history/1/extra"), 404)


def test_method_not_allowed_is_405_outcome(client):
    _is_outcome(client.patch("/Patient", content=b"[]", headers={"Content-Type": "application/json-patch+json"}), 405)


def test_malformed_if_match_is_400(client):
    r = client.put("/Patient/x1", json={"resourceType": "Patient", "id": "x1"},
                   headers={**FHIR_JSON, "If-Match": "version one"})
    _is_outcome(r, 400)


def test_the_access_log_names_the_route_template_never_the_url(server, client):
    if not hasattr(server, "log_path"):
        pytest.skip("run in-process (test_mongo_http): there is no server process log to read")
    client.get("/Patient/access-log-probe-7f3a")
    log = server.log_path.read_text(errors="replace")
    assert "GET /{resource_type}/{id} 404" in log
    assert "access-log-probe-7f3a" not in log  # ids in URLs can identify patients

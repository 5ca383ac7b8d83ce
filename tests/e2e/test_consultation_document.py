"""The consultation summary over HTTP: completing a visit writes its document (Composition, HTML
rendering, DocumentReference); `Composition/{id}/$document` returns the document Bundle and with
persist=true stores it; a correction after completion makes a new version that replaces the first.

Needs the lead's app.py lines: document_routes.ROUTES mounted, register_document_hooks(hooks)."""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest

from tests.e2e.test_visit_review import claim, practitioner, submitted, with_state
from tests.e2e.visit_support import load
from tests.support import FHIR_JSON, module_server

server, client = module_server("document")


def record(client: httpx.Client, name: str, task: dict, **fields) -> dict:
    body = load(f"profiles/examples/{name}-valid.json")
    for key in ("id", "meta", "reasonReference"):  # (the examples point at their own ids)
        body.pop(key, None)
    body.get("dispenseRequest", {}).pop("performer", None)  # (no pharmacy stored here)
    body.update(subject=task["for"], encounter=task["focus"], **fields)
    response = client.post(f"/{body['resourceType']}", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def completed_visit(client: httpx.Client) -> dict:
    """A visit run to completion as the review tests do, with a diagnosis, a plan and a prescription."""
    task = submitted(client)
    doctor = practitioner(client, "CA")
    claimed = claim(client, task, doctor).json()
    condition = record(client, "visit-diagnosis", task)
    careplan = record(client, "visit-careplan", task, author={"reference": doctor},
                      addresses=[{"reference": f"Condition/{condition['id']}"}], activity=load(
                          "profiles/examples/visit-careplan-valid.json")["activity"][:1])
    prescription = record(client, "async-prescription", task, requester={"reference": doctor})
    done = client.put(f"/Task/{task['id']}", json=with_state(claimed, "completed", "completed"))
    assert done.status_code == 200, done.text
    return {"task": task, "doctor": doctor, "encounter": task["focus"]["reference"], "patient": task["for"]["reference"],
            "condition": condition, "careplan": careplan, "prescription": prescription}


@pytest.fixture(scope="module")
def visit(server) -> dict:
    with httpx.Client(base_url=server.base, timeout=30.0, headers=FHIR_JSON) as c:
        return completed_visit(c)


def search(client: httpx.Client, resource_type: str, **params) -> list[dict]:
    response = client.get(f"/{resource_type}", params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


def test_completing_the_visit_writes_exactly_one_final_consult_note(client, visit):
    [composition] = search(client, "Composition", encounter=visit["encounter"], status="final")
    assert composition["type"]["coding"][0]["code"] == "11488-4"
    assert composition["author"] == [{"reference": visit["doctor"]}]
    assert composition["subject"] == {"reference": visit["patient"]}
    sections = {s["title"]: s for s in composition["section"]}
    assert {"Reason for visit", "Intake answers", "Assessment and diagnosis", "Plan", "Medications prescribed",
            "Follow-up and messages"} <= set(sections)
    assert sections["Assessment and diagnosis"]["entry"] == [{"reference": f"Condition/{visit['condition']['id']}"}]
    assert sections["Plan"]["entry"] == [{"reference": f"CarePlan/{visit['careplan']['id']}"}]
    assert sections["Medications prescribed"]["entry"] == [
        {"reference": f"MedicationRequest/{visit['prescription']['id']}"}]
    assert "itchy red rash" in sections["Intake answers"]["text"]["div"].lower()
    # what the server wrote passes its own validation
    outcome = client.post("/Composition/$validate", json=composition).json()
    assert not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")], outcome


def test_document_returns_the_composition_and_what_it_references(client, server, visit):
    [composition] = search(client, "Composition", encounter=visit["encounter"])
    response = client.get(f"/Composition/{composition['id']}/$document")
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "document" and bundle["timestamp"]
    assert bundle["identifier"]["system"] == "urn:ietf:rfc:3986" and bundle["identifier"]["value"].startswith("urn:uuid:")
    first = bundle["entry"][0]
    assert first["resource"]["resourceType"] == "Composition" and first["resource"]["id"] == composition["id"]
    included = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    assert {f"Condition/{visit['condition']['id']}", f"CarePlan/{visit['careplan']['id']}",
            f"MedicationRequest/{visit['prescription']['id']}", visit["patient"], visit["doctor"],
            visit["encounter"]} <= included
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"{server.base}/{resource['resourceType']}/{resource['id']}"
    assert client.get("/Composition/unknown/$document").status_code == 404


def test_persist_stores_the_document_bundle(client, visit):
    [composition] = search(client, "Composition", encounter=visit["encounter"])
    response = client.get(f"/Composition/{composition['id']}/$document", params={"persist": "true"})
    assert response.status_code == 200, response.text
    stored = client.get(f"/Bundle/{response.json()['id']}")
    assert stored.status_code == 200
    assert stored.json()["type"] == "document"
    assert stored.json()["entry"][0]["resource"]["id"] == composition["id"]
    posted = client.post(f"/Composition/{composition['id']}/$document", json={
        "resourceType": "Parameters", "parameter": [{"name": "persist", "valueBoolean": True}]})
    assert posted.status_code == 200 and posted.json()["id"] != response.json()["id"]


def test_the_document_reference_points_at_the_document_and_a_readable_page(client, visit):
    [composition] = search(client, "Composition", encounter=visit["encounter"])
    [docref] = search(client, "DocumentReference", encounter=visit["encounter"])
    assert docref["status"] == "current"
    assert docref["type"]["coding"][0]["code"] == "11488-4"
    assert docref["category"][0]["coding"][0]["code"] == "clinical-note"
    assert docref["context"]["encounter"] == [{"reference": visit["encounter"]}]
    document, page = (c["attachment"] for c in docref["content"])
    assert document == {**document, "contentType": "application/fhir+json",
                        "url": f"Composition/{composition['id']}/$document"}
    assert page["contentType"] == "text/html"
    raw = client.get(f"/{page['url']}", headers={"Accept": "text/html"})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/html")
    assert "Allergic contact dermatitis, left forearm" in raw.text and "<html" in raw.text


def test_the_html_attachments_size_and_hash_are_of_the_bytes_a_client_downloads(client, visit):
    [docref] = search(client, "DocumentReference", encounter=visit["encounter"])
    document, page = (c["attachment"] for c in docref["content"])
    # what a browser, a download tool and a client asking for the page's own type get: the same bytes
    for accept in ("text/html,application/xhtml+xml,*/*;q=0.8", "*/*", "text/html"):
        raw = client.get(f"/{page['url']}", headers={"Accept": accept})
        assert raw.status_code == 200, raw.text
        assert len(raw.content) == page["size"] > 1000
        assert base64.b64encode(hashlib.sha1(raw.content).digest()).decode() == page["hash"]
    # through the FHIR JSON form of the Binary too: its data decodes to the same bytes
    data = base64.b64decode(client.get(f"/{page['url']}").json()["data"])
    assert hashlib.sha1(data).digest() == base64.b64decode(page["hash"])
    # the document is assembled on every request (fresh identifier and timestamp), so its bytes are
    # not fixed and its attachment claims no size or hash
    assert "size" not in document and "hash" not in document
    first, second = (client.get(f"/{document['url']}").content for _ in range(2))
    assert first != second
    # the DocumentReference with them still passes the server's own validation
    outcome = client.post("/DocumentReference/$validate", json=docref).json()
    assert not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")], outcome


def test_a_correction_after_completion_makes_a_new_version_that_replaces_the_first(client):
    visit = completed_visit(client)
    [first] = search(client, "Composition", encounter=visit["encounter"])
    [first_ref] = search(client, "DocumentReference", encounter=visit["encounter"])
    condition = {**visit["condition"], "code": {**visit["condition"]["code"], "text": "Irritant contact dermatitis"}}
    assert client.put(f"/Condition/{condition['id']}", json=condition).status_code == 200
    compositions = search(client, "Composition", encounter=visit["encounter"], status="final")
    assert len(compositions) == 2
    [second] = [c for c in compositions if c["id"] != first["id"]]
    assert second["relatesTo"] == [{"code": "replaces", "targetReference": {"reference": f"Composition/{first['id']}"}}]
    sections = {s["title"]: s for s in second["section"]}
    assert "Irritant contact dermatitis" in sections["Assessment and diagnosis"]["text"]["div"]
    refs = {d["id"]: d for d in search(client, "DocumentReference", encounter=visit["encounter"])}
    assert refs[first_ref["id"]]["status"] == "superseded"
    [current] = [d for d in refs.values() if d["status"] == "current"]
    assert current["content"][0]["attachment"]["url"] == f"Composition/{second['id']}/$document"
    assert current["relatesTo"][0]["target"] == {"reference": f"DocumentReference/{first_ref['id']}"}

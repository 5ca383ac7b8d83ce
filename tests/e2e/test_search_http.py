"""Search over HTTP: searchset Bundles, paging links, POST _search, system and compartment search,
_summary/_elements, and the conditional interactions built on search."""

from __future__ import annotations

import uuid

import pytest

from tests.support import FHIR_JSON


@pytest.fixture
def tag() -> str:
    """A family name unique to the test, so tests sharing the session's server stay apart."""
    return f"Fam{uuid.uuid4().hex[:10]}"


def _patient(client, family: str, **fields) -> dict:
    r = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": family}], **fields}, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    return r.json()


def test_type_search_returns_a_searchset_with_match_entries(client, server, tag):
    p = _patient(client, tag, gender="female")
    bundle = client.get("/Patient", params={"family": tag}).json()
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    assert bundle["entry"][0]["fullUrl"] == f"{server.base}/Patient/{p['id']}"
    assert bundle["entry"][0]["search"] == {"mode": "match"}
    assert bundle["entry"][0]["resource"] == p


def test_paging_links_walk_all_results(client, tag):
    for n in range(5):
        _patient(client, tag, birthDate=f"200{n}-01-01")
    seen, url, pages = [], f"/Patient?family={tag}&_sort=birthdate&_count=2", 0
    while url:
        bundle = client.get(url).json()
        pages += 1
        seen += [e["resource"]["birthDate"] for e in bundle["entry"]]
        url = next((l["url"] for l in bundle["link"] if l["relation"] == "next"), None)
    assert pages == 3
    assert seen == [f"200{n}-01-01" for n in range(5)]


def test_previous_link_goes_back(client, tag):
    for n in range(3):
        _patient(client, tag, birthDate=f"201{n}-01-01")
    first = client.get(f"/Patient?family={tag}&_sort=birthdate&_count=1").json()
    second = client.get(next(l["url"] for l in first["link"] if l["relation"] == "next")).json()
    back = client.get(next(l["url"] for l in second["link"] if l["relation"] == "previous")).json()
    assert back["entry"][0]["resource"]["id"] == first["entry"][0]["resource"]["id"]


def test_post_search_with_form_body(client, tag):
    _patient(client, tag)
    r = client.post("/Patient/_search", data={"family": tag})
    assert r.status_code == 200
    assert r.json()["total"] == 1


def test_system_search_with_type(client, tag):
    _patient(client, tag)
    client.post("/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": tag}]}, headers=FHIR_JSON)
    bundle = client.get("/", params={"_type": "Patient,Practitioner", "name": tag}).json()
    assert sorted(e["resource"]["resourceType"] for e in bundle["entry"]) == ["Patient", "Practitioner"]


def test_compartment_search(client, tag):
    p = _patient(client, tag)
    other = _patient(client, tag + "x")
    for subject in (p, other):
        client.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                          "subject": {"reference": f"Patient/{subject['id']}"}}, headers=FHIR_JSON)
    bundle = client.get(f"/Patient/{p['id']}/Observation").json()
    assert [e["resource"]["subject"]["reference"] for e in bundle["entry"]] == [f"Patient/{p['id']}"]


def test_include_and_revinclude_over_http(client, tag):
    p = _patient(client, tag)
    enc = client.post("/Encounter", json={"resourceType": "Encounter", "status": "finished", "class": {"code": "VR"},
                                          "subject": {"reference": f"Patient/{p['id']}"}}, headers=FHIR_JSON).json()
    bundle = client.get("/Encounter", params={"_id": enc["id"], "_include": "Encounter:subject"}).json()
    assert [(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]] == [
        ("Encounter", "match"), ("Patient", "include")]
    bundle = client.get("/Patient", params={"_id": p["id"], "_revinclude": "Encounter:subject"}).json()
    assert [(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]] == [
        ("Patient", "match"), ("Encounter", "include")]


def test_unknown_parameter_is_ignored_and_reported(client, tag):
    _patient(client, tag)
    bundle = client.get("/Patient", params={"family": tag, "shoe-size": "42"}).json()
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1 and outcome[0]["resource"]["resourceType"] == "OperationOutcome"
    assert bundle["total"] == 1


def test_unknown_parameter_with_strict_handling_is_400(client):
    r = client.get("/Patient", params={"shoe-size": "42"}, headers={"Prefer": "handling=strict"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["shoe-size"]


def test_malformed_value_is_400_naming_the_parameter(client):
    r = client.get("/Patient", params={"birthdate": "gt-yesterday"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["birthdate"]


def test_summary_count_gives_only_the_total(client, tag):
    _patient(client, tag)
    _patient(client, tag)
    bundle = client.get("/Patient", params={"family": tag, "_summary": "count"}).json()
    assert bundle["total"] == 2 and "entry" not in bundle


def test_count_zero_gives_the_real_total_and_no_entries(client, tag):
    # fhirpy's count() asks this way (_count=0); a total of 0 there would be a false answer
    _patient(client, tag)
    _patient(client, tag)
    bundle = client.get("/Patient", params={"family": tag, "_count": "0"}).json()
    assert bundle["total"] == 2 and "entry" not in bundle


def test_elements_subsets_and_marks_resources(client, tag):
    _patient(client, tag, gender="male", birthDate="2000-01-01")
    resource = client.get("/Patient", params={"family": tag, "_elements": "gender"}).json()["entry"][0]["resource"]
    assert resource["gender"] == "male" and "birthDate" not in resource and "name" not in resource
    assert any(t["code"] == "SUBSETTED" for t in resource["meta"]["tag"])


def test_summary_true_keeps_summary_elements(client, tag):
    _patient(client, tag, gender="male", text={"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"})
    resource = client.get("/Patient", params={"family": tag, "_summary": "true"}).json()["entry"][0]["resource"]
    assert resource["gender"] == "male" and "text" not in resource


def test_total_accurate(client, tag):
    for _ in range(3):
        _patient(client, tag)
    bundle = client.get("/Patient", params={"family": tag, "_count": "1", "_total": "accurate"}).json()
    assert bundle["total"] == 3 and len(bundle["entry"]) == 1


# -- conditional interactions ------------------------------------------------------------------


def test_conditional_create_creates_once(client, tag):
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier=urn:test|{tag}"}
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": tag}]}
    first = client.post("/Patient", json=body, headers=headers)
    second = client.post("/Patient", json=body, headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]


def test_conditional_create_with_several_matches_is_412(client, tag):
    _patient(client, tag)
    _patient(client, tag)
    r = client.post("/Patient", json={"resourceType": "Patient"}, headers={**FHIR_JSON, "If-None-Exist": f"family={tag}"})
    assert r.status_code == 412


def test_conditional_update_updates_the_single_match_or_creates(client, tag):
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": tag}], "active": True}
    created = client.put(f"/Patient?identifier=urn:test|{tag}", json=body, headers=FHIR_JSON)
    assert created.status_code == 201
    updated = client.put(f"/Patient?identifier=urn:test|{tag}", json={**body, "active": False}, headers=FHIR_JSON)
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"] and updated.json()["meta"]["versionId"] == "2"


def test_conditional_update_with_unknown_parameter_is_refused(client):
    r = client.put("/Patient?shoe-size=42", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    assert r.status_code == 400


def test_conditional_delete(client, tag):
    p = _patient(client, tag)
    assert client.delete(f"/Patient?family={tag}").status_code == 204
    assert client.get(f"/Patient/{p['id']}").status_code == 410


def test_conditional_delete_with_several_matches_is_412(client, tag):
    _patient(client, tag)
    _patient(client, tag)
    assert client.delete(f"/Patient?family={tag}").status_code == 412


def test_transaction_resolves_conditional_references_and_creates(client, tag):
    p = client.post("/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": tag}]},
                    headers=FHIR_JSON).json()
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:7d2f1f6e-0000-4000-8000-00000000000a",
             "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": tag}]},
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:test|{tag}"}},
            {"resource": {"resourceType": "Encounter", "status": "planned", "class": {"code": "VR"},
                          "subject": {"reference": "urn:uuid:7d2f1f6e-0000-4000-8000-00000000000a"}},
             "request": {"method": "POST", "url": "Encounter"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": f"Patient?identifier=urn:test|{tag}"}},
             "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    r = client.post("/", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert out[0]["response"]["status"] == "200 OK"  # the patient existed: not created again
    assert out[1]["resource"]["subject"]["reference"] == f"Patient/{p['id']}"
    assert out[2]["resource"]["subject"]["reference"] == f"Patient/{p['id']}"


def test_transaction_with_unresolvable_conditional_reference_fails_whole(client, tag):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": tag},
                      "subject": {"reference": f"Patient?identifier=urn:none|{tag}"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    assert client.post("/", json=bundle, headers=FHIR_JSON).status_code == 412
    assert "entry" not in client.get("/Observation", params={"code:text": tag}).json()


def test_search_inside_batch(client, tag):
    _patient(client, tag)
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "GET", "url": f"Patient?family={tag}"}}]}
    out = client.post("/", json=bundle, headers=FHIR_JSON).json()
    assert out["entry"][0]["resource"]["type"] == "searchset"
    assert out["entry"][0]["resource"]["total"] == 1

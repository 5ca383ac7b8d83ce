"""Validation over HTTP, as a client sees it: the implementation guide served read-only, invalid
writes refused with an OperationOutcome and nothing stored, `$validate` at type and instance
level, the CapabilityStatement's profiles, and profiles an operator requires per type."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from profiles.canonical import CANONICAL_BASE
from tests.support import FHIR_JSON, ServerProcess, module_server

EXAMPLES = Path(__file__).resolve().parents[2] / "profiles" / "examples"
ENCOUNTER_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/async-visit-encounter"
RULES = f"{CANONICAL_BASE}/CodeSystem/validation-rule"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def rules_of(outcome: dict, severity: str = "error") -> set[str]:
    return {
        c["code"]
        for i in outcome["issue"] if i["severity"] == severity
        for c in i.get("details", {}).get("coding", []) if c.get("system") == RULES
    }


def claiming(resource: dict, profile: str = ENCOUNTER_PROFILE) -> dict:
    return {**resource, "meta": {"profile": [profile]}}


server, client = module_server("validation")


def count(client: httpx.Client, resource_type: str) -> int:
    return client.get(f"/{resource_type}", params={"_summary": "count"}).json()["total"]


# -- the guide, served read-only --------------------------------------------------------------


def test_guide_profiles_are_searchable_by_url_with_differential_and_snapshot(client):
    bundle = client.get("/StructureDefinition", params={"url": ENCOUNTER_PROFILE}).json()
    assert bundle["total"] == 1
    sd = bundle["entry"][0]["resource"]
    assert sd["differential"]["element"] and sd["snapshot"]["element"]
    assert {e["path"] for e in sd["snapshot"]["element"]} >= {"Encounter.class", "Encounter.location.location"}


def test_guide_value_sets_code_systems_questionnaires_and_the_implementation_guide_are_readable(client):
    assert client.get("/ValueSet/usps-state").json()["url"] == f"{CANONICAL_BASE}/ValueSet/usps-state"
    assert client.get("/CodeSystem/visit-review-status").status_code == 200
    assert client.get("/Questionnaire/async-visit-intake").json()["status"] == "active"
    ig = client.get("/ImplementationGuide/async-telehealth").json()
    listed = {r["reference"]["reference"] for r in ig["definition"]["resource"]}
    assert {"StructureDefinition/async-visit-encounter", "ValueSet/usps-state",
            "Questionnaire/async-visit-intake"} <= listed


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_guide_resources_cannot_be_changed_or_deleted(client, method):
    sd = client.get("/StructureDefinition/async-visit-encounter").json()
    sd["description"] = "changed"
    response = client.request(method, "/StructureDefinition/async-visit-encounter",
                              content=json.dumps(sd) if method == "PUT" else None)
    assert response.status_code == 405
    assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get("/StructureDefinition/async-visit-encounter").json()["description"] != "changed"


def test_capability_statement_lists_the_guide_and_its_profiles(client):
    cs = client.get("/metadata").json()
    assert cs["implementationGuide"] == [f"{CANONICAL_BASE}/ImplementationGuide/async-telehealth"]
    encounter = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Encounter")
    assert ENCOUNTER_PROFILE in encounter["supportedProfile"]
    assert {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"} in encounter["operation"]


# -- writes -------------------------------------------------------------------------------------


def test_a_resource_claiming_a_profile_it_breaks_is_refused_and_nothing_is_stored(client):
    before = count(client, "Encounter")
    bad = example("async-visit-encounter-invalid-class-ambulatory.json")
    bad.pop("id", None)
    response = client.post("/Encounter", json=claiming(bad))
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "pattern" in rules_of(outcome)
    assert any("Encounter.class" in e for i in outcome["issue"] for e in i.get("expression", []))
    assert count(client, "Encounter") == before


def test_a_resource_meeting_its_claimed_profile_is_stored(client):
    good = example("async-visit-encounter-valid.json")
    good.pop("id", None)
    response = client.post("/Encounter", json=claiming(good))
    assert response.status_code == 201, response.text


def test_the_same_invalid_resource_without_a_claim_is_stored_against_the_base_definition(client):
    # not every Encounter is an async visit: the server also stores EHR data (no required profiles by default)
    plain = example("async-visit-encounter-invalid-class-ambulatory.json")
    plain.pop("id", None)
    plain.pop("meta", None)
    assert client.post("/Encounter", json=plain).status_code == 201


def test_a_base_invariant_is_enforced_on_every_write(client):
    # pat-1: a contact needs a name, telecom, address or organization
    response = client.post("/Patient", json={"resourceType": "Patient", "contact": [{"gender": "female"}]})
    assert response.status_code == 400
    assert "pat-1" in rules_of(response.json())


def test_an_unknown_claimed_profile_is_stored_with_a_warning_never_silently(client):
    response = client.post("/Patient", headers={"Prefer": "return=OperationOutcome"},
                           json={"resourceType": "Patient", "meta": {"profile": ["http://example.org/StructureDefinition/nope"]}})
    assert response.status_code == 201
    assert "profile-unknown" in rules_of(response.json(), severity="warning")


def test_a_transaction_with_one_invalid_entry_changes_nothing(client):
    before_patients, before_encounters = count(client, "Patient"), count(client, "Encounter")
    bad = example("async-visit-encounter-invalid-no-type.json")
    bad.pop("id", None)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b6f5c1e-1111-4a53-9a1e-1c2b0e2a7f01",
         "resource": {"resourceType": "Patient", "name": [{"family": "Txn"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": claiming(bad), "request": {"method": "POST", "url": "Encounter"}},
    ]}
    response = client.post("/", json=bundle)
    assert response.status_code == 400
    assert "cardinality-min" in rules_of(response.json())
    assert (count(client, "Patient"), count(client, "Encounter")) == (before_patients, before_encounters)


def test_a_patch_that_breaks_a_claimed_profile_is_refused(client):
    good = example("async-visit-encounter-valid.json")
    good.pop("id", None)
    created = client.post("/Encounter", json=claiming(good)).json()
    response = client.patch(f"/Encounter/{created['id']}", content=json.dumps([{"op": "remove", "path": "/type"}]),
                            headers={"Content-Type": "application/json-patch+json"})
    assert response.status_code == 400
    assert client.get(f"/Encounter/{created['id']}").json()["meta"]["versionId"] == "1"


def test_a_questionnaire_response_is_checked_against_its_questionnaire(client):
    qr = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{CANONICAL_BASE}/Questionnaire/async-visit-intake",
        "status": "in-progress",
        "item": [{"linkId": "no-such-question", "answer": [{"valueString": "x"}]}],
    }
    response = client.post("/QuestionnaireResponse", json=qr)
    assert response.status_code == 400
    assert any(r.startswith("qr-") for r in rules_of(response.json()))


# -- $validate ------------------------------------------------------------------------------------


def test_validate_answers_200_with_information_for_a_valid_resource(client):
    response = client.post("/Encounter/$validate", json=claiming(example("async-visit-encounter-valid.json")))
    assert response.status_code == 200
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


def test_validate_answers_200_with_errors_for_an_invalid_resource_and_stores_nothing(client):
    before = count(client, "Encounter")
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": example("async-visit-encounter-invalid-no-location.json")},
        {"name": "profile", "valueUri": ENCOUNTER_PROFILE},
    ]}
    response = client.post("/Encounter/$validate", json=body)
    assert response.status_code == 200
    assert "cardinality-min" in rules_of(response.json())
    assert count(client, "Encounter") == before


def test_validate_takes_the_profile_as_a_url_parameter(client):
    response = client.post("/Encounter/$validate", params={"profile": ENCOUNTER_PROFILE},
                           json=example("async-visit-encounter-invalid-type-office-visit.json"))
    assert response.status_code == 200
    assert "binding-required" in rules_of(response.json())


def test_validate_refuses_a_profile_it_does_not_know(client):
    response = client.post("/Encounter/$validate", params={"profile": "http://example.org/unknown"},
                           json={"resourceType": "Encounter", "status": "planned",
                                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"}})
    assert response.status_code == 400


def test_validate_reports_structural_errors_with_200(client):
    response = client.post("/Patient/$validate", json={"resourceType": "Patient", "active": "true"})
    assert response.status_code == 200
    assert any(i["severity"] == "error" for i in response.json()["issue"])


def test_validate_an_existing_resource_against_a_profile(client):
    plain = example("async-visit-encounter-invalid-no-location.json")
    plain.pop("id", None)
    plain.pop("meta", None)  # stored as a plain Encounter, then checked against the profile
    created = client.post("/Encounter", json=plain).json()
    response = client.get(f"/Encounter/{created['id']}/$validate", params={"mode": "profile", "profile": ENCOUNTER_PROFILE})
    assert response.status_code == 200
    assert "cardinality-min" in rules_of(response.json())


def test_validate_delete_mode_says_guide_resources_cannot_be_deleted(client):
    response = client.post("/StructureDefinition/async-visit-encounter/$validate", params={"mode": "delete"})
    assert response.status_code == 200
    assert "guide-read-only" in rules_of(response.json())


def test_validate_update_mode_needs_the_url_id_in_the_body(client):
    patient = client.post("/Patient", json={"resourceType": "Patient"}).json()
    response = client.post(f"/Patient/{patient['id']}/$validate", params={"mode": "update"},
                           json={"resourceType": "Patient", "id": "other"})
    assert response.status_code == 200
    assert "update-id" in rules_of(response.json())


# -- profiles an operator requires -----------------------------------------------------------------


def test_a_required_profile_applies_to_every_write_of_its_type(tmp_path):
    proc = ServerProcess(tmp_path / "fhir.db", extra_args=["--require-profile", f"Encounter={ENCOUNTER_PROFILE}"]).start()
    try:
        with httpx.Client(base_url=proc.base, timeout=30.0, headers=FHIR_JSON) as c:
            plain = example("async-visit-encounter-invalid-no-location.json")
            plain.pop("id", None)
            plain.pop("meta", None)
            assert c.post("/Encounter", json=plain).status_code == 400
            good = example("async-visit-encounter-valid.json")
            good.pop("id", None)
            assert c.post("/Encounter", json=good).status_code == 201
            assert c.post("/Patient", json={"resourceType": "Patient"}).status_code == 201
    finally:
        proc.stop()


def test_a_required_profile_the_server_does_not_know_stops_it_from_starting(tmp_path):
    proc = ServerProcess(tmp_path / "fhir.db", extra_args=["--require-profile", "Encounter=http://example.org/nope"])
    with pytest.raises(RuntimeError):
        proc.start(timeout=30)


def test_a_questionnaire_whose_enable_when_can_never_match_is_refused(client):
    questionnaire = {"resourceType": "Questionnaire", "status": "draft", "item": [
        {"linkId": "smoker", "text": "Do you smoke?", "type": "string"},
        {"linkId": "packs", "text": "Packs a day", "type": "integer",
         "enableWhen": [{"question": "smoker", "operator": "=", "answerBoolean": True}]},
    ]}
    response = client.post("/Questionnaire", json=questionnaire)
    assert response.status_code == 400
    assert "que-enablewhen-type" in rules_of(response.json())

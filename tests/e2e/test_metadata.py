"""GET /metadata: a CapabilityStatement generated from what the server really does."""

from __future__ import annotations


def test_capability_statement_is_r4_and_lists_every_resource_type(client):
    cs = client.get("/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    types = {r["type"] for r in cs["rest"][0]["resource"]}
    assert {"Patient", "Encounter", "QuestionnaireResponse", "Media", "Binary", "MedicationRequest",
            "Communication", "CarePlan", "Condition"} <= types
    from fhir_server.validation.resource_types import resource_types

    assert types == set(resource_types())
    assert "Citation" not in types  # R4B-only: not part of FHIR R4


def test_capability_statement_lists_the_served_interactions(client):
    cs = client.get("/metadata").json()
    patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    codes = {i["code"] for i in patient["interaction"]}
    assert codes == {"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                     "search-type"}
    assert {i["code"] for i in cs["rest"][0]["interaction"]} == {"transaction", "batch", "history-system",
                                                                "search-system"}
    assert patient["versioning"] == "versioned-update"
    assert patient["conditionalCreate"] and patient["conditionalUpdate"]
    assert patient["conditionalDelete"] == "single"
    assert cs["patchFormat"] == ["application/json-patch+json"]


def test_capability_statement_validates_as_a_resource(client):
    from fhir_server.validation.structure import validate_resource

    validate_resource(client.get("/metadata").json(), "CapabilityStatement")


def test_capability_statement_lists_search_parameters_and_includes(client):
    cs = client.get("/metadata").json()
    encounter = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Encounter")
    params = {p["name"]: p for p in encounter["searchParam"]}
    assert params["patient"]["type"] == "reference"
    assert params["date"]["definition"] == "http://hl7.org/fhir/SearchParameter/clinical-date"
    assert "_lastUpdated" in params
    assert "Encounter:patient" in encounter["searchInclude"]
    assert "Observation:encounter" in encounter["searchRevInclude"]

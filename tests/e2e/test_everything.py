"""`Patient/{id}/$everything` and `Encounter/{id}/$everything` over HTTP, on a completed visit:
the consultation's resources and what they reference, paging that walks everything once, and the
filters (_type, _since)."""

from __future__ import annotations

from tests.e2e.test_visit_review import claim, practitioner, submitted, with_state
from tests.e2e.visit_support import load
from tests.support import module_server

server, client = module_server("everything")


def completed_visit(client) -> dict:
    task = submitted(client)
    doctor = practitioner(client, "CA")
    claimed = claim(client, task, doctor).json()
    condition = load("profiles/examples/visit-diagnosis-valid.json")
    careplan = load("profiles/examples/visit-careplan-valid.json")
    for resource in (condition, careplan):
        resource.pop("id")
        resource.pop("meta", None)
        resource.update(encounter=task["focus"], subject=task["for"])
    careplan["addresses"] = [{"reference": "Condition/" + client.post("/Condition", json=condition).json()["id"]}]
    assert client.post("/CarePlan", json=careplan).status_code == 201
    assert client.put(f"/Task/{task['id']}", json=with_state(claimed, "completed", "completed")).status_code == 200
    return {**task, "doctor": doctor}


def entries(bundle: dict, mode: str | None = None) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if mode is None or e["search"]["mode"] == mode}


def test_encounter_everything_is_the_whole_consultation(client):
    visit = completed_visit(client)
    bundle = client.get(f"/{visit['focus']['reference']}/$everything").json()
    assert bundle["type"] == "searchset"
    found = entries(bundle)
    types = {ref.split("/")[0] for ref in found}
    assert {"Encounter", "Patient", "QuestionnaireResponse", "Questionnaire", "Condition", "CarePlan", "Task",
            "ChargeItem", "Practitioner", "Location"} <= types
    assert visit["doctor"] in found and f"Task/{visit['id']}" in found
    assert len(found) == len(bundle["entry"])  # each resource once


def test_patient_everything_pages_through_the_compartment_once(client):
    visit = completed_visit(client)
    patient = visit["for"]["reference"]
    whole = client.get(f"/{patient}/$everything").json()
    assert whole["total"] == len(entries(whole, "match"))
    assert patient in entries(whole, "match")
    paged: list[str] = []
    url = f"/{patient}/$everything?_count=3"
    while url:
        page = client.get(url).json()
        assert len([e for e in page["entry"] if e["search"]["mode"] == "match"]) <= 3
        paged += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in page["entry"] if e["search"]["mode"] == "match"]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(paged) == len(set(paged)) and set(paged) == entries(whole, "match")
    # outside the compartment, referenced: the clinician
    assert visit["doctor"] in entries(whole, "include")


def test_patient_everything_filters_by_type_and_since(client):
    visit = completed_visit(client)
    patient = visit["for"]["reference"]
    only = client.get(f"/{patient}/$everything", params={"_type": "Condition,CarePlan"}).json()
    assert {ref.split("/")[0] for ref in entries(only, "match")} == {"Condition", "CarePlan"}
    later = client.get(f"/{patient}/$everything", params={"_since": "2999-01-01"}).json()
    assert entries(later, "match") == {patient}  # the patient itself, then nothing updated since
    assert client.get(f"/{patient}/$everything", params={"_type": "NoSuchType"}).status_code == 400

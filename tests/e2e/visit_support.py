"""Building an asynchronous visit over HTTP the way a patient app does, for the visit tests."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from profiles.canonical import CANONICAL_BASE

ROOT = Path(__file__).resolve().parents[2]
RULES = f"{CANONICAL_BASE}/CodeSystem/validation-rule"


def load(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def set_answer(response: dict, link_id: str, answer: dict) -> None:
    stack = list(response["item"])
    while stack:
        item = stack.pop()
        if item["linkId"] == link_id:
            item["answer"] = [answer]
            return
        stack.extend(item.get("item", []))
    raise KeyError(link_id)


def start_visit(client: httpx.Client, *, red_flag: bool = False, intake_status: str | None = "completed",
                state: str | None = "CA", visit_class: str = "VR",
                intake_file: str = "tests/fixtures/questionnaire/async-visit-intake-complete.json",
                answers: dict[str, dict] | None = None) -> str:
    """A transaction as the patient app sends it: Patient, Location, planned Encounter, intake."""
    patient = load("profiles/examples/async-visit-patient-valid.json")
    location = load("profiles/examples/patient-location-valid.json")
    encounter = load("profiles/examples/async-visit-encounter-valid.json")
    intake = load(intake_file)
    for r in (patient, location, encounter, intake):
        r.pop("id", None)
    if state is None:  # (an Encounter claiming the visit profile could not even be stored so: patient-location)
        location["address"].pop("state")
        location.pop("meta", None)
        encounter.pop("meta", None)
        # an intake whose Questionnaire does not ask where the patient is (the shipped ones require it)
        intake = {"resourceType": "QuestionnaireResponse", "status": "completed",
                  "questionnaire": "http://clinic.example/Questionnaire/short-intake",
                  "item": [{"linkId": "reason", "answer": [{"valueString": "A rash"}]}]}
        client.put("/Questionnaire/short-intake", json={
            "resourceType": "Questionnaire", "id": "short-intake", "url": "http://clinic.example/Questionnaire/short-intake",
            "status": "active", "item": [{"linkId": "reason", "text": "Why are you here?", "type": "string", "required": True}]})
    else:
        location["address"]["state"] = state
    encounter.update(status="planned", subject={"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
                     location=[{"location": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000002"}}])
    encounter["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": visit_class}
    if visit_class != "VR":  # not an async visit: neither it nor its intake can claim the visit profiles
        encounter.pop("meta", None)
        intake.pop("meta", None)
    encounter.pop("participant", None)
    intake.update(subject={"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
                  encounter={"reference": "urn:uuid:00000000-0000-4000-8000-000000000003"},
                  author={"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
                  source={"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"})
    if red_flag:
        set_answer(intake, "rf-breathing", {"valueBoolean": True})
    for link_id, answer in (answers or {}).items():
        set_answer(intake, link_id, answer)
    if intake_status:
        intake["status"] = intake_status
    entries = [
        ("urn:uuid:00000000-0000-4000-8000-000000000001", patient),
        ("urn:uuid:00000000-0000-4000-8000-000000000002", location),
        ("urn:uuid:00000000-0000-4000-8000-000000000003", encounter),
    ]
    if intake_status:
        entries.append(("urn:uuid:00000000-0000-4000-8000-000000000004", intake))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": url, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for url, r in entries]}
    response = client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    return next(e["response"]["location"].split("/")[1] for e in response.json()["entry"]
                if e["response"]["location"].startswith("Encounter/"))


def rule(response: httpx.Response) -> set[str]:
    return {c["code"] for i in response.json()["issue"] for c in i.get("details", {}).get("coding", [])
            if c["system"] == RULES}

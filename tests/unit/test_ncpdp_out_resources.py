"""resolve_context (mappers/ncpdp/resources.py): the MedicationRequest's references resolved
through the server's `read`, contained resources locally, nothing from storage."""

from __future__ import annotations

import pytest

from mappers.ncpdp.resources import PrescriptionContext, resolve_context
from tests.fixtures.erx import medication_request, reader


async def test_practitioner_requester():
    ctx = await resolve_context(medication_request("amlodipine-tablet"), reader())
    assert ctx.patient["id"] == "pat-maria"
    assert ctx.practitioner["id"] == "prac-sanchez" and ctx.practitioner_role is None
    assert ctx.pharmacy["id"] == "org-pharmacy-main"
    assert ctx.medication is None and ctx.conditions == ()


async def test_practitioner_role_requester_resolves_its_practitioner():
    ctx = await resolve_context(medication_request("nitrofurantoin-liquid"), reader())
    assert ctx.practitioner_role["id"] == "role-kim-telehealth"
    assert ctx.practitioner["id"] == "prac-kim"
    assert [c["id"] for c in ctx.conditions] == ["cond-uti"]


async def test_contained_medication():
    ctx = await resolve_context(medication_request("albuterol-inhaler"), reader())
    assert ctx.medication["id"] == "albuterol" and ctx.medication["code"]["coding"][0]["code"] == "745679"


async def test_contained_role_refers_into_the_requests_contained_list():
    mr = medication_request("amlodipine-tablet")
    mr["contained"] = [
        {"resourceType": "PractitionerRole", "id": "role", "practitioner": {"reference": "#doc"}},
        {"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Contained"}]},
    ]
    mr["requester"] = {"reference": "#role"}
    ctx = await resolve_context(mr, reader())
    assert ctx.practitioner_role["id"] == "role" and ctx.practitioner["name"][0]["family"] == "Contained"


async def test_stored_role_with_its_own_contained_practitioner():
    role = {"resourceType": "PractitionerRole", "id": "role-x", "practitioner": {"reference": "#p"},
            "contained": [{"resourceType": "Practitioner", "id": "p", "name": [{"family": "Inside"}]}]}
    mr = medication_request("amlodipine-tablet")
    mr["requester"] = {"reference": "PractitionerRole/role-x"}
    ctx = await resolve_context(mr, reader({"PractitionerRole/role-x": role}))
    assert ctx.practitioner["name"][0]["family"] == "Inside"


async def test_absolute_and_versioned_references_go_to_read_as_written():
    seen = []
    inner = reader()

    async def read(reference):
        seen.append(reference)
        return await inner(reference)

    mr = medication_request("amlodipine-tablet")
    mr["subject"] = {"reference": "https://telehealth.example.org/fhir/Patient/pat-maria"}
    mr["requester"] = {"reference": "Practitioner/prac-sanchez/_history/3"}
    ctx = await resolve_context(mr, read)
    assert ctx.patient["id"] == "pat-maria" and ctx.practitioner["id"] == "prac-sanchez"
    assert seen == ["https://telehealth.example.org/fhir/Patient/pat-maria", "Practitioner/prac-sanchez/_history/3",
                    "Organization/org-pharmacy-main"]


async def test_a_resource_of_the_wrong_type_is_not_used():
    mr = medication_request("amlodipine-tablet")
    mr["subject"] = {"reference": "Practitioner/prac-sanchez"}
    mr["reasonReference"] = [{"reference": "Patient/pat-maria"}, {"reference": "Condition/cond-uti"}]
    ctx = await resolve_context(mr, reader())
    assert ctx.patient is None
    assert [c["id"] for c in ctx.conditions] == ["cond-uti"]


async def test_missing_references_leave_empty_slots():
    mr = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
          "medicationReference": {"display": "no reference"}}
    ctx = await resolve_context(mr, reader())
    assert ctx == PrescriptionContext(mr)


async def test_pharmacy_given_only_by_identifier():
    mr = medication_request("amlodipine-tablet")
    mr["dispenseRequest"]["performer"] = {
        "identifier": {"system": "http://terminology.hl7.org/NamingSystem/NCPDPProviderIdentificationNumber",
                       "value": "1234567"},
        "display": "Lakeside Pharmacy"}
    ctx = await resolve_context(mr, reader())
    assert ctx.pharmacy == {"resourceType": "Organization", "identifier": [mr["dispenseRequest"]["performer"]["identifier"]],
                            "name": "Lakeside Pharmacy"}


def test_context_is_frozen():
    ctx = PrescriptionContext(medication_request("amlodipine-tablet"))
    with pytest.raises(AttributeError):
        ctx.patient = {}  # type: ignore[misc]

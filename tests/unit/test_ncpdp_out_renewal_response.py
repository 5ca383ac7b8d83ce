"""FHIR -> NCPDP SCRIPT RxRenewalResponse (mappers/ncpdp/renewal_response.py): the prescriber's
answer to a pharmacy's RxRenewalRequest, for each decision."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fhir_server.errors import UnprocessableEntity
from mappers.ncpdp.envelope import Header, parse_message
from mappers.ncpdp.renewal_response import build_renewal_response
from tests.fixtures.erx import context, medication_request, resource
from tests.fixtures.erx.expected import assert_prescription_matches, one, texts

SENT = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
# What inbound parsing gives for the pharmacy's RxRenewalRequest (To = us, From = the pharmacy).
REQUEST = Header(to="TELEHEALTH01", from_="0999017", message_id="renewal-req-77", sent_time=SENT,
                 to_qualifier="D", from_qualifier="P", rx_reference_number="RX55501",
                 prescriber_order_number="RX-2026-000123")


def renewed(refills: int = 3) -> dict:
    """The renewed MedicationRequest a clinician approves: a new order pointing at the original."""
    mr = medication_request("amlodipine-tablet")
    mr["id"] = "mr-amlodipine-renewal"
    mr["identifier"] = [{"use": "official", "system": "https://telehealth.example.org/fhir/sid/prescription-number",
                         "value": "RX-2026-000777"}]
    mr["priorPrescription"] = {"reference": "MedicationRequest/mr-amlodipine"}
    mr["authoredOn"] = "2026-12-01T10:00:00-06:00"
    mr["dispenseRequest"]["numberOfRepeatsAllowed"] = refills
    return mr


def respond(decision, ctx, **kwargs):
    kwargs.setdefault("message_id", "renewal-resp-1")
    kwargs.setdefault("sent_time", SENT)
    return build_renewal_response(REQUEST, decision, ctx, **kwargs)


@pytest.mark.parametrize("decision", ["Approved", "ApprovedWithChanges", "Replace"])
def test_approvals_and_replace(decision):
    ctx = context(renewed())
    header, message_type, body = parse_message(respond(decision, ctx, note="Renewed for 90 days"))
    assert message_type == "RxRenewalResponse"
    assert header.to == "0999017" and header.to_qualifier == "P"
    assert header.from_ == "TELEHEALTH01" and header.from_qualifier == "D"
    assert header.relates_to_message_id == "renewal-req-77"
    assert header.rx_reference_number == "RX55501"
    assert header.prescriber_order_number == "RX-2026-000777"
    assert [c.tag for c in body] == ["Response", "Patient", "Pharmacy", "Prescriber", "MedicationPrescribed"]
    assert [c.tag for c in body.find("Response")] == [decision]
    assert one(body, f"Response/{decision}/Note") == "Renewed for 90 days"
    assert_prescription_matches(body, ctx, "amlodipine-tablet")
    assert one(body, "MedicationPrescribed/WrittenDate/Date") == "2026-12-01"


def test_denied_echoes_the_original_with_reason_code_and_text():
    ctx = context("amlodipine-tablet")
    body = parse_message(respond("Denied", ctx, denial_code="AM", denial_reason="Needs a follow-up visit"))[2]
    assert texts(body, "Response/Denied/*") == ["AM", "Needs a follow-up visit"]
    assert [c.tag for c in body.find("Response/Denied")] == ["ReasonCode", "DenialReason"]
    assert_prescription_matches(body, ctx, "amlodipine-tablet")


def test_denied_with_only_a_reason_text():
    body = parse_message(respond("Denied", context("amlodipine-tablet"), denial_reason="Patient no longer in care"))[2]
    assert [c.tag for c in body.find("Response/Denied")] == ["DenialReason"]


def test_refills_override_the_renewed_order():
    body = parse_message(respond("ApprovedWithChanges", context(renewed(3)), refills=1,
                                 pharmacy_requested_refills=5))[2]
    assert one(body, "MedicationPrescribed/NumberOfRefills") == "1"


def test_approved_must_grant_what_the_pharmacy_asked_for():
    with pytest.raises(UnprocessableEntity) as caught:
        respond("Approved", context(renewed(2)), pharmacy_requested_refills=5)
    assert [i.expression for i in caught.value.issues] == ["MedicationRequest.dispenseRequest.numberOfRepeatsAllowed"]
    respond("Approved", context(renewed(5)), pharmacy_requested_refills=5)
    with pytest.raises(UnprocessableEntity):
        respond("ApprovedWithChanges", context(renewed(5)), pharmacy_requested_refills=5)


def test_approval_applies_the_prescribing_rules_but_denial_does_not():
    mr = medication_request("oxycodone-schedule-ii")
    mr["dispenseRequest"]["performer"] = {"reference": "Organization/org-pharmacy-main"}
    with pytest.raises(UnprocessableEntity) as caught:
        respond("Approved", context(mr))
    assert [i.expression for i in caught.value.issues] == ["MedicationRequest.dispenseRequest.numberOfRepeatsAllowed"]
    respond("Approved", context(mr), refills=0)
    respond("Denied", context(mr), denial_code="AG")


def test_the_answer_goes_to_the_pharmacy_that_asked():
    mr = renewed()
    mr["dispenseRequest"]["performer"] = {"reference": "Organization/org-pharmacy-harbor"}
    with pytest.raises(UnprocessableEntity) as caught:
        respond("Replace", context(mr))
    assert [i.expression for i in caught.value.issues] == ["MedicationRequest.dispenseRequest.performer"]


def test_sender_id_can_be_set_instead_of_the_id_the_pharmacy_addressed():
    header = parse_message(respond("Approved", context(renewed()), sender_id="OTHER-ACCOUNT"))[0]
    assert header.from_ == "OTHER-ACCOUNT"


def test_denial_reason_longer_than_its_element_is_refused():
    with pytest.raises(UnprocessableEntity) as caught:
        respond("Denied", context("amlodipine-tablet"), denial_reason="x" * 71)
    assert [i.expression for i in caught.value.issues] == ["Task.statusReason"]


@pytest.mark.parametrize("decision, kwargs, message", [
    ("Maybe", {}, "decision"),
    ("Denied", {}, "denial_code or a denial_reason"),
    ("Denied", {"denial_code": "AM", "refills": 2}, "no refills"),
    ("Denied", {"denial_code": "am"}, "two-letter"),
    ("Approved", {"denial_reason": "no"}, "only with Denied"),
    ("Denied", {"denial_code": "AM", "note": "x"}, "not note"),
    ("Approved", {"message_id": "renewal-req-77"}, "own MessageID"),
])
def test_programming_errors_raise_value_error(decision, kwargs, message):
    with pytest.raises(ValueError, match=message):
        respond(decision, context(renewed()), **kwargs)


def test_patient_data_problems_are_refused_like_a_newrx():
    patient = resource("Patient/pat-maria")
    del patient["gender"]
    with pytest.raises(UnprocessableEntity) as caught:
        respond("Approved", context(renewed(), {"Patient/pat-maria": patient}))
    assert [i.expression for i in caught.value.issues] == ["Patient.gender"]

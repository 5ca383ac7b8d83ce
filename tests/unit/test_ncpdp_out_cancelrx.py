"""FHIR -> NCPDP SCRIPT CancelRx (mappers/ncpdp/cancelrx.py): sent when a MedicationRequest that
went out as a NewRx is cancelled or stopped; it names that NewRx and keeps its order number."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fhir_server.errors import UnprocessableEntity
from mappers.ncpdp.cancelrx import build_cancelrx
from mappers.ncpdp.envelope import parse_message
from mappers.ncpdp.newrx import build_newrx
from tests.fixtures.erx import SENDABLE, context, medication_request, resource
from tests.fixtures.erx.expected import assert_prescription_matches, one

SENT = datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)


def cancelled(scenario: str, status: str = "cancelled") -> dict:
    mr = medication_request(scenario)
    mr["status"] = status
    mr["statusReason"] = {"text": "Prescribed in error"}
    return mr


@pytest.mark.parametrize("scenario", SENDABLE)
def test_cancelrx_links_the_newrx_and_repeats_the_prescription(scenario):
    newrx = build_newrx(context(scenario), sender_id="TELEHEALTH01", message_id="newrx-1", sent_time=SENT)
    new_header = parse_message(newrx)[0]
    ctx = context(cancelled(scenario))
    xml = build_cancelrx(ctx, original_message_id=new_header.message_id, sender_id="TELEHEALTH01",
                         message_id="cancel-1", sent_time=SENT)
    header, message_type, body = parse_message(xml)
    assert message_type == "CancelRx"
    assert header.relates_to_message_id == "newrx-1"
    assert header.message_id == "cancel-1"
    assert header.prescriber_order_number == new_header.prescriber_order_number
    assert header.to == new_header.to == one(body, "Pharmacy/Identification/NCPDPID")
    assert (header.to_qualifier, header.from_qualifier) == ("P", "D")
    assert [child.tag for child in body] == ["Patient", "Pharmacy", "Prescriber", "MedicationPrescribed"]
    assert_prescription_matches(body, ctx, scenario)


@pytest.mark.parametrize("status", ["stopped", "entered-in-error"])
def test_stopped_and_entered_in_error_can_be_cancelled(status):
    build_cancelrx(context(cancelled("amlodipine-tablet", status)), original_message_id="n1", sender_id="S")


@pytest.mark.parametrize("status", ["active", "draft", "completed", "on-hold"])
def test_a_medication_request_that_is_not_cancelled_is_refused(status):
    mr = medication_request("amlodipine-tablet")
    mr["status"] = status
    with pytest.raises(UnprocessableEntity) as caught:
        build_cancelrx(context(mr), original_message_id="n1", sender_id="S")
    assert [i.expression for i in caught.value.issues] == ["MedicationRequest.status"]


def test_cancel_of_a_controlled_substance_does_not_apply_the_prescribing_rules():
    """A cancel fills nothing: refill limits and the DEA requirement must not block it."""
    practitioner = resource("Practitioner/prac-sanchez")
    practitioner["identifier"] = practitioner["identifier"][:1]  # NPI only, no DEA number
    ctx = context(cancelled("oxycodone-schedule-ii"), {"Practitioner/prac-sanchez": practitioner})
    body = parse_message(build_cancelrx(ctx, original_message_id="n1", sender_id="S"))[2]
    assert one(body, "MedicationPrescribed/DrugCoded/DEASchedule/Code") == "C48675"
    assert one(body, "MedicationPrescribed/NumberOfRefills") == "1"
    assert body.find("Prescriber/NonVeterinarian/Identification/DEANumber") is None


def test_cancel_still_refuses_what_it_cannot_carry():
    mr = cancelled("amlodipine-tablet")
    del mr["dispenseRequest"]["quantity"]
    mr["status"] = "active"
    with pytest.raises(UnprocessableEntity) as caught:
        build_cancelrx(context(mr), original_message_id="n1", sender_id="S")
    assert [i.expression for i in caught.value.issues] == ["MedicationRequest.status",
                                                          "MedicationRequest.dispenseRequest.quantity"]


def test_cancel_needs_the_original_message_id_and_its_own():
    ctx = context(cancelled("amlodipine-tablet"))
    with pytest.raises(ValueError, match="original_message_id"):
        build_cancelrx(ctx, original_message_id="", sender_id="S")
    with pytest.raises(ValueError, match="original_message_id"):
        build_cancelrx(ctx, original_message_id="x" * 36, sender_id="S")
    with pytest.raises(ValueError, match="own MessageID"):
        build_cancelrx(ctx, original_message_id="same", sender_id="S", message_id="same")


def test_cancel_gets_a_fresh_message_id_by_default():
    ctx = context(cancelled("amlodipine-tablet"))
    first = parse_message(build_cancelrx(ctx, original_message_id="n1", sender_id="S"))[0]
    second = parse_message(build_cancelrx(ctx, original_message_id="n1", sender_id="S"))[0]
    assert first.message_id != second.message_id

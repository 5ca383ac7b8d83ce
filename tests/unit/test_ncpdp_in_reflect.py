"""Inbound SCRIPT messages reflected in FHIR (mappers/ncpdp/reflect.py): the transmission Task's
delivery state, the MedicationRequest's status, the prescriber's Communication and the renewal
Task; every resource produced is valid R4 (fhir_server.interactions.validation.check)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fhir_server.interactions.validation import check
from mappers.ncpdp import reflect
from mappers.ncpdp.inbound import parse_inbound
from mappers.ncpdp.reflect import (
    DELIVERY_STATUS_SYSTEM,
    MESSAGE_ID_SYSTEM,
    business_status,
    delivery_update,
    error_communication,
    error_outcome,
    medication_request_update,
    reflect_delivery,
    renewal_proposal,
    renewal_task,
    transmission_task,
    transport_failure,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "erx_inbound"
NEWRX_ID = "8f14e45fceea167a5a36dedd4bea2543"
CANCEL_ID = "9a1158154dfa42caddbd0694a4e9bdc8"
NOW = datetime(2026, 11, 20, 17, 5, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 20, 17, 9, tzinfo=timezone.utc)


def message(name: str):
    return parse_inbound((FIXTURES / name).read_bytes())


@pytest.fixture()
def medication_request() -> dict:
    return {
        "resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
        "identifier": [{"system": "http://fhir-async-telehealth.example/NamingSystem/prescriber-order-number",
                        "value": "mr-4471"}],
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": "197361"}]},
        "subject": {"reference": "Patient/p1"}, "requester": {"reference": "Practitioner/d1"},
        "dispenseRequest": {"performer": {"reference": "Organization/pharmacy1"}},
    }


@pytest.fixture()
def newrx_task(medication_request) -> dict:
    return transmission_task(medication_request, "NewRx", NEWRX_ID, now=NOW)


@pytest.fixture()
def cancel_task(medication_request) -> dict:
    return transmission_task(medication_request, "CancelRx", CANCEL_ID, now=NOW)


def answering(answer, message_id: str | None):
    """The same answer, relating to another message."""
    return dataclasses.replace(answer, header=dataclasses.replace(answer.header, relates_to_message_id=message_id))


def valid(resource: dict) -> dict:
    check(resource, resource["resourceType"])
    return resource


def parameters(task: dict, element: str) -> dict:
    return {entry["type"]["coding"][0]["code"]: next(v for k, v in entry.items() if k.startswith("value"))
            for entry in task.get(element, [])}


# ---- the transmission Task ----------------------------------------------------------------------

def test_a_queued_transmission_task(newrx_task):
    task = valid(newrx_task)
    assert (task["status"], task["intent"], business_status(task)) == ("requested", "order", "queued")
    assert task["identifier"] == [{"system": MESSAGE_ID_SYSTEM, "value": NEWRX_ID}]
    assert task["focus"] == {"reference": "MedicationRequest/mr1"}
    assert task["for"] == {"reference": "Patient/p1"}
    assert task["requester"] == {"reference": "Practitioner/d1"}
    assert task["owner"] == {"reference": "Organization/pharmacy1"}
    assert parameters(task, "input") == {"message-type": "NewRx", "message-id": NEWRX_ID,
                                         "prescriber-order-number": "mr-4471"}


def test_a_transmission_task_needs_an_outbound_type_and_a_stored_request(medication_request):
    with pytest.raises(ValueError, match="not an outbound"):
        transmission_task(medication_request, "Status", NEWRX_ID)
    with pytest.raises(ValueError, match="needs an id"):
        transmission_task({**medication_request, "id": None}, "NewRx", NEWRX_ID)


@pytest.mark.parametrize("fixture_name, state, status", [
    ("status_000.xml", "sent", "in-progress"),
    ("status_010.xml", "accepted", "completed"),
    ("status_010_script106.xml", "accepted", "completed"),
    ("verify_010.xml", "verified", "completed"),
    ("error_600.xml", "retrying", "in-progress"),
    ("error_602.xml", "retrying", "in-progress"),
    ("error_601.xml", "error", "failed"),
    ("error_900.xml", "error", "failed"),
])
def test_answers_to_a_newrx_set_the_delivery_state(medication_request, newrx_task, fixture_name, state, status):
    task = valid(delivery_update(medication_request, message(fixture_name), newrx_task, now=LATER))
    assert (business_status(task), task["status"]) == (state, status)
    assert task["lastModified"] == LATER.isoformat(timespec="milliseconds")
    assert task["identifier"] == newrx_task["identifier"]


def test_the_output_carries_the_answer_and_the_gateway_code(medication_request, newrx_task):
    answer = message("status_010.xml")
    out = parameters(delivery_update(medication_request, answer, newrx_task, now=LATER), "output")
    assert out["response-type"] == "Status"
    assert out["response-message-id"] == answer.header.message_id
    assert out["gateway-code"]["code"] == "010"
    assert out["gateway-description-code"] == "000"
    assert out["gateway-description"] == "Transaction accepted"


def test_an_error_carries_its_code_in_status_reason_and_a_contained_outcome(medication_request, newrx_task):
    task = valid(delivery_update(medication_request, message("error_601.xml"), newrx_task, now=LATER))
    assert task["statusReason"]["coding"][0]["code"] == "601"
    assert task["statusReason"]["text"] == "601 002 Receiver ID not on file"
    outcome = task["contained"][0]
    assert outcome["resourceType"] == "OperationOutcome" and outcome["id"] == "error"
    assert outcome["issue"][0]["code"] == "processing"
    out = parameters(task, "output")
    assert out["retryable"] is False
    assert out["error-detail"] == {"reference": "#error"}
    assert task["executionPeriod"]["end"] == LATER.isoformat(timespec="milliseconds")


def test_a_retryable_error_outcome_is_transient():
    outcome = valid(error_outcome(message("error_602.xml")))
    assert outcome["issue"][0]["code"] == "transient"
    assert "602 007" in outcome["issue"][0]["diagnostics"]


def test_the_delivery_state_never_goes_backwards(medication_request, newrx_task):
    verified = delivery_update(medication_request, message("verify_010.xml"), newrx_task, now=NOW)
    for late in ("status_000.xml", "status_010.xml", "error_600.xml"):
        assert delivery_update(medication_request, message(late), verified, now=LATER) == verified


def test_an_acceptance_after_a_retryable_error_moves_on(medication_request, newrx_task):
    retrying = delivery_update(medication_request, message("error_602.xml"), newrx_task, now=NOW)
    accepted = valid(delivery_update(medication_request, message("status_010.xml"), retrying, now=LATER))
    assert business_status(accepted) == "accepted"
    assert "statusReason" not in accepted and "contained" not in accepted


def test_a_status_after_a_final_error_changes_nothing(medication_request, newrx_task):
    failed = delivery_update(medication_request, message("error_900.xml"), newrx_task, now=NOW)
    assert delivery_update(medication_request, message("status_010.xml"), failed, now=LATER) == failed


def test_an_answer_to_another_message_is_refused(medication_request):
    other = transmission_task(medication_request, "NewRx", "someothermessageid", now=NOW)
    with pytest.raises(ValueError, match="answers message"):
        delivery_update(medication_request, message("status_010.xml"), other)


def test_the_input_task_is_not_modified(medication_request, newrx_task):
    before = copy.deepcopy(newrx_task)
    delivery_update(medication_request, message("error_900.xml"), newrx_task, now=LATER)
    assert newrx_task == before


def test_without_a_task_one_is_made_from_relates_to(medication_request):
    task = valid(delivery_update(medication_request, message("status_000.xml"), now=NOW))
    assert task["identifier"][0]["value"] == NEWRX_ID
    assert business_status(task) == "sent"


def test_without_a_task_or_relates_to_there_is_nothing_to_update(medication_request):
    answer = answering(message("status_000.xml"), None)
    with pytest.raises(ValueError, match="RelatesToMessageID"):
        delivery_update(medication_request, answer)


# ---- cancels -------------------------------------------------------------------------------------

def test_a_delivered_cancel_stays_in_progress_until_the_pharmacy_answers(medication_request, cancel_task):
    task = valid(delivery_update(medication_request, answering(message("status_010.xml"), CANCEL_ID), cancel_task,
                                 now=LATER))
    assert (business_status(task), task["status"]) == ("accepted", "in-progress")


def test_cancel_approved(medication_request, cancel_task):
    changes = reflect_delivery(medication_request, message("cancelrx_response_approved.xml"), cancel_task, now=LATER)
    task = valid(changes.task)
    assert (business_status(task), task["status"]) == ("cancel-approved", "completed")
    assert parameters(task, "output")["note"] == "Prescription removed from the fill queue"
    assert valid(changes.medication_request)["status"] == "cancelled"
    assert changes.communication is None


def test_cancel_denied(medication_request, cancel_task):
    changes = reflect_delivery(medication_request, message("cancelrx_response_denied.xml"), cancel_task, now=LATER)
    task = valid(changes.task)
    assert (business_status(task), task["status"]) == ("cancel-denied", "rejected")
    assert task["statusReason"]["text"] == "Prescription already dispensed to the patient"
    assert task["statusReason"]["coding"][0]["code"] == "AA"
    out = parameters(task, "output")
    assert (out["denial-reason-code"], out["denial-reason"]) == ("AA", "Prescription already dispensed to the patient")
    assert changes.medication_request is None  # the pharmacy keeps it: the record is not changed
    communication = valid(changes.communication)
    assert communication["recipient"] == [{"reference": "Practitioner/d1"}]
    assert communication["sender"] == {"reference": "Organization/pharmacy1"}
    assert "already dispensed" in communication["payload"][0]["contentString"]


def test_a_cancel_response_does_not_answer_a_newrx(medication_request, newrx_task):
    answer = answering(message("cancelrx_response_approved.xml"), NEWRX_ID)
    with pytest.raises(ValueError, match="does not answer a NewRx"):
        delivery_update(medication_request, answer, newrx_task)


def test_an_approved_cancel_leaves_a_closed_request_alone(medication_request, cancel_task):
    stopped = {**medication_request, "status": "stopped"}
    changes = reflect_delivery(stopped, message("cancelrx_response_approved.xml"), cancel_task, now=LATER)
    assert changes.medication_request is None


# ---- the MedicationRequest and the prescriber ------------------------------------------------------

@pytest.mark.parametrize("fixture_name", ["error_601.xml", "error_900.xml"])
def test_a_final_error_puts_the_request_on_hold_and_tells_the_prescriber(medication_request, newrx_task, fixture_name):
    changes = reflect_delivery(medication_request, message(fixture_name), {**newrx_task, "id": "t1"}, now=LATER)
    updated = valid(changes.medication_request)
    assert updated["status"] == "on-hold"
    assert updated["statusReason"] == changes.task["statusReason"]
    communication = valid(changes.communication)
    assert communication["status"] == "completed"
    assert communication["subject"] == {"reference": "Patient/p1"}
    assert communication["about"] == [{"reference": "MedicationRequest/mr1"}, {"reference": "Task/t1"}]
    assert communication["recipient"] == [{"reference": "Practitioner/d1"}]
    assert communication["reasonCode"][0]["coding"][0] == {"system": DELIVERY_STATUS_SYSTEM, "code": "error",
                                                           "display": reflect.DELIVERY_STATES["error"][0]}
    assert "rejected" in communication["payload"][0]["contentString"]


@pytest.mark.parametrize("fixture_name", ["status_000.xml", "status_010.xml", "verify_010.xml", "error_600.xml"])
def test_other_answers_leave_the_request_alone_and_say_nothing(medication_request, newrx_task, fixture_name):
    changes = reflect_delivery(medication_request, message(fixture_name), newrx_task, now=LATER)
    assert changes.medication_request is None and changes.communication is None


def test_a_repeated_answer_changes_nothing_at_all(medication_request, newrx_task):
    failed = delivery_update(medication_request, message("error_900.xml"), newrx_task, now=NOW)
    changes = reflect_delivery(medication_request, message("error_900.xml"), failed, now=LATER)
    assert changes == reflect.DeliveryChanges(failed)


def test_an_error_on_a_cancel_does_not_hold_the_request(medication_request, cancel_task):
    answer = answering(message("error_900.xml"), CANCEL_ID)
    changes = reflect_delivery(medication_request, answer, cancel_task, now=LATER)
    assert changes.medication_request is None
    assert "CancelRx was rejected" in valid(changes.communication)["payload"][0]["contentString"]


def test_transport_failures_retry_then_dead_letter(medication_request, newrx_task):
    retrying = valid(transport_failure(newrx_task, "ConnectTimeout", attempts=1, dead_letter=False, now=NOW))
    assert (business_status(retrying), retrying["status"]) == ("retrying", "in-progress")
    dead = valid(transport_failure(retrying, "HTTP 500 from gateway", attempts=6, dead_letter=True, now=LATER))
    assert (business_status(dead), dead["status"]) == ("dead-letter", "failed")
    assert parameters(dead, "output") == {"attempts": 6, "transport-error": "HTTP 500 from gateway"}
    held = valid(medication_request_update(medication_request, dead))
    assert held["status"] == "on-hold" and held["statusReason"] == {"text": "HTTP 500 from gateway"}
    notice = valid(error_communication(medication_request, dead))
    assert "could not be delivered" in notice["payload"][0]["contentString"]


def test_a_transport_failure_after_an_answer_changes_nothing(medication_request, newrx_task):
    accepted = delivery_update(medication_request, message("status_010.xml"), newrx_task, now=NOW)
    assert transport_failure(accepted, "timeout", attempts=2, dead_letter=True) == accepted


# ---- renewal requests ----------------------------------------------------------------------------

def test_renewal_task_for_the_clinician():
    request = message("rxrenewal_request.xml")
    task = valid(renewal_task(request, "Patient/p1", "Practitioner/d1", "MedicationRequest/mr1", now=NOW))
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert task["code"]["coding"][0]["code"] == "renewal-request"
    assert task["for"] == {"reference": "Patient/p1"}
    assert task["owner"] == {"reference": "Practitioner/d1"}
    assert task["focus"] == {"reference": "MedicationRequest/mr1"}
    assert task["identifier"] == [{"system": MESSAGE_ID_SYSTEM, "value": "5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"}]
    assert task["requester"]["identifier"]["value"] == "0999017"
    assert "Main Street Pharmacy" in task["description"] and "3 refills" in task["description"]
    inputs = parameters(task, "input")
    assert inputs["rx-reference-number"] == "RX7750213"
    assert inputs["prescriber-order-number"] == "mr-4471"
    assert inputs["requested-refills"] == 3
    assert inputs["message-id"] == "5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
    assert inputs["pharmacy-ncpdp-id"] == "0999017"
    assert inputs["days-supply"] == 30
    assert inputs["last-fill-date"] == "2026-11-21"
    assert inputs["quantity-dispensed"] == {"value": 30, "system": reflect.NCI_SYSTEM, "code": "C48542"}
    codes = {c["system"]: c["code"] for c in inputs["medication-dispensed"]["coding"]}
    assert codes == {reflect.RXNORM_SYSTEM: "197361", reflect.NDC_SYSTEM: "00093717198"}


def test_a_sent_time_without_a_zone_is_read_as_utc(medication_request, newrx_task):
    answer = message("status_010.xml")
    answer = dataclasses.replace(answer, header=dataclasses.replace(
        answer.header, sent_time=datetime(2026, 11, 20, 17, 3, 13)))
    task = valid(delivery_update(medication_request, answer, newrx_task, now=LATER))
    assert parameters(task, "output")["response-sent-time"] == "2026-11-20T17:03:13+00:00"


def test_the_renewal_task_gives_back_the_request_header():
    request = message("rxrenewal_request.xml")
    task = renewal_task(request, "Patient/p1", "Practitioner/d1", now=NOW)
    assert reflect.renewal_request_header(task) == request.header


def test_only_a_renewal_task_has_a_request_header(newrx_task):
    with pytest.raises(ValueError, match="not a renewal Task"):
        reflect.renewal_request_header(newrx_task)


def test_the_prescriber_order_number_can_be_given(medication_request):
    task = transmission_task(medication_request, "NewRx", NEWRX_ID, prescriber_order_number="PON-1")
    assert parameters(task, "input")["prescriber-order-number"] == "PON-1"


def test_without_an_identifier_the_order_number_is_the_resource_id(medication_request):
    del medication_request["identifier"]
    task = transmission_task(medication_request, "NewRx", NEWRX_ID)
    assert parameters(task, "input")["prescriber-order-number"] == "mr1"


def test_renewal_task_without_a_known_original():
    request = message("rxrenewal_request.xml")
    request = dataclasses.replace(request, header=dataclasses.replace(request.header, prescriber_order_number=None))
    task = valid(renewal_task(request, {"reference": "Patient/p1"}, {"reference": "Practitioner/d1"}, now=NOW))
    assert "focus" not in task and "groupIdentifier" not in task
    assert "prescriber-order-number" not in parameters(task, "input")


def test_renewal_proposal_is_a_draft_for_the_clinician_to_approve():
    proposal = valid(renewal_proposal(message("rxrenewal_request.xml"), "Patient/p1", "Practitioner/d1",
                                      "MedicationRequest/mr1"))
    assert (proposal["status"], proposal["intent"]) == ("draft", "proposal")
    assert proposal["priorPrescription"] == {"reference": "MedicationRequest/mr1"}
    assert proposal["dispenseRequest"]["numberOfRepeatsAllowed"] == 3
    assert proposal["dispenseRequest"]["expectedSupplyDuration"]["value"] == 30
    assert proposal["dosageInstruction"] == [{"text": "Take one tablet by mouth once daily"}]
    assert proposal["substitution"] == {"allowedBoolean": True}
    assert proposal["medicationCodeableConcept"]["text"] == "amlodipine 5 MG Oral Tablet"

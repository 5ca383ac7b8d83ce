"""A mapper refuses what cannot be sent safely (mappers/ncpdp/refusals.py, research/ncpdp.md 4.5):
one 422 OperationOutcome listing every problem, each naming the FHIR element to fix, none
repeating patient data; never a message with a blank required field."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from fhir_server.errors import UnprocessableEntity
from mappers.ncpdp import codes
from mappers.ncpdp.newrx import build_newrx
from mappers.ncpdp.refusals import is_dea_number, is_ncpdpid, is_npi, npi_check_digit
from tests.fixtures.erx import context, medication_request, resource

SENT = datetime(2026, 11, 20, tzinfo=timezone.utc)


def refusal(ctx) -> UnprocessableEntity:
    with pytest.raises(UnprocessableEntity) as caught:
        build_newrx(ctx, sender_id="TELEHEALTH01", message_id="m-1", sent_time=SENT)
    return caught.value


def expressions(error: UnprocessableEntity) -> list[str]:
    return [issue.expression for issue in error.issues]


def test_schedule_ii_with_refills_is_refused():
    error = refusal(context("oxycodone-schedule-ii"))
    assert expressions(error) == ["MedicationRequest.dispenseRequest.numberOfRepeatsAllowed"]
    assert "Schedule II" in error.issues[0].diagnostics


def test_compounded_medication_is_refused():
    error = refusal(context("compounded"))
    assert expressions(error) == ["Medication.code.coding"]
    assert "compounded" in error.issues[0].diagnostics and "RxNorm" in error.issues[0].diagnostics


def test_free_text_drug_is_refused():
    error = refusal(context("free-text"))
    assert expressions(error) == ["MedicationRequest.medicationCodeableConcept.coding"]


def test_pharmacy_without_ncpdpid_is_refused():
    error = refusal(context("pharmacy-without-ncpdpid"))
    assert expressions(error) == ["Organization.identifier"]
    assert "NCPDP" in error.issues[0].diagnostics


def test_every_problem_is_listed_at_once():
    error = refusal(context("incomplete"))
    assert error.status == 422
    assert expressions(error) == [
        "Patient.name.given",
        "Patient.gender",
        "Patient.birthDate",
        "Organization.identifier",
        "Practitioner.identifier",
        "Practitioner.address",
        "Practitioner.telecom",
        "MedicationRequest.medicationCodeableConcept.coding",
        "MedicationRequest.dispenseRequest.quantity",
        "MedicationRequest.dispenseRequest.expectedSupplyDuration",
        "MedicationRequest.dosageInstruction[0].text",
    ]
    outcome = error.outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    assert all(i["severity"] == "error" and i["code"] == "business-rule" for i in outcome["issue"])
    assert all(len(i["expression"]) == 1 for i in outcome["issue"])
    assert "11 problems" in str(error)


def test_no_quantity_and_no_sig_is_never_sent():
    """The acceptance rule: a MedicationRequest without quantity and sig is never sent."""
    mr = medication_request("amlodipine-tablet")
    del mr["dispenseRequest"]["quantity"]
    del mr["dosageInstruction"]
    assert expressions(refusal(context(mr))) == ["MedicationRequest.dispenseRequest.quantity",
                                                 "MedicationRequest.dosageInstruction"]


def test_diagnostics_never_echo_patient_data():
    patient = resource("Patient/pat-maria")
    patient["name"][0]["family"] = "Zyxwvutsrqponmlkjihgfedcbazyxwvutsrqp"  # too long: refused
    patient["birthDate"] = "1984-03"
    mr = medication_request("amlodipine-tablet")
    mr["dosageInstruction"][0]["text"] = "Secret-sig " * 100  # > 1000 characters
    mr["note"] = [{"text": "Secret-note " * 20}]
    error = refusal(context(mr, {"Patient/pat-maria": patient}))
    text = json.dumps(error.outcome())
    for secret in ("Zyxwv", "1984", "Secret", "Garcia", "Maria", "MRN-004512", "0999017", "1847293010"):
        assert secret not in text
    assert expressions(error) == ["Patient.name.family", "Patient.birthDate", "MedicationRequest.dosageInstruction.text",
                                  "MedicationRequest.note"]


def test_prescriber_without_npi_is_refused():
    practitioner = resource("Practitioner/prac-sanchez")
    practitioner["identifier"] = [i for i in practitioner["identifier"] if i["system"] != codes.NPI]
    error = refusal(context("amlodipine-tablet", {"Practitioner/prac-sanchez": practitioner}))
    assert expressions(error) == ["Practitioner.identifier"]
    assert "NPI" in error.issues[0].diagnostics


@pytest.mark.parametrize("npi", ["1847293011", "184729301", "18472930100", "184729301X"])
def test_prescriber_npi_must_pass_format_and_check_digit(npi):
    practitioner = resource("Practitioner/prac-sanchez")
    practitioner["identifier"][0]["value"] = npi
    error = refusal(context("amlodipine-tablet", {"Practitioner/prac-sanchez": practitioner}))
    assert expressions(error) == ["Practitioner.identifier"] and "check digit" in error.issues[0].diagnostics


@pytest.mark.parametrize("ncpdpid", ["099901", "09990170", "O999017"])
def test_pharmacy_ncpdpid_must_be_seven_digits(ncpdpid):
    pharmacy = resource("Organization/org-pharmacy-main")
    pharmacy["identifier"][0]["value"] = ncpdpid
    error = refusal(context("amlodipine-tablet", {"Organization/org-pharmacy-main": pharmacy}))
    assert expressions(error) == ["Organization.identifier"] and "7 digits" in error.issues[0].diagnostics


def test_pharmacy_npi_when_present_must_be_valid():
    pharmacy = resource("Organization/org-pharmacy-main")
    pharmacy["identifier"][1]["value"] = "1928374656"
    assert expressions(refusal(context("amlodipine-tablet", {"Organization/org-pharmacy-main": pharmacy}))) == [
        "Organization.identifier"]


def test_pharmacy_needs_a_name():
    pharmacy = resource("Organization/org-pharmacy-main")
    del pharmacy["name"]
    assert expressions(refusal(context("amlodipine-tablet", {"Organization/org-pharmacy-main": pharmacy}))) == [
        "Organization.name"]


@pytest.mark.parametrize("unit", [
    {"value": 30, "unit": "each", "system": codes.UCUM, "code": "{each}"},
    {"value": 30, "unit": "1", "system": codes.UCUM, "code": "1"},
    {"value": 30, "unit": "Unspecified", "system": codes.NCI_THESAURUS, "code": "C38046"},
    {"value": 30, "unit": "Each", "system": codes.NCI_THESAURUS, "code": "C64933"},
    {"value": 30, "unit": "Bag", "system": codes.NCI_THESAURUS, "code": "C48474"},  # sunset
    {"value": 30, "unit": "mg", "system": codes.UCUM, "code": "mg"},
    {"value": 30},
])
def test_quantity_unit_without_an_ncpdp_code_is_refused(unit):
    mr = medication_request("amlodipine-tablet")
    mr["dispenseRequest"]["quantity"] = unit
    assert expressions(refusal(context(mr))) == ["MedicationRequest.dispenseRequest.quantity.code"]


@pytest.mark.parametrize("value", [0, -5, True])
def test_quantity_must_be_positive(value):
    mr = medication_request("amlodipine-tablet")
    mr["dispenseRequest"]["quantity"]["value"] = value
    assert expressions(refusal(context(mr))) == ["MedicationRequest.dispenseRequest.quantity.value"]


def test_sig_longer_than_1000_characters_is_refused():
    mr = medication_request("amlodipine-tablet")
    mr["dosageInstruction"][0]["text"] = "x" * 1001
    error = refusal(context(mr))
    assert expressions(error) == ["MedicationRequest.dosageInstruction.text"] and "1000" in error.issues[0].diagnostics
    mr["dosageInstruction"][0]["text"] = "x" * 1000
    build_newrx(context(mr), sender_id="S", message_id="m", sent_time=SENT)


def test_drug_description_longer_than_105_characters_is_refused():
    mr = medication_request("amlodipine-tablet")
    mr["medicationCodeableConcept"]["text"] = "amlodipine " * 10
    error = refusal(context(mr))
    assert expressions(error) == ["MedicationRequest.medicationCodeableConcept.text"] and "105" in error.issues[0].diagnostics


def test_structured_only_dosage_is_refused():
    mr = medication_request("triamcinolone-cream")
    del mr["dosageInstruction"][1]["text"]
    assert expressions(refusal(context(mr))) == ["MedicationRequest.dosageInstruction[1].text"]


def test_rxnorm_ingredient_is_not_a_prescribable_drug():
    mr = medication_request("amlodipine-tablet")
    mr["medicationCodeableConcept"] = {"coding": [{"system": codes.RXNORM, "code": "17767", "display": "amlodipine"}]}
    error = refusal(context(mr))
    assert expressions(error) == ["MedicationRequest.medicationCodeableConcept.coding"]
    assert "SCD" in error.issues[0].diagnostics


def test_ndc_alone_is_not_enough():
    mr = medication_request("triamcinolone-cream")
    mr["medicationCodeableConcept"]["coding"] = mr["medicationCodeableConcept"]["coding"][1:]
    assert expressions(refusal(context(mr))) == ["MedicationRequest.medicationCodeableConcept.coding"]


def test_malformed_ndc_is_refused():
    mr = medication_request("triamcinolone-cream")
    mr["medicationCodeableConcept"]["coding"][1]["code"] = "0168000430"
    assert expressions(refusal(context(mr))) == ["MedicationRequest.medicationCodeableConcept.coding"]


def test_controlled_substance_without_dea_number_is_refused():
    mr = medication_request("oxycodone-schedule-ii")
    mr["dispenseRequest"]["numberOfRepeatsAllowed"] = 0
    practitioner = resource("Practitioner/prac-sanchez")
    practitioner["identifier"] = [i for i in practitioner["identifier"] if i["system"] not in codes.DEA_NUMBER]
    error = refusal(context(mr, {"Practitioner/prac-sanchez": practitioner}))
    assert expressions(error) == ["Practitioner.identifier"] and "DEA" in error.issues[0].diagnostics


def test_controlled_substance_with_an_invalid_dea_number_is_refused():
    mr = medication_request("oxycodone-schedule-ii")
    mr["dispenseRequest"]["numberOfRepeatsAllowed"] = 0
    practitioner = resource("Practitioner/prac-sanchez")
    practitioner["identifier"][1]["value"] = "BS1234564"
    assert expressions(refusal(context(mr, {"Practitioner/prac-sanchez": practitioner}))) == ["Practitioner.identifier"]


def test_schedule_iii_to_v_allow_five_refills():
    mr = medication_request("amlodipine-tablet")
    mr["extension"] = [{"url": codes.DEA_SCHEDULE_EXTENSION, "valueCode": "CIV"}]
    mr["dispenseRequest"]["numberOfRepeatsAllowed"] = 5
    build_newrx(context(mr), sender_id="S", message_id="m", sent_time=SENT)
    mr["dispenseRequest"]["numberOfRepeatsAllowed"] = 6
    error = refusal(context(mr))
    assert expressions(error) == ["MedicationRequest.dispenseRequest.numberOfRepeatsAllowed"]
    assert "Schedule IV" in error.issues[0].diagnostics and "5" in error.issues[0].diagnostics


def test_schedule_i_cannot_be_prescribed():
    mr = medication_request("amlodipine-tablet")
    mr["extension"] = [{"url": codes.DEA_SCHEDULE_EXTENSION, "valueString": "Schedule I"}]
    assert expressions(refusal(context(mr))) == ["MedicationRequest.extension"]


def test_unreadable_schedule_extension_is_refused():
    mr = medication_request("amlodipine-tablet")
    mr["extension"] = [{"url": codes.DEA_SCHEDULE_EXTENSION, "valueString": "maybe"}]
    assert expressions(refusal(context(mr))) == ["MedicationRequest.extension"]


def test_unresolvable_references_are_named():
    mr = medication_request("albuterol-inhaler")
    mr["subject"] = {"reference": "Patient/missing"}
    mr["requester"] = {"reference": "Organization/org-pharmacy-main"}  # wrong type
    mr["dispenseRequest"]["performer"] = {"reference": "Organization/missing"}
    mr["medicationReference"] = {"reference": "#not-contained"}
    assert expressions(refusal(context(mr))) == [
        "MedicationRequest.subject", "MedicationRequest.dispenseRequest.performer", "MedicationRequest.requester",
        "MedicationRequest.medicationReference"]


def test_role_without_a_practitioner_is_refused():
    role = resource("PractitionerRole/role-kim-telehealth")
    del role["practitioner"]
    error = refusal(context("nitrofurantoin-liquid", {"PractitionerRole/role-kim-telehealth": role}))
    assert expressions(error) == ["PractitionerRole.practitioner"]


def test_prescriber_address_is_refused_element_by_element():
    practitioner = resource("Practitioner/prac-sanchez")
    practitioner["address"][0].update(city=" ", state="Illinois", postalCode="6270")
    assert expressions(refusal(context("amlodipine-tablet", {"Practitioner/prac-sanchez": practitioner}))) == [
        "Practitioner.address.city", "Practitioner.address.state", "Practitioner.address.postalCode"]


def test_control_characters_are_refused_not_crashed_on():
    patient = resource("Patient/pat-maria")
    patient["name"][0]["family"] = "Gar\x00cia"
    error = refusal(context("amlodipine-tablet", {"Patient/pat-maria": patient}))
    assert expressions(error) == ["Patient.name.family"] and "control characters" in error.issues[0].diagnostics


def test_order_number_is_required():
    mr = medication_request("amlodipine-tablet")
    mr["identifier"] = []
    mr["id"] = "x" * 40
    assert expressions(refusal(context(mr))) == ["MedicationRequest.identifier"]


def test_bad_icd10_code_is_refused():
    mr = medication_request("amlodipine-tablet")
    mr["reasonCode"][0]["coding"][0]["code"] = "hypertension"
    assert expressions(refusal(context(mr))) == ["MedicationRequest.reasonCode"]


def test_written_date_is_required():
    mr = medication_request("amlodipine-tablet")
    del mr["authoredOn"]
    assert expressions(refusal(context(mr))) == ["MedicationRequest.authoredOn"]


def test_partial_birth_date_is_refused():
    patient = resource("Patient/pat-maria")
    patient["birthDate"] = "1984"
    assert expressions(refusal(context("amlodipine-tablet", {"Patient/pat-maria": patient}))) == ["Patient.birthDate"]


# --- identifier formats ---------------------------------------------------------------------------

@pytest.mark.parametrize("npi, valid", [
    ("1234567893", True), ("1847293010", True), ("1234567890", False), ("123456789", False), ("12345678931", False),
    ("abcdefghij", False),
])
def test_npi_luhn_check_digit(npi, valid):
    assert is_npi(npi) is valid


def test_npi_check_digit_for_a_stem():
    assert npi_check_digit("123456789") == "3"


@pytest.mark.parametrize("dea, valid", [
    ("BS1234563", True), ("AC7654329", True), ("BS1234564", False), ("B91234563", True), ("9S1234563", False),
    ("BS123456", False), ("bs1234563", False),
])
def test_dea_number_check_digit(dea, valid):
    assert is_dea_number(dea) is valid


def test_ncpdpid_is_seven_digits():
    assert is_ncpdpid("0999017") and not is_ncpdpid("999017") and not is_ncpdpid("09990170")


def test_controlled_substance_rules_are_listed_with_the_other_problems():
    """A Schedule II order with refills, no DEA number and no sig: all three at once."""
    mr = medication_request("oxycodone-schedule-ii")
    del mr["dosageInstruction"]
    practitioner = resource("Practitioner/prac-sanchez")
    practitioner["identifier"] = practitioner["identifier"][:1]
    del practitioner["address"]
    assert expressions(refusal(context(mr, {"Practitioner/prac-sanchez": practitioner}))) == [
        "Practitioner.address", "MedicationRequest.dosageInstruction", "Practitioner.identifier",
        "MedicationRequest.dispenseRequest.numberOfRepeatsAllowed"]

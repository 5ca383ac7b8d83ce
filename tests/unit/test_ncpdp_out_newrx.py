"""FHIR -> NCPDP SCRIPT 2017071 NewRx (mappers/ncpdp/newrx.py): every message built from the
fixtures passes the project schema and says, field by field, what its FHIR sources say."""

from __future__ import annotations

import copy
import os
from datetime import datetime, timezone

import pytest
from lxml import etree

from mappers.ncpdp import codes
from mappers.ncpdp.envelope import parse_message
from mappers.ncpdp.newrx import build_newrx, normalise_ndc
from mappers.ncpdp.validate import validate_message
from tests.fixtures.erx import GOLDEN, SENDABLE, context, medication_request, resource
from tests.fixtures.erx.expected import assert_prescription_matches, one, texts

SENDER = "TELEHEALTH01"
SENT = datetime(2026, 11, 20, 15, 16, 17, 300000, tzinfo=timezone.utc)
MESSAGE_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def build(ctx, **kwargs) -> bytes:
    kwargs.setdefault("sender_id", SENDER)
    kwargs.setdefault("message_id", MESSAGE_ID)
    kwargs.setdefault("sent_time", SENT)
    return build_newrx(ctx, **kwargs)


@pytest.mark.parametrize("scenario", SENDABLE)
def test_newrx_is_schema_valid_and_matches_its_sources(scenario):
    ctx = context(scenario)
    xml = build(ctx)
    validate_message(xml)  # again, explicitly: build_newrx validates too
    header, message_type, body = parse_message(xml)
    assert message_type == "NewRx"
    assert header.to == one(body, "Pharmacy/Identification/NCPDPID") and header.to_qualifier == "P"
    assert header.from_ == SENDER and header.from_qualifier == "D"
    assert header.message_id == MESSAGE_ID
    assert header.sent_time == SENT
    assert header.prescriber_order_number == ctx.medication_request["identifier"][0]["value"]
    assert header.relates_to_message_id is None
    assert [child.tag for child in body] == ["Patient", "Pharmacy", "Prescriber", "MedicationPrescribed"]
    assert_prescription_matches(body, ctx, scenario)


def test_the_acceptance_example_has_every_xpath_the_gateway_checks():
    """research/ncpdp.md's acceptance minimum, read with the XPaths it names."""
    root = etree.fromstring(build(context("amlodipine-tablet")))
    assert one(root, "//Header/To") == "0999017"
    assert one(root, "//Header/MessageID") == MESSAGE_ID
    assert one(root, "//Header/PrescriberOrderNumber") == "RX-2026-000123"
    assert len(root.xpath("//Body/NewRx")) == 1
    assert one(root, "//HumanPatient/Name/LastName") == "Garcia"
    assert one(root, "//HumanPatient/DateOfBirth/Date") == "1984-03-12"
    assert one(root, "//Pharmacy/Identification/NCPDPID") == "0999017"
    assert one(root, "//Prescriber/NonVeterinarian/Identification/NPI") == "1847293010"
    assert one(root, "//MedicationPrescribed/DrugDescription") == "amlodipine 5 MG Oral Tablet"
    assert one(root, "//DrugCoded/DrugDBCode/Code") == "197361"
    assert one(root, "//Quantity/Value") == "30"
    assert one(root, "//Quantity/QuantityUnitOfMeasure/Code").startswith("C")
    assert one(root, "//DaysSupply") == "30"
    assert one(root, "//NumberOfRefills") == "3"
    assert one(root, "//Sig/SigText") == "Take 1 tablet by mouth once daily"
    assert b"I10" in etree.tostring(root)


def test_golden_newrx_with_fixed_message_id_and_sent_time():
    xml = build(context("amlodipine-tablet"))
    pretty = etree.tostring(etree.fromstring(xml), pretty_print=True, xml_declaration=True, encoding="UTF-8")
    golden = GOLDEN / "newrx-amlodipine-tablet.xml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_bytes(pretty)
    assert pretty == golden.read_bytes()


def test_build_is_deterministic_given_message_id_and_sent_time():
    assert build(context("triamcinolone-cream")) == build(context("triamcinolone-cream"))


def test_message_id_and_sent_time_default_to_new_values():
    ctx = context("amlodipine-tablet")
    first = build_newrx(ctx, sender_id=SENDER)
    second = build_newrx(ctx, sender_id=SENDER)
    (h1, _, _), (h2, _, _) = parse_message(first), parse_message(second)
    assert h1.message_id != h2.message_id and len(h1.message_id) <= 35
    assert abs((datetime.now(timezone.utc) - h1.sent_time).total_seconds()) < 60


def test_medication_resource_gives_strength_and_dose_form():
    body = parse_message(build(context("lisinopril-medication")))[2]
    assert one(body, "MedicationPrescribed/DrugCoded/Strength/StrengthValue") == "10"
    assert one(body, "MedicationPrescribed/DrugCoded/Strength/StrengthForm/Code") == "C42998"
    assert one(body, "MedicationPrescribed/DrugCoded/Strength/StrengthUnitOfMeasure/Code") == "C28253"
    assert one(body, "MedicationPrescribed/Diagnosis/Secondary/Description") == \
        "Type 2 diabetes mellitus without complications"


def test_concentrations_are_left_to_the_rxnorm_code():
    """A mg/mL strength has no StrengthUnitOfMeasure we can name, so Strength is left out."""
    med = resource("Medication/med-lisinopril")
    med["ingredient"][0]["strength"]["denominator"] = {"value": 1, "unit": "mL", "system": codes.UCUM, "code": "mL"}
    body = parse_message(build(context("lisinopril-medication", {"Medication/med-lisinopril": med})))[2]
    assert body.find("MedicationPrescribed/DrugCoded/Strength") is None


def test_ndc_is_sent_as_11_digits_with_qualifier_nd():
    body = parse_message(build(context("triamcinolone-cream")))[2]
    assert one(body, "MedicationPrescribed/DrugCoded/ProductCode/Code") == "00168000430"
    assert one(body, "MedicationPrescribed/DrugCoded/ProductCode/Qualifier") == "ND"
    # ProductCode comes before DrugDBCode, as in the samples
    assert [c.tag for c in body.find("MedicationPrescribed/DrugCoded")] == ["ProductCode", "DrugDBCode"]


@pytest.mark.parametrize("ndc, expected", [
    ("0168-0004-30", "00168000430"), ("12345-678-90", "12345067890"), ("12345-6789-1", "12345678901"),
    ("12345-6789-01", "12345678901"), ("12345678901", "12345678901"), ("1234567890", None), ("12-34-56", None),
])
def test_ndc_normalisation(ndc, expected):
    assert normalise_ndc(ndc) == expected


def test_sig_joins_every_dosage_instruction_in_sequence_order():
    body = parse_message(build(context("triamcinolone-cream")))[2]
    assert one(body, "MedicationPrescribed/Sig/SigText") == (
        "Apply a thin layer to the affected skin twice daily for 2 weeks; Then apply once daily as needed for flares")


def test_practitioner_role_requester_gives_specialty_and_role_phone():
    ctx = context("nitrofurantoin-liquid")
    assert ctx.practitioner_role["id"] == "role-kim-telehealth" and ctx.practitioner["id"] == "prac-kim"
    prescriber = parse_message(build(ctx))[2].find("Prescriber/NonVeterinarian")
    assert one(prescriber, "Specialty") == "207Q00000X"
    assert one(prescriber, "CommunicationNumbers/PrimaryTelephone/Number") == "2075550123"
    assert one(prescriber, "CommunicationNumbers/PrimaryTelephone/Extension") == "42"
    assert one(prescriber, "CommunicationNumbers/ElectronicMail") == "dkim@telehealth.example.org"
    assert one(prescriber, "Identification/StateLicenseNumber") == "MD021558"  # from qualification.identifier


def test_dea_number_and_schedule_go_out_only_with_a_controlled_substance():
    plain = parse_message(build(context("amlodipine-tablet")))[2]
    assert plain.find("MedicationPrescribed/DrugCoded/DEASchedule") is None
    assert plain.find("Prescriber/NonVeterinarian/Identification/DEANumber") is None

    mr = medication_request("oxycodone-schedule-ii")
    mr["dispenseRequest"]["numberOfRepeatsAllowed"] = 0
    body = parse_message(build(context(mr)))[2]
    assert one(body, "MedicationPrescribed/DrugCoded/DEASchedule/Code") == "C48675"
    assert one(body, "Prescriber/NonVeterinarian/Identification/DEANumber") == "BS1234563"
    assert texts(body, "Prescriber/NonVeterinarian/Identification/*") == ["036112233", "BS1234563", "1847293010"]


def test_a_stated_schedule_extension_wins_over_the_local_table():
    mr = medication_request("amlodipine-tablet")
    mr["extension"] = [{"url": codes.DEA_SCHEDULE_EXTENSION,
                        "valueCoding": {"system": codes.NCI_THESAURUS, "code": "C48677", "display": "Schedule IV"}}]
    body = parse_message(build(context(mr)))[2]
    assert one(body, "MedicationPrescribed/DrugCoded/DEASchedule/Code") == "C48677"
    assert one(body, "Prescriber/NonVeterinarian/Identification/DEANumber") == "BS1234563"


def test_explicitly_not_controlled_sends_the_unspecified_schedule():
    mr = medication_request("amlodipine-tablet")
    mr["extension"] = [{"url": codes.DEA_SCHEDULE_EXTENSION, "valueCode": "C38046"}]
    body = parse_message(build(context(mr)))[2]
    assert one(body, "MedicationPrescribed/DrugCoded/DEASchedule/Code") == "C38046"
    assert body.find("Prescriber/NonVeterinarian/Identification/DEANumber") is None


def test_stated_rxnorm_term_type_sets_the_qualifier():
    mr = medication_request("amlodipine-tablet")
    mr["medicationCodeableConcept"]["coding"][0] = {
        "system": codes.RXNORM, "code": "212549", "display": "Norvasc 5 MG Oral Tablet",
        "extension": [{"url": codes.RXNORM_TTY_EXTENSION, "valueCode": "SBD"}]}
    body = parse_message(build(context(mr)))[2]
    assert one(body, "MedicationPrescribed/DrugCoded/DrugDBCode/Qualifier") == "SBD"


def test_branded_name_is_read_as_sbd_without_a_table_entry():
    mr = medication_request("amlodipine-tablet")
    mr["medicationCodeableConcept"]["coding"][0] = {"system": codes.RXNORM, "code": "212549",
                                                    "display": "amlodipine 5 MG Oral Tablet [Norvasc]"}
    body = parse_message(build(context(mr)))[2]
    assert one(body, "MedicationPrescribed/DrugCoded/DrugDBCode/Qualifier") == "SBD"


@pytest.mark.parametrize("substitution, expected", [
    (None, "0"), ({"allowedBoolean": True}, "0"), ({"allowedBoolean": False}, "1"),
    ({"allowedCodeableConcept": {"coding": [{"system": codes.V3_SUBSTITUTION, "code": "N"}]}}, "1"),
    ({"allowedCodeableConcept": {"coding": [{"system": codes.V3_SUBSTITUTION, "code": "G"}]}}, "0"),
])
def test_substitutions(substitution, expected):
    mr = medication_request("amlodipine-tablet")
    mr.pop("substitution")
    if substitution is not None:
        mr["substitution"] = substitution
    assert one(parse_message(build(context(mr)))[2], "MedicationPrescribed/Substitutions") == expected


@pytest.mark.parametrize("quantity, expected_value, expected_unit", [
    ({"value": 30, "unit": "tablet", "system": codes.UCUM, "code": "{tbl}"}, "30", "C48542"),
    ({"value": 30.0, "unit": "Tablets"}, "30", "C48542"),
    ({"value": 60, "unit": "capsules", "system": codes.UCUM, "code": "{cap}"}, "60", "C48480"),
    ({"value": 8.5, "unit": "g", "system": codes.UCUM, "code": "g"}, "8.5", "C48155"),
    ({"value": 2.50, "unit": "mL", "system": codes.UCUM, "code": "mL"}, "2.5", "C28254"),
    ({"value": 4, "unit": "patch", "system": codes.UCUM, "code": "{patch}"}, "4", "C48524"),
    ({"value": 1, "unit": "Kit", "system": codes.NCI_THESAURUS, "code": "C48504"}, "1", "C48504"),
])
def test_quantity_value_and_unit_of_measure(quantity, expected_value, expected_unit):
    mr = medication_request("amlodipine-tablet")
    mr["dispenseRequest"]["quantity"] = quantity
    body = parse_message(build(context(mr)))[2]
    assert one(body, "MedicationPrescribed/Quantity/Value") == expected_value
    assert one(body, "MedicationPrescribed/Quantity/QuantityUnitOfMeasure/Code") == expected_unit


@pytest.mark.parametrize("duration, days", [
    ({"value": 30, "code": "d"}, "30"), ({"value": 2, "code": "wk"}, "14"), ({"value": 3, "code": "mo"}, "90"),
    ({"value": 7, "unit": "days"}, "7"), ({"value": 1.5, "code": "wk"}, None),
])
def test_days_supply_conversion(duration, days):
    mr = medication_request("amlodipine-tablet")
    mr["dispenseRequest"]["expectedSupplyDuration"] = duration
    if days is None:
        with pytest.raises(Exception) as refused:
            build(context(mr))
        assert refused.value.issues[0].expression == "MedicationRequest.dispenseRequest.expectedSupplyDuration"
    else:
        assert one(parse_message(build(context(mr)))[2], "MedicationPrescribed/DaysSupply") == days


def test_written_date_is_the_prescribers_local_date():
    mr = medication_request("amlodipine-tablet")
    mr["authoredOn"] = "2026-11-20T22:30:00-06:00"  # already 21 Nov in UTC
    assert one(parse_message(build(context(mr)))[2], "MedicationPrescribed/WrittenDate/Date") == "2026-11-20"


def test_order_number_prefers_the_official_identifier_then_the_id():
    mr = medication_request("amlodipine-tablet")
    mr["identifier"] = [{"system": "urn:x", "value": "secondary"}, {"use": "official", "system": "urn:y", "value": "RX-9"}]
    assert parse_message(build(context(mr)))[0].prescriber_order_number == "RX-9"
    mr["identifier"] = [{"system": "urn:x", "value": "x" * 36}]
    assert parse_message(build(context(mr)))[0].prescriber_order_number == "mr-amlodipine"


def test_patient_with_unmappable_optional_address_still_gets_a_newrx():
    """An optional element that cannot be sent cleanly is left out, never sent half-empty."""
    patient = resource("Patient/pat-maria")
    patient["address"][0]["state"] = "Illinois"
    body = parse_message(build(context("amlodipine-tablet", {"Patient/pat-maria": patient})))[2]
    assert body.find("Patient/HumanPatient/Address") is None


@pytest.mark.parametrize("hostile", [
    "O'Brien <b>&amp;</b>", "Smith]]><Injected/>", 'Ng "the" & <![CDATA[x]]>', "<?xml version='1.0'?>",
])
def test_markup_in_fhir_text_round_trips_as_text(hostile):
    patient = resource("Patient/pat-maria")
    patient["name"][0]["family"] = hostile
    mr = medication_request("amlodipine-tablet")
    mr["dosageInstruction"][0]["text"] = f"Take 1 tablet {hostile} daily"
    mr["note"] = [{"text": hostile}]
    xml = build(context(mr, {"Patient/pat-maria": patient}))
    root = etree.fromstring(xml)
    assert one(root, "//HumanPatient/Name/LastName") == hostile
    assert one(root, "//Sig/SigText") == f"Take 1 tablet {hostile} daily"
    assert one(root, "//MedicationPrescribed/Note") == hostile
    assert not root.xpath("//b | //Injected")  # no element was smuggled in
    assert len(list(root.iter())) == len(list(etree.fromstring(build(context("amlodipine-tablet"))).iter())) + 1  # + Note


def test_unicode_names_are_sent_as_utf8():
    patient = resource("Patient/pat-maria")
    patient["name"][0]["family"] = "Muñoz-Łukasiewicz"
    xml = build(context("amlodipine-tablet", {"Patient/pat-maria": patient}))
    assert xml.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert "Muñoz-Łukasiewicz".encode() in xml


def test_the_source_resources_are_not_modified():
    ctx = context("triamcinolone-cream")
    before = copy.deepcopy(ctx)
    build(ctx)
    assert ctx == before


def test_only_supported_versions_are_built():
    with pytest.raises(ValueError, match="2023011"):
        build(context("amlodipine-tablet"), version="2023011")


def test_a_sender_id_is_required():
    with pytest.raises(ValueError, match="sender_id"):
        build(context("amlodipine-tablet"), sender_id=" ")


def test_validity_period_gives_effective_and_expiration_dates():
    mr = medication_request("amlodipine-tablet")
    mr["dispenseRequest"]["validityPeriod"] = {"start": "2026-11-25", "end": "2027-11-20T00:00:00-06:00"}
    body = parse_message(build(context(mr)))[2]
    assert texts(body, "MedicationPrescribed/OtherMedicationDate/OtherMedicationDateQualifier") == [
        "EffectiveDate", "ExpirationDate"]
    assert texts(body, "MedicationPrescribed/OtherMedicationDate/OtherMedicationDate/Date") == ["2026-11-25", "2027-11-20"]
    assert body.find("MedicationPrescribed")[-1].tag == "OtherMedicationDate"  # after Sig, as in the samples


@pytest.mark.parametrize("field, value", [("sender_id", "TELE HEALTH"), ("sender_id", "x" * 36), ("message_id", "a b")])
def test_header_ids_must_fit_the_header(field, value):
    with pytest.raises(ValueError, match="without spaces"):
        build(context("amlodipine-tablet"), **{field: value})

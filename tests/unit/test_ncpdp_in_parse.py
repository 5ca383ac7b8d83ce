"""Inbound SCRIPT messages parsed into typed values (mappers/ncpdp/inbound.py), field by field, from
the synthetic samples in tests/fixtures/erx_inbound (structure as in research/ncpdp.md sections 2,
3, 5.4 and 7.5)."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from mappers.ncpdp.envelope import Header, MessageError, build_message, sub
from mappers.ncpdp.inbound import (
    CancelRxResponse,
    ErrorMessage,
    RxRenewalRequest,
    StatusMessage,
    UnsupportedMessageType,
    VerifyMessage,
    parse_inbound,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "erx_inbound"
NEWRX_ID = "8f14e45fceea167a5a36dedd4bea2543"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_status_000_is_the_network_holding_the_message():
    message = parse_inbound(fixture("status_000.xml"))
    assert isinstance(message, StatusMessage)
    assert (message.code, message.description_code) == ("000", None)
    assert message.description == "Transaction pending delivery to pharmacy"
    assert not message.delivered
    assert "pending" in message.meaning.lower()


def test_status_header_fields():
    header = parse_inbound(fixture("status_000.xml")).header
    assert header == Header(
        to="FHIRTH001", from_="SWITCH", message_id="0b9e3c2a6f6d4d0b9a1e5c7d2f3a4b5c",
        sent_time=datetime(2026, 11, 20, 17, 3, 13, 400000, tzinfo=timezone.utc), to_qualifier="D",
        from_qualifier="M", relates_to_message_id=NEWRX_ID)


def test_status_010_is_delivery_to_the_pharmacy():
    message = parse_inbound(fixture("status_010.xml"))
    assert isinstance(message, StatusMessage)
    assert (message.code, message.description_code, message.description) == ("010", "000", "Transaction accepted")
    assert message.delivered
    assert message.header.from_ == "0999017" and message.header.from_qualifier == "P"


def test_script_10_6_namespaced_status_parses_by_local_name():
    message = parse_inbound(fixture("status_010_script106.xml"))
    assert isinstance(message, StatusMessage)
    assert message.code == "010" and message.description is None
    assert message.header.relates_to_message_id == NEWRX_ID


def test_verify_010():
    message = parse_inbound(fixture("verify_010.xml"))
    assert isinstance(message, VerifyMessage)
    assert (message.code, message.description) == ("010", "Accepted By Pharmacy.")
    assert message.delivered and message.meaning == "Accepted by pharmacy"
    assert message.header.relates_to_message_id == NEWRX_ID


@pytest.mark.parametrize("name, code, description_code, description, retryable", [
    ("error_600.xml", "600", "008", "Request timed out waiting for the pharmacy system", True),
    ("error_601.xml", "601", "002", "Receiver ID not on file", False),
    ("error_602.xml", "602", "007", "Internal processing error at the receiving pharmacy", True),
    ("error_900.xml", "900", "4010", "Drug description does not match DrugDb code and qualifier", False),
])
def test_error_codes_and_whether_they_may_be_retried(name, code, description_code, description, retryable):
    message = parse_inbound(fixture(name))
    assert isinstance(message, ErrorMessage)
    assert (message.code, message.description_code, message.description) == (code, description_code, description)
    assert message.retryable is retryable
    assert message.summary == f"{code} {description_code} {description}"
    assert message.header.relates_to_message_id == NEWRX_ID


def test_error_meanings_come_from_the_code_tables():
    message = parse_inbound(fixture("error_601.xml"))
    assert message.meaning == "Receiver unable to process, do not retry"
    assert message.description_meaning == "Receiver ID not on file"


def test_an_unknown_error_code_is_never_retryable():
    message = dataclasses.replace(parse_inbound(fixture("error_900.xml")), code="777")
    assert not message.retryable and "unknown" in message.meaning


def test_cancel_rx_response_approved():
    message = parse_inbound(fixture("cancelrx_response_approved.xml"))
    assert isinstance(message, CancelRxResponse)
    assert message.approved is True
    assert message.note == "Prescription removed from the fill queue"
    assert (message.denial_reason_code, message.denial_reason) == (None, None)
    assert message.header.relates_to_message_id == "9a1158154dfa42caddbd0694a4e9bdc8"
    assert message.header.prescriber_order_number == "mr-4471"
    assert message.header.rx_reference_number == "RX7750213"


def test_cancel_rx_response_denied():
    message = parse_inbound(fixture("cancelrx_response_denied.xml"))
    assert isinstance(message, CancelRxResponse)
    assert message.approved is False
    assert message.denial_reason_code == "AA"
    assert message.denial_reason == "Prescription already dispensed to the patient"
    assert message.note is None


def test_rx_renewal_request_header_patient_pharmacy_prescriber():
    message = parse_inbound(fixture("rxrenewal_request.xml"))
    assert isinstance(message, RxRenewalRequest)
    header = message.header
    assert (header.to, header.to_qualifier, header.from_, header.from_qualifier) == ("FHIRTH001", "D", "0999017", "P")
    assert header.message_id == "5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
    assert header.rx_reference_number == "RX7750213"
    assert header.prescriber_order_number == "mr-4471"
    assert header.relates_to_message_id is None
    patient = message.patient
    assert (patient.last_name, patient.first_name, patient.middle_name) == ("Chalmers", "Peter", "James")
    assert (patient.gender, patient.birth_date) == ("M", date(1974, 12, 25))
    assert patient.medical_record_number == "MRN-20931"
    assert (patient.address_line1, patient.city, patient.state, patient.postal_code) == (
        "534 Erewhon St", "Pleasantville", "WI", "54999")
    pharmacy = message.pharmacy
    assert (pharmacy.ncpdp_id, pharmacy.npi, pharmacy.business_name, pharmacy.phone) == (
        "0999017", "1234567893", "Main Street Pharmacy", "6152205656")
    prescriber = message.prescriber
    assert (prescriber.npi, prescriber.dea_number, prescriber.last_name, prescriber.first_name) == (
        "1003000126", "BC1234563", "Carter", "Dana")


def test_rx_renewal_request_medication_dispensed():
    dispensed = parse_inbound(fixture("rxrenewal_request.xml")).dispensed
    assert dispensed.drug_description == "amlodipine 5 MG Oral Tablet"
    assert (dispensed.rxnorm, dispensed.rxnorm_qualifier, dispensed.ndc) == ("197361", "SCD", "00093717198")
    assert (dispensed.quantity, dispensed.quantity_unit) == (Decimal("30"), "C48542")
    assert dispensed.days_supply == 30
    assert dispensed.last_fill_date == date(2026, 11, 21)
    assert dispensed.substitutions == "0"
    assert dispensed.pharmacy_requested_refills == 3
    assert dispensed.sig == "Take one tablet by mouth once daily"


def test_rx_renewal_request_medication_prescribed():
    message = parse_inbound(fixture("rxrenewal_request.xml"))
    prescribed = message.prescribed
    assert prescribed is not None
    assert (prescribed.rxnorm, prescribed.ndc) == ("197361", None)
    assert prescribed.written_date == date(2026, 11, 20)
    assert prescribed.number_of_refills == 0
    assert prescribed.note == "Recheck blood pressure in 3 months"
    assert message.requested_refills == 3


def test_parsed_messages_are_frozen():
    message = parse_inbound(fixture("status_010.xml"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.code = "000"  # type: ignore[misc]


def _message(body_xml: bytes, **header) -> bytes:
    from lxml import etree

    defaults = dict(to="FHIRTH001", from_="0999017", message_id="abc123", to_qualifier="D", from_qualifier="P",
                    sent_time=datetime(2026, 11, 20, tzinfo=timezone.utc))
    return build_message(Header(**{**defaults, **header}), etree.fromstring(body_xml))


def test_unknown_message_types_are_refused_by_name():
    with pytest.raises(UnsupportedMessageType) as caught:
        parse_inbound(fixture("newrx_unsupported.xml"))
    assert caught.value.message_type == "NewRx"
    assert "NewRx" in str(caught.value) and "RxRenewalRequest" in str(caught.value)
    assert isinstance(caught.value, MessageError)


@pytest.mark.parametrize("body, expected", [
    (b"<Status><Description>no code</Description></Status>", "Status/Code is required"),
    (b"<Error><Code></Code></Error>", "Error/Code is required"),
    (b"<Verify><VerifyStatus/></Verify>", "Verify/VerifyStatus/Code is required"),
])
def test_an_answer_without_its_code_is_refused(body, expected):
    with pytest.raises(MessageError, match=expected):
        parse_inbound(_message(body, relates_to_message_id="n1"))


def test_a_cancel_response_must_be_approved_or_denied_not_both():
    body = b"<CancelRxResponse><Response><Approved/><Denied/></Response></CancelRxResponse>"
    with pytest.raises(MessageError, match="exactly one of Approved or Denied"):
        parse_inbound(_message(body, relates_to_message_id="n1"))


def test_a_cancel_response_must_say_which_cancel_it_answers():
    body = b"<CancelRxResponse><Response><Approved/></Response></CancelRxResponse>"
    with pytest.raises(MessageError, match="RelatesToMessageID"):
        parse_inbound(_message(body))


def test_a_renewal_request_with_a_bad_number_is_refused():
    xml = fixture("rxrenewal_request.xml").replace(b"<DaysSupply>30</DaysSupply>",
                                                   b"<DaysSupply>thirty</DaysSupply>", 1)
    with pytest.raises(MessageError, match="MedicationDispensed/DaysSupply must be a non-negative integer"):
        parse_inbound(xml)


def test_a_renewal_request_with_a_bad_date_is_refused():
    xml = fixture("rxrenewal_request.xml").replace(b"2026-11-21", b"21/11/2026")
    with pytest.raises(MessageError, match="LastFillDate is not a date"):
        parse_inbound(xml)


def test_a_renewal_request_without_a_pharmacy_ncpdpid_is_refused():
    xml = fixture("rxrenewal_request.xml").replace(b"<NCPDPID>0999017</NCPDPID>", b"")
    with pytest.raises(MessageError, match="Pharmacy/Identification/NCPDPID is required"):
        parse_inbound(xml)


def test_a_renewal_request_without_medication_dispensed_is_refused():
    from lxml import etree

    root = etree.fromstring(fixture("rxrenewal_request.xml"))
    dispensed = root.find("Body/RxRenewalRequest/MedicationDispensed")
    dispensed.getparent().remove(dispensed)
    with pytest.raises(MessageError, match="MedicationDispensed is required"):
        parse_inbound(etree.tostring(root))


def test_a_renewal_request_date_time_keeps_its_date():
    xml = fixture("rxrenewal_request.xml").replace(
        b"<Date>2026-11-21</Date>", b"<DateTime>2026-11-21T09:30:00Z</DateTime>")
    assert parse_inbound(xml).dispensed.last_fill_date == date(2026, 11, 21)


def test_the_sim_built_answers_round_trip():
    """Messages built with the envelope (as the gateway simulator builds them) parse back."""
    from lxml import etree

    status = etree.Element("Status")
    sub(status, "Code", "010")
    message = parse_inbound(_message(etree.tostring(status), relates_to_message_id="n1"))
    assert isinstance(message, StatusMessage) and message.header.relates_to_message_id == "n1"


def test_str_is_refused_bytes_are_required():
    with pytest.raises(TypeError):
        parse_inbound(fixture("status_010.xml").decode())  # type: ignore[arg-type]

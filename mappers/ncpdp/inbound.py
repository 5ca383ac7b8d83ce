"""Inbound SCRIPT messages (pharmacy or network -> prescriber) parsed into typed, frozen values.

`parse_inbound(xml)` handles the messages a prescriber system must understand without a person in
the loop (research/ncpdp.md sections 2, 6 and 7.5): the network's and the pharmacy's Status,
Error and Verify, the pharmacy's CancelRxResponse, and RxRenewalRequest (which a clinician
answers). Everything else is refused with `UnsupportedMessageType`, so a caller never silently
drops a message it does not understand.

Safety: the bytes go through `envelope.parse_message` (no DTD, no entities, no network, no huge
text nodes; any DOCTYPE refused) after a size check, so XXE, entity expansion and memory
exhaustion are refused before a tree exists. Elements are matched by local name, so 10.6's
namespaced messages parse the same as 2017071's un-namespaced ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Union

from lxml import etree

from .envelope import Header, MessageError, parse_message

# Real SCRIPT messages are a few kilobytes; RxHistoryResponse (not handled here) is the big one.
MAX_INBOUND_BYTES = 1024 * 1024

# research/ncpdp.md section 7.5. Codes not listed here still parse; `meaning` then says "unknown".
STATUS_CODES = {
    "000": "Transaction pending: accepted by the intermediary, not yet by the pharmacy",
    "001": "Accepted by the network (not yet delivered to the pharmacy)",
    "002": "Mailbox status (meaning not confirmed)",
    "003": "Mailbox status (meaning not confirmed)",
    "005": "Mailbox status (meaning not confirmed)",
    "010": "Transaction accepted by the ultimate receiver",
}
ERROR_CODES = {
    "600": "Communication problem, try again later",
    "601": "Receiver unable to process, do not retry",
    "602": "Receiver system error, try again later",
    "900": "Transaction rejected, do not retry",
}
RETRYABLE_ERROR_CODES = frozenset({"600", "602"})
ERROR_DESCRIPTION_CODES = {
    "001": "Sender ID not on file",
    "002": "Receiver ID not on file",
    "003": "Invalid password",
    "004": "Invalid password",
    "007": "Internal processing error",
    "008": "Request timed out",
    "009": "Segment or element error",
    "010": "Segment or element error",
    "011": "Segment or element error",
    "012": "Segment or element error",
    "013": "Segment or element error",
    "4010": "Drug code, DEA schedule or quantity unit does not match the drug database",
}
VERIFY_CODES = {"010": "Accepted by pharmacy"}


class UnsupportedMessageType(MessageError):
    """A well-formed SCRIPT Message whose type this module does not handle (NewRx, RxFill ...)."""

    def __init__(self, message_type: str):
        super().__init__(
            f"SCRIPT message type {message_type!r} is not handled here "
            f"(handled: {', '.join(sorted(_PARSERS))})")
        self.message_type = message_type


# ---- the messages -------------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusMessage:
    header: Header
    code: str
    description_code: str | None = None
    description: str | None = None
    message_type = "Status"

    @property
    def meaning(self) -> str:
        return STATUS_CODES.get(self.code, f"unknown Status code {self.code}")

    @property
    def delivered(self) -> bool:
        """010: the pharmacy (ultimate receiver) has it; anything else is the network's acceptance."""
        return self.code == "010"


@dataclass(frozen=True)
class ErrorMessage:
    header: Header
    code: str
    description_code: str | None = None
    description: str | None = None
    message_type = "Error"

    @property
    def meaning(self) -> str:
        return ERROR_CODES.get(self.code, f"unknown Error code {self.code}")

    @property
    def description_meaning(self) -> str | None:
        return ERROR_DESCRIPTION_CODES.get(self.description_code or "")

    @property
    def retryable(self) -> bool:
        """600/602 may be retried (same bytes, same MessageID); 601/900 and unknown codes never."""
        return self.code in RETRYABLE_ERROR_CODES

    @property
    def summary(self) -> str:
        """`"{Code} {DescriptionCode} {Description}"`, as research/ncpdp.md section 6 shows it."""
        detail = self.description or self.description_meaning or self.meaning
        return " ".join(part for part in (self.code, self.description_code, detail) if part)


@dataclass(frozen=True)
class VerifyMessage:
    header: Header
    code: str
    description: str | None = None
    message_type = "Verify"

    @property
    def meaning(self) -> str:
        return VERIFY_CODES.get(self.code, f"unknown VerifyStatus code {self.code}")

    @property
    def delivered(self) -> bool:
        return self.code == "010"


@dataclass(frozen=True)
class CancelRxResponse:
    header: Header
    approved: bool
    note: str | None = None
    denial_reason_code: str | None = None
    denial_reason: str | None = None
    message_type = "CancelRxResponse"


@dataclass(frozen=True)
class Patient:
    last_name: str
    first_name: str | None = None
    middle_name: str | None = None
    gender: str | None = None  # M, F, U
    birth_date: date | None = None
    medical_record_number: str | None = None
    address_line1: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None


@dataclass(frozen=True)
class Pharmacy:
    ncpdp_id: str
    npi: str | None = None
    business_name: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class Prescriber:
    npi: str | None = None
    dea_number: str | None = None
    state_license_number: str | None = None
    last_name: str | None = None
    first_name: str | None = None


@dataclass(frozen=True)
class Medication:
    """MedicationDispensed or MedicationPrescribed (the elements a renewal decision needs)."""

    drug_description: str
    rxnorm: str | None = None  # DrugDBCode/Code
    rxnorm_qualifier: str | None = None  # SCD, SBD, GPK, BPK
    ndc: str | None = None  # ProductCode/Code with Qualifier ND
    quantity: Decimal | None = None
    quantity_unit: str | None = None  # NCI QuantityUnitOfMeasure C-code
    days_supply: int | None = None
    written_date: date | None = None
    last_fill_date: date | None = None
    substitutions: str | None = None  # 0 substitution allowed, 1 dispense as written
    number_of_refills: int | None = None
    pharmacy_requested_refills: int | None = None
    sig: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class RxRenewalRequest:
    header: Header  # RxReferenceNumber and (when the pharmacy knows it) PrescriberOrderNumber
    patient: Patient
    pharmacy: Pharmacy
    prescriber: Prescriber
    dispensed: Medication
    prescribed: Medication | None = None
    message_type = "RxRenewalRequest"

    @property
    def requested_refills(self) -> int | None:
        return self.dispensed.pharmacy_requested_refills


InboundMessage = Union[StatusMessage, ErrorMessage, VerifyMessage, CancelRxResponse, RxRenewalRequest]


# ---- parsing --------------------------------------------------------------------------------------

def parse_inbound(xml: bytes) -> InboundMessage:
    """The typed message; MessageError (or its UnsupportedMessageType) for anything else."""
    if not isinstance(xml, (bytes, bytearray, memoryview)):
        raise TypeError("parse_inbound takes the message's bytes as received")
    if len(xml) > MAX_INBOUND_BYTES:
        raise MessageError(f"a SCRIPT message over {MAX_INBOUND_BYTES} bytes is refused")
    header, message_type, element = parse_message(bytes(xml))
    parser = _PARSERS.get(message_type)
    if parser is None:
        raise UnsupportedMessageType(message_type)
    return parser(header, element)


def _local(tag: object) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _child(parent: etree._Element | None, path: str) -> etree._Element | None:
    """The first element along a `/`-separated path of local names."""
    node = parent
    for name in path.split("/"):
        if node is None:
            return None
        node = next((c for c in node if _local(c.tag) == name), None)
    return node


def _text(parent: etree._Element | None, path: str) -> str | None:
    node = _child(parent, path)
    if node is None:
        return None
    return (node.text or "").strip() or None


def _required(parent: etree._Element, path: str, where: str) -> str:
    value = _text(parent, path)
    if value is None:
        raise MessageError(f"{where}/{path} is required")
    return value


def _integer(parent: etree._Element | None, path: str, where: str) -> int | None:
    value = _text(parent, path)
    if value is None:
        return None
    if not value.isdigit():
        raise MessageError(f"{where}/{path} must be a non-negative integer, not {value!r}")
    return int(value)


def _decimal(parent: etree._Element | None, path: str, where: str) -> Decimal | None:
    value = _text(parent, path)
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or number < 0:
        raise MessageError(f"{where}/{path} must be a non-negative decimal, not {value!r}")
    return number


def _date(parent: etree._Element | None, path: str, where: str) -> date | None:
    """A SCRIPT date element (its `Date` or `DateTime` child); the date part of a DateTime."""
    node = _child(parent, path)
    if node is None:
        return None
    day, moment = _text(node, "Date"), _text(node, "DateTime")
    try:
        if day:
            return date.fromisoformat(day)
        if moment:
            return datetime.fromisoformat(moment.replace("Z", "+00:00")).date()
    except ValueError:
        raise MessageError(f"{where}/{path} is not a date: {day or moment!r}") from None
    return None


def _status(header: Header, element: etree._Element) -> StatusMessage:
    return StatusMessage(header, _required(element, "Code", "Status"), _text(element, "DescriptionCode"),
                         _text(element, "Description"))


def _error(header: Header, element: etree._Element) -> ErrorMessage:
    return ErrorMessage(header, _required(element, "Code", "Error"), _text(element, "DescriptionCode"),
                        _text(element, "Description"))


def _verify(header: Header, element: etree._Element) -> VerifyMessage:
    return VerifyMessage(header, _required(element, "VerifyStatus/Code", "Verify"),
                         _text(element, "VerifyStatus/Description"))


def _cancel_response(header: Header, element: etree._Element) -> CancelRxResponse:
    if not header.relates_to_message_id:
        raise MessageError("a CancelRxResponse needs Header/RelatesToMessageID (the CancelRx it answers)")
    response = _child(element, "Response")
    answers = [c for c in response if isinstance(c.tag, str)] if response is not None else []
    if len(answers) != 1 or _local(answers[0].tag) not in ("Approved", "Denied"):
        raise MessageError("CancelRxResponse/Response must hold exactly one of Approved or Denied")
    answer = answers[0]
    if _local(answer.tag) == "Approved":
        return CancelRxResponse(header, True, note=_text(answer, "Note"))
    return CancelRxResponse(header, False, note=_text(answer, "Note"),
                            denial_reason_code=_text(answer, "DenialReasonCode") or _text(answer, "ReasonCode"),
                            denial_reason=_text(answer, "DenialReason"))


def _patient(element: etree._Element) -> Patient:
    human = _child(element, "Patient/HumanPatient")
    if human is None:
        raise MessageError("RxRenewalRequest/Patient/HumanPatient is required")
    where = "Patient/HumanPatient"
    return Patient(
        last_name=_required(human, "Name/LastName", where), first_name=_text(human, "Name/FirstName"),
        middle_name=_text(human, "Name/MiddleName"), gender=_text(human, "Gender"),
        birth_date=_date(human, "DateOfBirth", where),
        medical_record_number=_text(human, "Identification/MedicalRecordIdentificationNumberEHR"),
        address_line1=_text(human, "Address/AddressLine1"), city=_text(human, "Address/City"),
        state=_text(human, "Address/StateProvince"), postal_code=_text(human, "Address/PostalCode"),
    )


def _pharmacy(element: etree._Element) -> Pharmacy:
    pharmacy = _child(element, "Pharmacy")
    if pharmacy is None:
        raise MessageError("RxRenewalRequest/Pharmacy is required")
    return Pharmacy(
        ncpdp_id=_required(pharmacy, "Identification/NCPDPID", "Pharmacy"),
        npi=_text(pharmacy, "Identification/NPI"),
        business_name=_text(pharmacy, "BusinessName") or _text(pharmacy, "StoreName"),
        phone=_text(pharmacy, "CommunicationNumbers/PrimaryTelephone/Number"),
    )


def _prescriber(element: etree._Element) -> Prescriber:
    person = _child(element, "Prescriber/NonVeterinarian")
    if person is None:
        raise MessageError("RxRenewalRequest/Prescriber/NonVeterinarian is required")
    prescriber = Prescriber(
        npi=_text(person, "Identification/NPI"), dea_number=_text(person, "Identification/DEANumber"),
        state_license_number=_text(person, "Identification/StateLicenseNumber"),
        last_name=_text(person, "Name/LastName"), first_name=_text(person, "Name/FirstName"),
    )
    if not (prescriber.npi or prescriber.dea_number or prescriber.state_license_number):
        raise MessageError("RxRenewalRequest/Prescriber needs an NPI, DEANumber or StateLicenseNumber")
    return prescriber


def _medication(element: etree._Element, name: str) -> Medication | None:
    med = _child(element, name)
    if med is None:
        return None
    product_qualifier = _text(med, "DrugCoded/ProductCode/Qualifier") or _text(med, "DrugCoded/ProductCodeQualifier")
    product_code = _text(med, "DrugCoded/ProductCode/Code")
    if product_code is None and _child(med, "DrugCoded/ProductCode/Code") is None:
        product_code = _text(med, "DrugCoded/ProductCode")  # 10.6: ProductCode holds the code itself
    return Medication(
        drug_description=_required(med, "DrugDescription", name),
        rxnorm=_text(med, "DrugCoded/DrugDBCode/Code"),
        rxnorm_qualifier=_text(med, "DrugCoded/DrugDBCode/Qualifier"),
        ndc=product_code if product_qualifier == "ND" else None,
        quantity=_decimal(med, "Quantity/Value", name),
        quantity_unit=_text(med, "Quantity/QuantityUnitOfMeasure/Code"),
        days_supply=_integer(med, "DaysSupply", name),
        written_date=_date(med, "WrittenDate", name),
        last_fill_date=_date(med, "LastFillDate", name),
        substitutions=_text(med, "Substitutions"),
        number_of_refills=_integer(med, "NumberOfRefills", name),
        pharmacy_requested_refills=_integer(med, "PharmacyRequestedRefills", name),
        sig=_text(med, "Sig/SigText"),
        note=_text(med, "Note"),
    )


def _renewal_request(header: Header, element: etree._Element) -> RxRenewalRequest:
    dispensed = _medication(element, "MedicationDispensed")
    if dispensed is None:
        raise MessageError("RxRenewalRequest/MedicationDispensed is required")
    return RxRenewalRequest(header, _patient(element), _pharmacy(element), _prescriber(element), dispensed,
                            _medication(element, "MedicationPrescribed"))


_PARSERS = {
    "Status": _status,
    "Error": _error,
    "Verify": _verify,
    "CancelRxResponse": _cancel_response,
    "RxRenewalRequest": _renewal_request,
}

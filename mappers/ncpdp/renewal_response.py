"""FHIR -> NCPDP SCRIPT RxRenewalResponse (2017071): the prescriber's answer to a pharmacy's
RxRenewalRequest, research/ncpdp.md sections 2 and 6.

The Header goes back to the pharmacy that asked (To = the request's From), relates to the request
(RelatesToMessageID = its MessageID) and echoes its RxReferenceNumber (the pharmacy's Rx number).
The body is Response plus the Patient, Pharmacy, Prescriber and MedicationPrescribed of `ctx`:

- Approved / ApprovedWithChanges: `ctx` is the renewed MedicationRequest (intent order,
  priorPrescription = the original); NumberOfRefills = the refills granted (`refills`, default its
  numberOfRepeatsAllowed). Approved grants what the pharmacy asked for; granting a different number
  is ApprovedWithChanges. When `pharmacy_requested_refills` is given, that is checked.
- Replace: `ctx` is the replacement prescription (changes beyond the refill count).
- Denied: `ctx` is the original MedicationRequest, echoed as the pharmacy sent it; a ReasonCode
  (codes.RENEWAL_DENIAL_REASONS) and/or a free-text DenialReason say why.

Element names inside Response follow ncpdp.md section 2 (COSY, VAXSD); the Denied children
(ReasonCode, DenialReason) are [K] and to be checked against the licensed 2017071 XSD.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from lxml import etree

from . import codes
from .envelope import DEFAULT_VERSION, Header, build_message, new_message_id, sub
from .newrx import check_message_id, check_sender, check_version, map_prescription, write_prescription
from .refusals import Refusals
from .resources import PrescriptionContext
from .validate import validate_message

DECISIONS = ("Approved", "ApprovedWithChanges", "Denied", "Replace")


def build_renewal_response(request_header: Header, decision: str, ctx: PrescriptionContext, *,
                           refills: int | None = None, denial_reason: str | None = None,
                           denial_code: str | None = None, note: str | None = None,
                           pharmacy_requested_refills: int | None = None, sender_id: str | None = None,
                           message_id: str | None = None, sent_time: datetime | None = None,
                           version: str = DEFAULT_VERSION, validate: bool = True) -> bytes:
    """The RxRenewalResponse to the request whose Header is `request_header`, or
    UnprocessableEntity (422) listing every reason it cannot be sent.

    `sender_id` defaults to the id the pharmacy addressed (the request's To)."""
    check_version(version)
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
    if decision == "Denied":
        if refills is not None:
            raise ValueError("a denial grants no refills")
        if not (denial_reason or denial_code):
            raise ValueError("a denial needs a denial_code or a denial_reason")
        if denial_code is not None and not re.fullmatch(r"[A-Z]{2}", denial_code):
            raise ValueError("denial_code is a two-letter SCRIPT reason code (see codes.RENEWAL_DENIAL_REASONS)")
        if note is not None:
            raise ValueError("a denial carries its text in denial_reason, not note")
    elif denial_reason or denial_code:
        raise ValueError("denial_reason and denial_code go only with Denied")
    sender = sender_id if sender_id is not None else request_header.to
    check_sender(sender)
    # What the pharmacy sent is echoed as is, so it must fit the Header elements it goes back in.
    check_message_id(request_header.message_id, "the request's MessageID")
    check_message_id(request_header.from_, "the request's From")
    if request_header.rx_reference_number is not None:
        check_message_id(request_header.rx_reference_number, "the request's RxReferenceNumber")
    message_id = message_id or new_message_id()
    check_message_id(message_id, "message_id")
    if message_id == request_header.message_id:
        raise ValueError("the response needs its own MessageID, not the request's")

    refusals = Refusals("RxRenewalResponse")
    # The text a clinician types for the pharmacy is the renewal Task's statusReason or note (ncpdp.md 6).
    reason_text = refusals.text(denial_reason, "Task.statusReason", "the denial reason",
                                max_length=codes.MAX_DENIAL_REASON)
    note_text = refusals.text(note, "Task.note", "the note to the pharmacy", max_length=codes.MAX_NOTE)
    approving = decision != "Denied"
    prescription = map_prescription(ctx, refusals, prescribing_rules=approving, refills=refills)
    if prescription is not None and prescription.pharmacy.ncpdpid != request_header.from_:
        refusals.add("MedicationRequest.dispenseRequest.performer", "the response must go to the pharmacy that sent the "
                     "renewal request (its NCPDP Provider ID differs); send a Denied there and a NewRx to the new one")
    if prescription is not None and pharmacy_requested_refills is not None and decision in ("Approved", "ApprovedWithChanges"):
        granted = prescription.medication.refills
        if decision == "Approved" and granted != pharmacy_requested_refills:
            refusals.add("MedicationRequest.dispenseRequest.numberOfRepeatsAllowed", "Approved grants exactly the refills "
                         "the pharmacy asked for; a different number is ApprovedWithChanges")
        if decision == "ApprovedWithChanges" and granted == pharmacy_requested_refills:
            refusals.add("MedicationRequest.dispenseRequest.numberOfRepeatsAllowed", "ApprovedWithChanges changes the "
                         "number of refills the pharmacy asked for; granting that number is Approved")
    refusals.raise_if_any()
    assert prescription is not None

    header = Header(to=request_header.from_, from_=sender.strip(), message_id=message_id,
                    sent_time=sent_time or datetime.now(timezone.utc),
                    relates_to_message_id=request_header.message_id,
                    rx_reference_number=request_header.rx_reference_number,
                    prescriber_order_number=prescription.order_number)
    body = etree.Element("RxRenewalResponse")
    answer = sub(sub(body, "Response"), decision)
    if decision == "Denied":
        if denial_code:
            sub(answer, "ReasonCode", denial_code)
        if reason_text:
            sub(answer, "DenialReason", reason_text)
    elif note_text:
        sub(answer, "Note", note_text)
    write_prescription(body, prescription)
    xml = build_message(header, body, version=version)
    if validate:
        validate_message(xml, version=version)
    return xml

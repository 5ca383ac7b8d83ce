"""FHIR -> NCPDP SCRIPT CancelRx (2017071), research/ncpdp.md sections 2 and 6.

Sent when a MedicationRequest that already went out as a NewRx is cancelled or stopped (or
entered in error). The Header names the NewRx it cancels (RelatesToMessageID = the NewRx's
MessageID) and keeps its PrescriberOrderNumber; the message itself gets a new MessageID. The body
repeats the NewRx's Patient, Pharmacy, Prescriber and MedicationPrescribed (VELA, ODOS), so the
pharmacy can match it to the prescription it holds.

The prescribing rules (DEA number, refill limits) are not applied: a cancel fills nothing, and a
cancel that cannot be sent leaves a live prescription at the pharmacy. Everything a CancelRx
itself needs is still refused when missing.
"""

from __future__ import annotations

from datetime import datetime, timezone

from lxml import etree

from .envelope import DEFAULT_VERSION, Header, build_message, new_message_id
from .newrx import check_message_id, check_sender, check_version, map_prescription, write_prescription
from .refusals import Refusals
from .resources import PrescriptionContext
from .validate import validate_message

CANCELLABLE_STATUSES = frozenset({"cancelled", "stopped", "entered-in-error"})


def build_cancelrx(ctx: PrescriptionContext, *, original_message_id: str, sender_id: str,
                   message_id: str | None = None, sent_time: datetime | None = None,
                   version: str = DEFAULT_VERSION, validate: bool = True) -> bytes:
    """The CancelRx for the NewRx `original_message_id` sent for `ctx.medication_request`, or
    UnprocessableEntity (422) listing every reason it cannot be sent."""
    check_version(version)
    check_sender(sender_id)
    check_message_id(original_message_id, "original_message_id (the NewRx's MessageID)")
    message_id = message_id or new_message_id()
    check_message_id(message_id, "message_id")
    if message_id == original_message_id:
        raise ValueError("a CancelRx needs its own MessageID, not the NewRx's")
    refusals = Refusals("CancelRx")
    if ctx.medication_request.get("status") not in CANCELLABLE_STATUSES:
        refusals.add("MedicationRequest.status", "a CancelRx is sent only for a MedicationRequest that is cancelled, "
                     "stopped or entered-in-error")
    prescription = map_prescription(ctx, refusals, prescribing_rules=False)
    refusals.raise_if_any()
    assert prescription is not None
    header = Header(to=prescription.pharmacy.ncpdpid, from_=sender_id.strip(), message_id=message_id,
                    sent_time=sent_time or datetime.now(timezone.utc),
                    relates_to_message_id=original_message_id.strip(),
                    prescriber_order_number=prescription.order_number)
    body = etree.Element("CancelRx")
    write_prescription(body, prescription)
    xml = build_message(header, body, version=version)
    if validate:
        validate_message(xml, version=version)
    return xml

"""The SCRIPT answers the simulated network sends: Status, Error, Verify and CancelRxResponse, each
addressed back to the sender of the message it answers (To/From swapped, RelatesToMessageID set,
RxReferenceNumber and PrescriberOrderNumber echoed). Built with the project's envelope."""

from __future__ import annotations

from datetime import datetime, timezone

from lxml import etree

from mappers.ncpdp.envelope import Header, build_message, new_message_id, sub

NETWORK_ID = "SIMSWITCH"  # who answers when the received message could not even be read


def answer_header(received: Header | None) -> Header:
    now = datetime.now(timezone.utc)
    if received is None:
        return Header(to="UNKNOWN", from_=NETWORK_ID, message_id=new_message_id(), sent_time=now,
                      to_qualifier="D", from_qualifier="M")
    return Header(
        to=received.from_ or "UNKNOWN", from_=received.to or NETWORK_ID, message_id=new_message_id(),
        sent_time=now, to_qualifier=received.from_qualifier or "D", from_qualifier=received.to_qualifier or "M",
        relates_to_message_id=received.message_id, rx_reference_number=received.rx_reference_number,
        prescriber_order_number=received.prescriber_order_number,
    )


def _coded(tag: str, code: str, description_code: str | None, description: str | None) -> etree._Element:
    element = etree.Element(tag)
    sub(element, "Code", code)
    if description_code:
        sub(element, "DescriptionCode", description_code)
    if description:
        sub(element, "Description", description)
    return element


def status(received: Header, code: str = "010", description: str | None = None,
           description_code: str | None = None) -> bytes:
    return build_message(answer_header(received), _coded("Status", code, description_code, description))


def error(received: Header | None, code: str = "900", description_code: str | None = None,
          description: str | None = None) -> bytes:
    return build_message(answer_header(received), _coded("Error", code, description_code, description))


def verify(received: Header, code: str = "010", description: str = "Accepted By Pharmacy.") -> bytes:
    body = etree.Element("Verify")
    verify_status = sub(body, "VerifyStatus")
    sub(verify_status, "Code", code)
    sub(verify_status, "Description", description)
    return build_message(answer_header(received), body)


def cancel_rx_response(received: Header, approved: bool, *, note: str | None = None,
                       denial_reason_code: str | None = None, denial_reason: str | None = None) -> bytes:
    body = etree.Element("CancelRxResponse")
    answer = sub(sub(body, "Response"), "Approved" if approved else "Denied")
    if not approved:
        if denial_reason_code:
            sub(answer, "DenialReasonCode", denial_reason_code)
        if denial_reason:
            sub(answer, "DenialReason", denial_reason)
    if note:
        sub(answer, "Note", note)
    return build_message(answer_header(received), body)

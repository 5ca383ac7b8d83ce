"""The SCRIPT Message envelope and Header (research/ncpdp.md section 3), built and parsed with lxml.

Every message is `<Message ...version attributes...><Header>...</Header><Body><Type>...</Type></Body>
</Message>`; 2017071 has no default namespace. Inbound XML is parsed with a parser that refuses
DTDs and entities and never touches the network (XXE, billion laughs).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from lxml import etree

DEFAULT_VERSION = "2017071"
# The Message root's version attributes per SCRIPT version (the datatypes/transport dates).
VERSIONS: dict[str, dict[str, str]] = {
    "2017071": {"DatatypesVersion": "20170715", "TransportVersion": "20170715", "TransactionDomain": "SCRIPT",
                "TransactionVersion": "20170715", "StructuresVersion": "20170715", "ECLVersion": "20170715"},
}
MESSAGE_ID_MAX = 35  # an..35: a hyphenated UUID (36) does not fit, its hex form (32) does
MAX_MESSAGE_BYTES = 1024 * 1024  # a SCRIPT message is kilobytes; anything this big is refused unparsed
SENDER_SOFTWARE = ("fhir-async-telehealth", "fhir-async-telehealth e-Rx", "0.1")


class MessageError(ValueError):
    """An inbound document that is not a well-formed, safe SCRIPT Message."""


@dataclass(frozen=True)
class Header:
    to: str  # receiver id (a pharmacy's NCPDPID for prescriber -> pharmacy messages)
    from_: str  # sender id (this system's account at the gateway)
    message_id: str
    sent_time: datetime
    to_qualifier: str = "P"  # P pharmacy, D prescriber, M mailbox/switch, ZZZ mutually defined
    from_qualifier: str = "D"
    relates_to_message_id: str | None = None
    rx_reference_number: str | None = None  # the pharmacy's Rx number, echoed in answers to it
    prescriber_order_number: str | None = None  # MedicationRequest.identifier: stable across messages


def new_message_id() -> str:
    return uuid.uuid4().hex


def format_sent_time(moment: datetime) -> str:
    """UTC with tenths of a second and Z, as the published samples write SentTime."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 100000}Z"


def sub(parent: etree._Element, tag: str, text: str | None = None, **attributes: str) -> etree._Element:
    """A child element (text set through lxml, never by string concatenation)."""
    child = etree.SubElement(parent, tag, {k: v for k, v in attributes.items()})
    if text is not None:
        child.text = text
    return child


def build_message(header: Header, body: etree._Element, *, version: str = DEFAULT_VERSION,
                  sender_software: tuple[str, str, str] = SENDER_SOFTWARE) -> bytes:
    """The whole message as UTF-8 bytes; `body` is the message-type element (NewRx, CancelRx, ...);
    `sender_software` = (developer, product, version) for the Header's SenderSoftware."""
    if version not in VERSIONS:
        raise ValueError(f"SCRIPT version {version} is not supported (supported: {', '.join(VERSIONS)})")
    if not header.message_id or len(header.message_id) > MESSAGE_ID_MAX:
        raise ValueError(f"MessageID must be 1-{MESSAGE_ID_MAX} characters")
    root = etree.Element("Message", VERSIONS[version])
    head = sub(root, "Header")
    sub(head, "To", header.to, Qualifier=header.to_qualifier)
    sub(head, "From", header.from_, Qualifier=header.from_qualifier)
    sub(head, "MessageID", header.message_id)
    if header.relates_to_message_id:
        sub(head, "RelatesToMessageID", header.relates_to_message_id)
    sub(head, "SentTime", format_sent_time(header.sent_time))
    software = sub(head, "SenderSoftware")
    for tag, value in zip(("SenderSoftwareDeveloper", "SenderSoftwareProduct", "SenderSoftwareVersionRelease"),
                          sender_software):
        sub(software, tag, value)
    if header.rx_reference_number:
        sub(head, "RxReferenceNumber", header.rx_reference_number)
    if header.prescriber_order_number:
        sub(head, "PrescriberOrderNumber", header.prescriber_order_number)
    sub(root, "Body").append(body)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def safe_parser() -> etree.XMLParser:
    """No DTD loading, no entity resolution, no network, no huge trees."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


def parse_document(xml: bytes) -> etree._Element:
    """The root element of an untrusted document, refusing any DOCTYPE outright (and anything over
    MAX_MESSAGE_BYTES before parsing it)."""
    if len(xml) > MAX_MESSAGE_BYTES:
        raise MessageError(f"a SCRIPT message over {MAX_MESSAGE_BYTES} bytes is refused")
    try:
        tree = etree.fromstring(xml, safe_parser()).getroottree()
    except etree.XMLSyntaxError as err:
        raise MessageError(f"not well-formed XML (line {err.lineno})") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise MessageError("a DOCTYPE is not allowed in a SCRIPT message")
    return tree.getroot()


def _local(tag: object) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _text(parent: etree._Element, name: str) -> str | None:
    for child in parent:
        if _local(child.tag) == name:
            return (child.text or "").strip() or None
    return None


def parse_message(xml: bytes) -> tuple[Header, str, etree._Element]:
    """(header, message type, the message-type element) of an inbound message; 10.6's namespace is
    tolerated (local names are compared), anything else not a Message is refused."""
    root = parse_document(xml)
    if _local(root.tag) != "Message":
        raise MessageError("the root element is not Message")
    head = next((c for c in root if _local(c.tag) == "Header"), None)
    body = next((c for c in root if _local(c.tag) == "Body"), None)
    if head is None or body is None:
        raise MessageError("a Message needs a Header and a Body")
    payload = [c for c in body if isinstance(c.tag, str)]
    if len(payload) != 1:
        raise MessageError("the Body must hold exactly one message")
    to_el = next((c for c in head if _local(c.tag) == "To"), None)
    from_el = next((c for c in head if _local(c.tag) == "From"), None)
    message_id = _text(head, "MessageID")
    if to_el is None or from_el is None or not message_id:
        raise MessageError("the Header needs To, From and MessageID")
    sent = _text(head, "SentTime")
    try:
        sent_time = datetime.fromisoformat(sent.replace("Z", "+00:00")) if sent else datetime.now(timezone.utc)
    except ValueError:
        raise MessageError("SentTime is not a timestamp") from None
    if sent_time.tzinfo is None:  # SCRIPT's SentTime is UTC; some senders leave the zone out
        sent_time = sent_time.replace(tzinfo=timezone.utc)
    header = Header(
        to=(to_el.text or "").strip(), from_=(from_el.text or "").strip(), message_id=message_id,
        sent_time=sent_time, to_qualifier=to_el.get("Qualifier", ""), from_qualifier=from_el.get("Qualifier", ""),
        relates_to_message_id=_text(head, "RelatesToMessageID"),
        rx_reference_number=_text(head, "RxReferenceNumber"),
        prescriber_order_number=_text(head, "PrescriberOrderNumber"),
    )
    return header, _local(payload[0].tag), payload[0]

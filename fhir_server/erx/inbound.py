"""`POST /erx/inbound`: the gateway's asynchronous SCRIPT messages (Status, Error, Verify,
CancelRxResponse, RxRenewalRequest), reflected in FHIR.

- Authentication: `Authorization: Bearer <ErxSettings.inbound_token>`, compared in constant time;
  without it (or a wrong one) 401. When e-prescribing or its inbound token is not configured the
  route answers 404, as if it did not exist.
- The body: `application/xml` (or `text/xml`), at most MAX_INBOUND_BYTES (413), parsed by
  mappers.ncpdp.inbound.parse_inbound (no DTDs, entities or network); anything it refuses: 400.
- Status, Error, Verify, CancelRxResponse: the transmission Task is found by
  `Task?identifier=<ncpdp-message-id system>|<RelatesToMessageID>` (404 when there is none) and the
  message reflected (reflect_delivery) into it, its MedicationRequest and a Communication, in one
  unit of work (delivery.apply_to_transmission). The same message twice writes nothing the second time.
- RxRenewalRequest: a renewal Task (reflect.renewal_task) for the MedicationRequest whose
  identifier is the PrescriberOrderNumber (its subject and requester), or, when none matches, for the
  prescriber found by NPI and the patient as the message names them (display only, for a person to
  match). Its id is derived from the sender and MessageID, so a repeated delivery creates nothing.
- The answer: HTTP 200 with a SCRIPT Status 010 addressed back to the sender (RelatesToMessageID =
  the received MessageID), so the gateway knows the message was received.

Errors are OperationOutcomes whose text never quotes the message (values of a refused element
are cut off); logs name the message type, MessageIDs and Task ids only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from datetime import datetime, timezone

import orjson
from lxml import etree
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mappers.ncpdp.envelope import Header, MessageError, build_message, new_message_id, sub
from mappers.ncpdp.inbound import (
    MAX_INBOUND_BYTES, InboundMessage, RxRenewalRequest, UnsupportedMessageType, parse_inbound,
)
from mappers.ncpdp.reflect import (
    MESSAGE_ID_SYSTEM,
    NPI_SYSTEM,
    TASK_CODE_SYSTEM,
    business_status,
    reflect_delivery,
    renewal_task,
)

from ..errors import (FhirError, InvalidRequest, NotFound, PayloadTooLarge, Unauthorized,
                      UnsupportedMediaType)
from ..interactions.search import build_query
from ..storage.errors import ResourceExists
from .delivery import TransmissionError, apply_to_transmission, consequences, mark_state

log = logging.getLogger("fhir_server.erx")

PATH = "/erx/inbound"
XML_TYPES = ("application/xml", "text/xml")
_SEARCH_SPECIAL = re.compile(r"[|,$\\]")  # a value with these would need search escaping: never matched
_QUOTED = re.compile(r"""[:,]?\s*(not\s*)?['"].*$""", re.S)


def _id(value: str | None) -> str:
    """An id from the message, made safe for a log line."""
    return re.sub(r"[^A-Za-z0-9._:-]", "?", value or "-")[:64]


def _outcome(error: FhirError) -> Response:
    headers = getattr(error, "headers", None)
    return Response(orjson.dumps(error.outcome()), status_code=error.status, headers=headers,
                    media_type="application/fhir+json; charset=utf-8")


def _authorized(request: Request, token: str) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8"), token.encode("utf-8"))


async def _body(request: Request) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_INBOUND_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _reason(err: MessageError) -> str:
    """A parser's refusal without the values it may quote (a date of birth, a quantity ...)."""
    if isinstance(err, UnsupportedMessageType):
        return "a SCRIPT message of a type this server does not take (Status, Error, Verify, " \
               "CancelRxResponse, RxRenewalRequest)"
    return _QUOTED.sub("", str(err)).strip() or "not a SCRIPT message"


def receipt(message: InboundMessage, sender_id: str) -> bytes:
    """SCRIPT Status 010 to the message's sender: received."""
    received = message.header
    header = Header(to=received.from_ or "UNKNOWN", from_=received.to or sender_id, message_id=new_message_id(),
                    sent_time=datetime.now(timezone.utc), to_qualifier=received.from_qualifier or "M",
                    from_qualifier=received.to_qualifier or "D", relates_to_message_id=received.message_id,
                    rx_reference_number=received.rx_reference_number,
                    prescriber_order_number=received.prescriber_order_number)
    status = etree.Element("Status")
    sub(status, "Code", "010")
    sub(status, "Description", "Received")
    return build_message(header, status)


async def _search(store, resource_type: str, params: list[tuple[str, str]]) -> list[dict]:
    page = await store.search(build_query([resource_type], [*params, ("_count", "50")]))
    return [orjson.loads(v.body) for v in page.matches if v.body]


async def transmission_task_id(store, relates_to: str) -> str | None:
    """The id of the transmission Task of the message `relates_to` names, or None."""
    if _SEARCH_SPECIAL.search(relates_to):
        return None
    for task in await _search(store, "Task", [("identifier", f"{MESSAGE_ID_SYSTEM}|{relates_to}")]):
        codings = (task.get("code") or {}).get("coding", [])
        if any(c.get("system") == TASK_CODE_SYSTEM and c.get("code") == "transmission" for c in codings):
            return task["id"]
    return None


def _order_number(medication_request: dict) -> str | None:
    """The PrescriberOrderNumber the NewRx carried (as newrx.py and reflect.py choose it)."""
    identifiers = [i for i in medication_request.get("identifier") or [] if str(i.get("value") or "").strip()]
    identifiers.sort(key=lambda i: i.get("use") != "official")
    return identifiers[0]["value"].strip() if identifiers else medication_request.get("id")


async def _prescribed(store, order_number: str | None) -> dict | None:
    """The one MedicationRequest whose PrescriberOrderNumber this is, or None."""
    if not order_number or _SEARCH_SPECIAL.search(order_number):
        return None
    found = [mr for mr in await _search(store, "MedicationRequest", [("identifier", order_number)])
             if _order_number(mr) == order_number and mr.get("status") != "entered-in-error"]
    if not found and re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", order_number):
        stored = await store.read("MedicationRequest", order_number)  # no identifier: its id was sent
        if stored is not None and stored.body is not None:
            mr = orjson.loads(stored.body)
            if _order_number(mr) == order_number and mr.get("status") != "entered-in-error":
                found = [mr]
    return found[0] if len(found) == 1 else None


async def _prescriber(store, request: RxRenewalRequest) -> dict:
    npi = request.prescriber.npi
    if npi and not _SEARCH_SPECIAL.search(npi):
        found = await _search(store, "Practitioner", [("identifier", f"{NPI_SYSTEM}|{npi}")])
        if len(found) == 1:
            return {"reference": f"Practitioner/{found[0]['id']}"}
    name = ", ".join(p for p in (request.prescriber.last_name, request.prescriber.first_name) if p)
    reference: dict = {"display": f"Prescriber not matched: {name or 'no name given'}"}
    if npi:
        reference["identifier"] = {"system": NPI_SYSTEM, "value": npi}
    return reference


def _unmatched_patient(request: RxRenewalRequest) -> dict:
    patient = request.patient
    name = ", ".join(p for p in (patient.last_name, patient.first_name) if p)
    born = f", born {patient.birth_date.isoformat()}" if patient.birth_date else ""
    return {"display": f"Patient not matched: {name}{born}"}


def renewal_task_id(request: RxRenewalRequest) -> str:
    digest = hashlib.sha256(f"{request.header.from_}|{request.header.message_id}".encode()).hexdigest()
    return f"erx-renewal-{digest[:40]}"


async def record_renewal_request(store, request: RxRenewalRequest) -> tuple[str, bool]:
    """(the renewal Task's id, whether it was created now)."""
    task_id = renewal_task_id(request)
    existing = await store.read("Task", task_id)
    if existing is not None:
        return task_id, False
    mr = await _prescribed(store, request.header.prescriber_order_number)
    patient_ref = (mr or {}).get("subject") or _unmatched_patient(request)
    requester_ref = (mr or {}).get("requester") or await _prescriber(store, request)
    mr_ref = f"MedicationRequest/{mr['id']}" if mr else None
    task = renewal_task(request, patient_ref, requester_ref, mr_ref)
    try:
        async with store.unit_of_work() as uow:
            await uow.write("Task", task_id, task, method="PUT", must_not_exist=True)
    except ResourceExists:
        return task_id, False
    return task_id, True


async def receive(request: Request) -> Response:
    settings = getattr(request.app.state, "erx_settings", None)
    store = getattr(request.app.state, "store", None)
    if settings is None or not getattr(settings, "inbound_token", None) or store is None:
        return _outcome(NotFound("e-prescribing is not configured on this server"))
    if not _authorized(request, settings.inbound_token):
        log.warning("erx inbound: refused a request without the gateway's token")
        return _outcome(Unauthorized("the gateway's bearer token is missing or wrong"))
    if request.headers.get("content-type", "").split(";")[0].strip().lower() not in XML_TYPES:
        return _outcome(UnsupportedMediaType("send a SCRIPT message as application/xml"))
    raw = await _body(request)
    if raw is None:
        return _outcome(PayloadTooLarge(f"a SCRIPT message over {MAX_INBOUND_BYTES} bytes is refused"))
    try:
        message = parse_inbound(raw)
    except MessageError as err:
        log.warning("erx inbound: refused a message that does not parse (%s)", type(err).__name__)
        return _outcome(InvalidRequest(_reason(err)))

    if isinstance(message, RxRenewalRequest):
        task_id, created = await record_renewal_request(store, message)
        log.info("erx inbound: RxRenewalRequest %s -> Task/%s%s", _id(message.header.message_id), task_id,
                 "" if created else " (already received)")
    else:
        relates_to = message.header.relates_to_message_id
        if not relates_to:
            return _outcome(InvalidRequest(f"a {message.message_type} needs Header/RelatesToMessageID"))
        task_id = await transmission_task_id(store, relates_to)
        if task_id is None:
            log.warning("erx inbound: %s %s relates to no transmission", message.message_type,
                        _id(message.header.message_id))
            return _outcome(NotFound("no transmission has the MessageID this message relates to"))
        try:
            recorded = await apply_to_transmission(store, task_id, late_answer(message))
        except ValueError:  # e.g. a CancelRxResponse to a NewRx
            return _outcome(InvalidRequest(f"a {message.message_type} does not answer the message it relates to"))
        except TransmissionError:
            log.error("erx inbound: could not record %s %s on Task/%s", message.message_type,
                      _id(message.header.message_id), task_id)
            return _outcome(_Busy("the delivery could not be recorded now; send it again later"))
        log.info("erx inbound: %s %s -> Task/%s %s -> %s%s", message.message_type, _id(message.header.message_id),
                 task_id, recorded.before or "-", recorded.after, "" if recorded.written else " (no change)")
    return Response(receipt(message, settings.sender_id), media_type="application/xml")


def late_answer(message):
    """The change an asynchronous answer makes. A retryable Error (600/602) that arrives this way
    comes after the delivery job finished, so nothing would send the message again: it is recorded
    as undelivered (error: the prescription goes on-hold and the prescriber is told), and updating
    the prescription sends a new NewRx. Never a Task left 'retrying' forever."""

    def change(task: dict, medication_request: dict):
        changes = reflect_delivery(medication_request, message, task)
        if business_status(changes.task) == "retrying":
            undelivered = mark_state(changes.task, "error", "the network reported a temporary failure after the "
                                     "message was handed over; it is not resent automatically")
            return consequences(medication_request, undelivered)
        return changes

    return change


class _Busy(FhirError):
    status = 503
    issue_code = "transient"


ROUTES: list[Route] = [Route(PATH, receive, methods=["POST"], name="erx-inbound")]

__all__ = ["PATH", "ROUTES", "receipt", "receive", "record_renewal_request", "transmission_task_id"]

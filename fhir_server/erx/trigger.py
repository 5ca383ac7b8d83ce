"""When a MedicationRequest write means a message to the pharmacy (a write hook, so the message,
its transmission Task and its outbox job commit with the write, or not at all).

- NewRx: the MedicationRequest is `active`, an order (intent order/original-order/instance-order),
  names its pharmacy (`dispenseRequest.performer`), and has no NewRx on its way or delivered (a
  NewRx that failed for good may be followed by a new one once the request is fixed).
- CancelRx: the MedicationRequest became cancelled, stopped or entered-in-error while a NewRx of it
  was on its way or delivered, and no CancelRx was sent for it yet (the pharmacy's approval of a
  cancel also makes the request `cancelled`: that must not send another).

FHIR-native pharmacies (fhir_pharmacy.py): when the pharmacy Organization names an active
hl7-fhir-rest Endpoint, the order goes as a FHIR transaction (job "erx.fhir") instead of a NewRx,
under the same rules (one order on its way or delivered; one cancel after it). A cancel goes the way
its order went (a CancelRx after a NewRx; the transaction with the new status, to the same address,
after a FHIR order), whatever the pharmacy's Endpoint says by then.

The message is built and validated here, in the write: a prescription that cannot be sent safely
is refused with the mapper's 422 (every missing element named) and nothing is stored. The exact
bytes go into the job's payload, so every retry resends the same message with the same MessageID.
"""

from __future__ import annotations

import uuid

import orjson

from mappers.ncpdp.cancelrx import build_cancelrx
from mappers.ncpdp.codes import DEA_SCHEDULE_UNSPECIFIED
from mappers.ncpdp.envelope import new_message_id, parse_document
from mappers.ncpdp.newrx import build_newrx
from mappers.ncpdp.reflect import business_status, transmission_task, transmitted_message_id, transmitted_message_type
from mappers.ncpdp.resources import PrescriptionContext, resolve_context

from ..errors import UnprocessableEntity
from ..interactions.search import build_query
from ..storage import StoredVersion, UnitOfWork
from .config import ErxSettings
from .fhir_pharmacy import CANCEL, ORDER, delivery_endpoint, delivery_purpose, pharmacy_endpoint, queue_delivery

JOB_KIND = "erx.send"
ORDER_INTENTS = {"order", "original-order", "instance-order"}
CANCELLED = {"cancelled", "stopped", "entered-in-error"}
FAILED_FOR_GOOD = {"error", "dead-letter"}


def refuse_controlled_substances(newrx: bytes) -> None:
    """EPCS: a controlled substance's NewRx must be digitally signed by the prescriber (DEA, 21 CFR
    1311), which this server does not do yet; such prescriptions are refused rather than sent unsigned
    (a network would reject them anyway). DEA's telemedicine rules for async visits are the visit
    issue's; this is the transport's own limit."""
    schedule = parse_document(newrx).find(".//MedicationPrescribed/DrugCoded/DEASchedule/Code")
    if schedule is not None and (schedule.text or "").strip() not in ("", DEA_SCHEDULE_UNSPECIFIED):
        raise UnprocessableEntity(
            "Controlled substances need an EPCS-signed NewRx, which this server cannot send yet: "
            "prescribe it outside this system", expression="MedicationRequest.medication")


def is_order(task: dict) -> bool:
    """A transmission that delivers the prescription: a NewRx or a FHIR order."""
    return transmitted_message_type(task) == "NewRx" or delivery_purpose(task) == ORDER


def is_cancel(task: dict) -> bool:
    return transmitted_message_type(task) == "CancelRx" or delivery_purpose(task) == CANCEL


def sendable(medication_request: dict) -> bool:
    return (medication_request.get("status") == "active"
            and medication_request.get("intent") in ORDER_INTENTS
            and bool((medication_request.get("dispenseRequest") or {}).get("performer")))


async def transmissions(uow: UnitOfWork, medication_request_id: str) -> list[dict]:
    """The transmission Tasks of a MedicationRequest, oldest first."""
    query = build_query(["Task"], [("focus", f"MedicationRequest/{medication_request_id}"), ("_count", "1000")])
    page = await uow.search(query)
    tasks = [orjson.loads(v.body) for v in page.matches if v.body]
    tasks = [t for t in tasks if transmitted_message_type(t)]
    return sorted(tasks, key=lambda t: t.get("authoredOn", ""))


def store_reader(uow: UnitOfWork):
    """resolve_context's `read`: a (relative, absolute or versioned) reference -> the resource."""

    async def read(reference: str) -> dict | None:
        parts = reference.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) < 2:
            return None
        version = await uow.read(parts[-2], parts[-1])
        return orjson.loads(version.body) if version is not None and version.body else None

    return read


class ErxTrigger:
    def __init__(self, settings: ErxSettings):
        self.settings = settings

    async def __call__(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        if stored.body is None:
            return  # a deletion sends nothing (cancel a prescription by its status, not by deleting it)
        mr = orjson.loads(stored.body)
        wants_newrx, wants_cancel = sendable(mr), mr.get("status") in CANCELLED
        if not (wants_newrx or wants_cancel):
            return
        sent = await transmissions(uow, stored.id)
        live_orders = [t for t in sent if is_order(t) and business_status(t) not in FAILED_FOR_GOOD]
        if wants_newrx and not live_orders:
            ctx = await resolve_context(mr, store_reader(uow))
            endpoint = await pharmacy_endpoint(ctx, store_reader(uow))
            if endpoint is not None:
                await queue_delivery(uow, mr, ctx, endpoint.get("address"), ORDER)
            else:
                await self._queue(uow, mr, "NewRx", ctx=ctx)
        elif wants_cancel and live_orders and not any(is_cancel(t) for t in sent):
            order = live_orders[-1]
            if delivery_purpose(order) == ORDER:
                ctx = await resolve_context(mr, store_reader(uow))
                await queue_delivery(uow, mr, ctx, delivery_endpoint(order), CANCEL, order_task_id=order["id"])
            else:
                original = transmitted_message_id(order)
                await self._queue(uow, mr, "CancelRx", original_message_id=original)

    async def _queue(self, uow: UnitOfWork, mr: dict, message_type: str, *, original_message_id: str | None = None,
                     ctx: PrescriptionContext | None = None) -> None:
        ctx = ctx or await resolve_context(mr, store_reader(uow))
        message_id = new_message_id()
        if message_type == "NewRx":
            xml = build_newrx(ctx, sender_id=self.settings.sender_id, message_id=message_id)
            refuse_controlled_substances(xml)
        else:
            xml = build_cancelrx(ctx, original_message_id=original_message_id, sender_id=self.settings.sender_id,
                                 message_id=message_id)
        task = transmission_task(mr, message_type, message_id)
        task_id = str(uuid.uuid4())
        await uow.write("Task", task_id, task, method="POST", must_not_exist=True)
        await uow.enqueue(JOB_KIND, message_id, {
            "message_type": message_type, "message_id": message_id, "xml": xml.decode("utf-8"),
            "medication_request": f"MedicationRequest/{mr['id']}", "task": f"Task/{task_id}",
        })

"""Inbound SCRIPT messages reflected in FHIR R4: pure functions from a parsed message (inbound.py)
and the FHIR resources it concerns (dicts) to the resources to write. No storage, no HTTP.

research/ncpdp.md section 6 is the design; R4 has no standard for it.

Delivery state: one Task per transmission
-----------------------------------------
Every outbound SCRIPT message (NewRx, CancelRx, RxRenewalResponse) gets one Task, created when
the message is queued (`transmission_task`) and updated by each answer (`delivery_update`) or
transport failure (`transport_failure`):

- `Task.identifier` = the outbound MessageID (system `MESSAGE_ID_SYSTEM`), so an answer's
  RelatesToMessageID finds its Task with `Task?identifier=<system>|<id>`;
- `Task.focus` = the MedicationRequest, `Task.for` = its subject, `Task.requester` = its
  requester, `Task.owner` = its pharmacy (`dispenseRequest.performer`) when set;
- `Task.code` = `TASK_CODE_SYSTEM#transmission`; `Task.input` = message-type (valueCode NewRx ...),
  message-id and prescriber-order-number (input and output types are codes of
  `TASK_PARAMETER_SYSTEM`);
- `Task.businessStatus` = a code of `DELIVERY_STATUS_SYSTEM` (table `DELIVERY_STATES`), with the
  `Task.status` it implies:

  | businessStatus  | set by                                 | Task.status                       |
  |-----------------|----------------------------------------|-----------------------------------|
  | queued          | transmission_task                      | requested                         |
  | sent            | Status 000/001 (network has it)        | in-progress                       |
  | retrying        | Error 600/602, transport failure       | in-progress                       |
  | accepted        | Status 010 (pharmacy has it)           | completed (CancelRx: in-progress) |
  | verified        | Verify 010                             | completed (CancelRx: in-progress) |
  | error           | Error 601/900/unknown (never retried)  | failed                            |
  | dead-letter     | transport_failure(..., dead_letter)    | failed                            |
  | cancel-approved | CancelRxResponse Approved              | completed                         |
  | cancel-denied   | CancelRxResponse Denied                | rejected                          |

  A CancelRx Task stays in-progress after delivery because its outcome is the pharmacy's
  CancelRxResponse. States never go backwards: a late Status 000 after a Verify, or a retryable
  Error after an acceptance, changes nothing (the Task comes back equal, so the caller can skip
  the write). Error and dead-letter are final for Status/Verify; cancel-approved/denied are final.
- `Task.output` = the latest answer (response-type, response-message-id, response-sent-time,
  gateway-code (a Coding), gateway-description-code, gateway-description, retryable, note,
  denial-reason-code, denial-reason), or after a transport failure attempts and transport-error.
  Earlier answers stay in the Task's history (one version per update).
- Errors: `Task.statusReason` = the NCPDP code (`NCPDP_ERROR_SYSTEM`) with text
  `"{Code} {DescriptionCode} {Description}"`, plus a contained OperationOutcome (output
  `error-detail`, valueReference `#error`).

The MedicationRequest follows its transmission Task (`medication_request_update`): an undelivered
NewRx or RxRenewalResponse (error, dead-letter) puts it `on-hold` with the Task's statusReason;
an approved cancel makes it `cancelled`. Everything else leaves it alone. `error_communication`
tells the prescriber (Communication, recipient = requester) about error, dead-letter and
cancel-denied.

Renewal requests
----------------
`renewal_task` makes the Task a clinician answers (status requested, intent order, code
`renewal-request`, for = patient, owner = prescriber, focus = the original MedicationRequest when
known); its inputs keep what the answer (RxRenewalResponse) must echo: the request's MessageID,
SentTime and To/From (with qualifiers), the pharmacy's RxReferenceNumber, the PrescriberOrderNumber
and the pharmacy's NCPDPID, plus the requested refills and the dispensed medication.
`renewal_request_header(task)` gives the request's Header back from them, which is what
`renewal_response.build_renewal_response` takes. `renewal_proposal` is the optional draft
MedicationRequest (intent proposal, priorPrescription = the original) the clinician can approve.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from profiles.canonical import CANONICAL_BASE

from .envelope import Header
from .inbound import (
    ERROR_CODES,
    CancelRxResponse,
    ErrorMessage,
    InboundMessage,
    Medication,
    RxRenewalRequest,
    StatusMessage,
    VerifyMessage,
)

BASE = CANONICAL_BASE
DELIVERY_STATUS_SYSTEM = f"{BASE}/CodeSystem/erx-delivery-status"
TASK_CODE_SYSTEM = f"{BASE}/CodeSystem/erx-task"
TASK_PARAMETER_SYSTEM = f"{BASE}/CodeSystem/erx-task-parameter"
NCPDP_STATUS_SYSTEM = f"{BASE}/CodeSystem/ncpdp-status-code"
NCPDP_ERROR_SYSTEM = f"{BASE}/CodeSystem/ncpdp-error-code"
NCPDP_VERIFY_SYSTEM = f"{BASE}/CodeSystem/ncpdp-verify-code"
NCPDP_DENIAL_SYSTEM = f"{BASE}/CodeSystem/ncpdp-cancel-denial-reason"
MESSAGE_ID_SYSTEM = f"{BASE}/NamingSystem/ncpdp-message-id"
RX_REFERENCE_SYSTEM = f"{BASE}/NamingSystem/ncpdp-rx-reference-number"
PRESCRIBER_ORDER_SYSTEM = f"{BASE}/NamingSystem/prescriber-order-number"
# SCRIPT party ids, by Header qualifier (P pharmacy NCPDPID, D prescriber/system, M mailbox ...)
_QUALIFIED = f"{BASE}/NamingSystem/ncpdp-party-"
NCPDP_ID_SYSTEM = "http://terminology.hl7.org/NamingSystem/NCPDPProviderIdentificationNumber"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC_SYSTEM = "http://hl7.org/fhir/sid/ndc"
NCI_SYSTEM = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"

OUTBOUND_TYPES = ("NewRx", "CancelRx", "RxRenewalResponse")
# businessStatus code -> (display, Task.status)
DELIVERY_STATES: dict[str, tuple[str, str]] = {
    "queued": ("Queued for sending", "requested"),
    "sent": ("Accepted by the network, not yet by the pharmacy", "in-progress"),
    "retrying": ("Temporary failure; the same message will be sent again", "in-progress"),
    "accepted": ("Accepted by the pharmacy", "completed"),
    "verified": ("Receipt confirmed by the pharmacy", "completed"),
    "error": ("Rejected; will not be retried", "failed"),
    "dead-letter": ("Not delivered; sending was given up", "failed"),
    "cancel-approved": ("Cancellation approved by the pharmacy", "completed"),
    "cancel-denied": ("Cancellation denied by the pharmacy", "rejected"),
}
_RANK = {"queued": 0, "sent": 1, "retrying": 1, "accepted": 2, "verified": 3}
_FINAL_FOR_ACKS = {"error", "dead-letter", "cancel-approved", "cancel-denied"}
_FINAL = {"cancel-approved", "cancel-denied"}
_UNDELIVERED = {"error", "dead-letter"}
_CLOSED_REQUEST_STATUSES = {"cancelled", "stopped", "completed", "entered-in-error"}


# ---- small helpers ---------------------------------------------------------------------------------

def _now(now: datetime | None) -> str:
    moment = now or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.isoformat(timespec="milliseconds")


def _timestamp(moment: datetime) -> str:
    """A SCRIPT SentTime as a FHIR dateTime: SentTime is UTC, so a zone-less one is read as UTC
    (FHIR requires a zone on any dateTime with a time)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


def _ref(value: str | dict) -> dict:
    return copy.deepcopy(value) if isinstance(value, dict) else {"reference": value}


def _reference_of(resource: dict) -> dict:
    if not resource.get("id"):
        raise ValueError(f"the {resource.get('resourceType', 'resource')} needs an id to be referenced")
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def _param(code: str) -> dict:
    return {"coding": [{"system": TASK_PARAMETER_SYSTEM, "code": code}], "text": code}


def task_parameter(code: str, kind: str, value: Any) -> dict:
    """A Task.input / Task.output entry typed by a code of TASK_PARAMETER_SYSTEM."""
    return {"type": _param(code), f"value{kind}": value}


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def task_parameters(task: dict, element: str) -> dict[str, Any]:
    """{parameter code: value} of Task.input or Task.output."""
    found: dict[str, Any] = {}
    for entry in task.get(element) or []:
        codes = [c.get("code") for c in (entry.get("type") or {}).get("coding") or []
                 if c.get("system") == TASK_PARAMETER_SYSTEM]
        value = next((v for k, v in entry.items() if k.startswith("value")), None)
        for code in codes:
            found[code] = value
    return found


def business_status(task: dict) -> str | None:
    """The Task's delivery state (a DELIVERY_STATES code), None for a Task that is not ours."""
    for coding in task.get("businessStatus", {}).get("coding", []):
        if coding.get("system") == DELIVERY_STATUS_SYSTEM:
            return coding.get("code")
    return None


def transmitted_message_id(task: dict) -> str | None:
    return next((i["value"] for i in task.get("identifier", []) if i.get("system") == MESSAGE_ID_SYSTEM), None)


def transmitted_message_type(task: dict) -> str | None:
    return task_parameters(task, "input").get("message-type")


def set_state(task: dict, state: str, now: str) -> None:
    """Put the Task (in place) in delivery state `state` at `now`: businessStatus, the status it
    implies, lastModified, and the executionPeriod's end when the state is final."""
    display, status = DELIVERY_STATES[state]
    if state in ("accepted", "verified") and transmitted_message_type(task) == "CancelRx":
        status = "in-progress"  # the outcome of a CancelRx is the pharmacy's CancelRxResponse
    task["businessStatus"] = {"coding": [{"system": DELIVERY_STATUS_SYSTEM, "code": state, "display": display}],
                              "text": display}
    task["status"] = status
    task["lastModified"] = now
    period = task.setdefault("executionPeriod", {"start": now})
    if status in ("completed", "failed", "rejected"):
        period["end"] = now
    else:
        period.pop("end", None)


def _prescriber_order_number(medication_request: dict) -> str | None:
    """As newrx.py chooses it: the official identifier, then the first, then the resource id."""
    identifiers = [i for i in medication_request.get("identifier") or [] if str(i.get("value") or "").strip()]
    identifiers.sort(key=lambda i: i.get("use") != "official")
    return identifiers[0]["value"].strip() if identifiers else medication_request.get("id")


# ---- transmissions -------------------------------------------------------------------------------

def transmission_task(medication_request: dict, message_type: str, message_id: str, *,
                      prescriber_order_number: str | None = None, now: datetime | None = None) -> dict:
    """The Task recording one outbound message, in state `queued` (write it with the outbox job).
    `prescriber_order_number` is the one the message carries (default: chosen as newrx.py does)."""
    if message_type not in OUTBOUND_TYPES:
        raise ValueError(f"{message_type!r} is not an outbound SCRIPT message ({', '.join(OUTBOUND_TYPES)})")
    stamp = _now(now)
    focus = _reference_of(medication_request)
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": MESSAGE_ID_SYSTEM, "value": message_id}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "transmission",
                             "display": "Deliver an e-prescribing message"}]},
        "description": f"{message_type} for {focus['reference']}",
        "focus": focus,
        "authoredOn": stamp,
        "lastModified": stamp,
    }
    if medication_request.get("subject"):
        task["for"] = copy.deepcopy(medication_request["subject"])
    if medication_request.get("requester"):
        task["requester"] = copy.deepcopy(medication_request["requester"])
    pharmacy = medication_request.get("dispenseRequest", {}).get("performer")
    if pharmacy:
        task["owner"] = copy.deepcopy(pharmacy)
    task["input"] = [task_parameter("message-type", "Code", message_type), task_parameter("message-id", "String", message_id)]
    order_number = prescriber_order_number or _prescriber_order_number(medication_request)
    if order_number:
        task["input"].append(task_parameter("prescriber-order-number", "String", order_number))
    set_state(task, "queued", stamp)
    task.pop("executionPeriod")
    return task


def _state_for(message: InboundMessage, current: str | None, message_type: str | None) -> str:
    """The delivery state after `message`, never going backwards (see the module docstring)."""
    if isinstance(message, CancelRxResponse):
        if message_type not in (None, "CancelRx"):
            raise ValueError(f"a CancelRxResponse does not answer a {message_type}")
        return "cancel-approved" if message.approved else "cancel-denied"
    if current in _FINAL:
        return current
    if isinstance(message, ErrorMessage):
        if message.retryable:
            return "retrying" if _RANK.get(current or "queued", 99) <= 1 else current
        return "error"
    if isinstance(message, StatusMessage):
        proposed = "accepted" if message.delivered else "sent"
    elif isinstance(message, VerifyMessage):
        proposed = "verified" if message.delivered else "sent"
    else:
        raise TypeError(f"{type(message).__name__} is not an answer to a transmission")
    if current in _FINAL_FOR_ACKS:
        return current
    return proposed if _RANK[proposed] >= _RANK.get(current or "queued", 0) else current


def _answer_outputs(message: InboundMessage) -> list[dict]:
    out = [task_parameter("response-type", "Code", message.message_type),
           task_parameter("response-message-id", "String", message.header.message_id),
           task_parameter("response-sent-time", "DateTime", _timestamp(message.header.sent_time))]
    if isinstance(message, (StatusMessage, ErrorMessage, VerifyMessage)):
        system = {"Error": NCPDP_ERROR_SYSTEM, "Verify": NCPDP_VERIFY_SYSTEM}.get(message.message_type,
                                                                                NCPDP_STATUS_SYSTEM)
        out.append(task_parameter("gateway-code", "Coding", {"system": system, "code": message.code,
                                                          "display": message.meaning}))
        if getattr(message, "description_code", None):
            out.append(task_parameter("gateway-description-code", "Code", message.description_code))
        description = message.description or getattr(message, "description_meaning", None) or message.meaning
        out.append(task_parameter("gateway-description", "String", description))
    if isinstance(message, ErrorMessage):
        out.append(task_parameter("retryable", "Boolean", message.retryable))
    if isinstance(message, CancelRxResponse):
        if message.note:
            out.append(task_parameter("note", "String", message.note))
        if message.denial_reason_code:
            out.append(task_parameter("denial-reason-code", "Code", message.denial_reason_code))
        if message.denial_reason:
            out.append(task_parameter("denial-reason", "String", message.denial_reason))
    return out


def error_outcome(message: ErrorMessage) -> dict:
    """The SCRIPT Error as an OperationOutcome (also contained in the failed Task)."""
    details: dict[str, Any] = {"coding": [{"system": NCPDP_ERROR_SYSTEM, "code": message.code,
                                           "display": ERROR_CODES.get(message.code, "Unknown error code")}],
                               "text": message.summary}
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error",
        "code": "transient" if message.retryable else "processing",
        "details": details,
        "diagnostics": f"SCRIPT Error {message.summary} (MessageID {message.header.message_id})",
    }]}


def delivery_update(medication_request: dict, message: InboundMessage, task: dict | None = None, *,
                    now: datetime | None = None) -> dict:
    """The transmission Task after `message` (Status, Error, Verify or CancelRxResponse).

    `task` is the Task from `transmission_task` (found by the answer's RelatesToMessageID); without
    it a new one is made for a NewRx (or a CancelRx for a CancelRxResponse) whose MessageID is the
    answer's RelatesToMessageID. Returns a new dict; `task` is not modified."""
    relates_to = message.header.relates_to_message_id
    if task is None:
        if not relates_to:
            raise ValueError(f"the {message.message_type} names no RelatesToMessageID to attach it to")
        message_type = "CancelRx" if isinstance(message, CancelRxResponse) else "NewRx"
        task = transmission_task(medication_request, message_type, relates_to, now=now)
    else:
        task = copy.deepcopy(task)
        sent_id = transmitted_message_id(task)
        if relates_to and sent_id and relates_to != sent_id:
            raise ValueError(f"the {message.message_type} answers message {relates_to}, not {sent_id}")
    current = business_status(task)
    state = _state_for(message, current, transmitted_message_type(task))
    if state == current:
        return task  # stale or repeated answer: nothing changes
    stamp = _now(now)
    set_state(task, state, stamp)
    task["output"] = _answer_outputs(message)
    task.pop("statusReason", None)
    task.pop("contained", None)
    if isinstance(message, ErrorMessage):
        task["statusReason"] = copy.deepcopy(error_outcome(message)["issue"][0]["details"])
        task["contained"] = [{**error_outcome(message), "id": "error"}]
        task["output"].append(task_parameter("error-detail", "Reference", {"reference": "#error"}))
    elif isinstance(message, CancelRxResponse) and not message.approved:
        reason: dict[str, Any] = {"text": message.denial_reason or message.note or "Cancellation denied"}
        if message.denial_reason_code:
            reason["coding"] = [{"system": NCPDP_DENIAL_SYSTEM, "code": message.denial_reason_code}]
        task["statusReason"] = reason
    return task


def transport_failure(task: dict, reason: str, *, attempts: int, dead_letter: bool,
                      now: datetime | None = None) -> dict:
    """The Task after a send that got no SCRIPT answer (connection refused, timeout, HTTP 5xx):
    `retrying` while the outbox will try again, `dead-letter` when it gave up."""
    task = copy.deepcopy(task)
    current = business_status(task)
    if current in _FINAL_FOR_ACKS or _RANK.get(current or "queued", 0) >= _RANK["accepted"]:
        return task  # an answer already arrived; a late failure of a resend changes nothing
    set_state(task, "dead-letter" if dead_letter else "retrying", _now(now))
    task["statusReason"] = {"text": reason}
    task.pop("contained", None)
    task["output"] = [task_parameter("attempts", "UnsignedInt", attempts), task_parameter("transport-error", "String", reason)]
    return task


def medication_request_update(medication_request: dict, task: dict) -> dict | None:
    """The MedicationRequest after its transmission reached `task`'s state; None when unchanged."""
    state, sent = business_status(task), transmitted_message_type(task)
    status = medication_request.get("status")
    updated = copy.deepcopy(medication_request)
    if state in _UNDELIVERED and sent in ("NewRx", "RxRenewalResponse") and status == "active":
        updated["status"] = "on-hold"
        updated["statusReason"] = copy.deepcopy(task.get("statusReason") or {"text": "Not delivered to the pharmacy"})
        return updated
    if state == "cancel-approved" and status not in _CLOSED_REQUEST_STATUSES:
        updated["status"] = "cancelled"
        updated.pop("statusReason", None)
        return updated
    return None


def error_communication(medication_request: dict, task: dict, *, task_ref: str | dict | None = None,
                        now: datetime | None = None) -> dict | None:
    """A Communication telling the prescriber that a transmission failed or a cancel was denied;
    None for any other state. `task_ref` (the stored Task's reference) is added to `about`."""
    state = business_status(task)
    if state not in ("error", "dead-letter", "cancel-denied"):
        return None
    sent = transmitted_message_type(task) or "message"
    reason = (task.get("statusReason") or {}).get("text") or DELIVERY_STATES[state][0]
    if state == "cancel-denied":
        text = f"The pharmacy denied the cancellation of this prescription: {reason}"
    elif state == "error":
        text = f"The {sent} was rejected and will not be sent again: {reason}"
    else:
        text = f"The {sent} could not be delivered to the pharmacy: {reason}"
    about = [_reference_of(medication_request)]
    if task_ref:
        about.append(_ref(task_ref))
    communication: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category",
                                  "code": "alert"}]}],
        "priority": "urgent" if state != "cancel-denied" else "routine",
        "about": about,
        "sent": _now(now),
        "reasonCode": [{"coding": [{"system": DELIVERY_STATUS_SYSTEM, "code": state,
                                    "display": DELIVERY_STATES[state][0]}]}],
        "payload": [{"contentString": text}],
    }
    if medication_request.get("subject"):
        communication["subject"] = copy.deepcopy(medication_request["subject"])
    if medication_request.get("requester"):
        communication["recipient"] = [copy.deepcopy(medication_request["requester"])]
    pharmacy = medication_request.get("dispenseRequest", {}).get("performer")
    if pharmacy and state == "cancel-denied":
        communication["sender"] = copy.deepcopy(pharmacy)
    return communication


@dataclass(frozen=True)
class DeliveryChanges:
    """What one answer changes: the Task always, the MedicationRequest and a Communication maybe."""

    task: dict
    medication_request: dict | None = None
    communication: dict | None = None


def reflect_delivery(medication_request: dict, message: InboundMessage, task: dict | None = None, *,
                     now: datetime | None = None) -> DeliveryChanges:
    """delivery_update + medication_request_update + error_communication, for a state change only."""
    before = business_status(task) if task else None
    updated = delivery_update(medication_request, message, task, now=now)
    if task is not None and business_status(updated) == before:
        return DeliveryChanges(updated)
    task_ref = {"reference": f"Task/{updated['id']}"} if updated.get("id") else None
    return DeliveryChanges(updated, medication_request_update(medication_request, updated),
                           error_communication(medication_request, updated, task_ref=task_ref, now=now))


# ---- renewal requests ----------------------------------------------------------------------------

def _medication_concept(medication: Medication) -> dict:
    codings = []
    if medication.rxnorm:
        codings.append({"system": RXNORM_SYSTEM, "code": medication.rxnorm})
    if medication.ndc:
        codings.append({"system": NDC_SYSTEM, "code": medication.ndc})
    concept: dict[str, Any] = {"text": medication.drug_description}
    if codings:
        concept["coding"] = codings
    return concept


def _quantity(medication: Medication) -> dict | None:
    if medication.quantity is None:
        return None
    quantity: dict[str, Any] = {"value": _number(medication.quantity)}
    if medication.quantity_unit:
        quantity.update(system=NCI_SYSTEM, code=medication.quantity_unit)
    return quantity


def renewal_task(request: RxRenewalRequest, patient_ref: str | dict, requester_ref: str | dict,
                 medication_request_ref: str | dict | None = None, *, now: datetime | None = None) -> dict:
    """The Task a clinician answers for a pharmacy's RxRenewalRequest (status requested)."""
    dispensed, header = request.dispensed, request.header
    stamp = _now(now)
    pharmacy_name = request.pharmacy.business_name or f"pharmacy {request.pharmacy.ncpdp_id}"
    refills = request.requested_refills
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": MESSAGE_ID_SYSTEM, "value": header.message_id}],
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "renewal-request",
                             "display": "Answer a pharmacy's prescription renewal request"}]},
        "description": (f"{pharmacy_name} asks to renew {dispensed.drug_description}"
                        + (f" ({refills} refills requested)" if refills is not None else "")),
        "for": _ref(patient_ref),
        "authoredOn": stamp,
        "lastModified": stamp,
        "requester": {"identifier": {"system": NCPDP_ID_SYSTEM, "value": request.pharmacy.ncpdp_id},
                      "display": pharmacy_name},
        "owner": _ref(requester_ref),
    }
    if medication_request_ref:
        task["focus"] = _ref(medication_request_ref)
    if header.prescriber_order_number:
        task["groupIdentifier"] = {"system": PRESCRIBER_ORDER_SYSTEM, "value": header.prescriber_order_number}
    inputs = [task_parameter("message-id", "String", header.message_id),
              task_parameter("request-sent-time", "DateTime", _timestamp(header.sent_time)),
              task_parameter("pharmacy-ncpdp-id", "String", request.pharmacy.ncpdp_id),
              # The Header's addressing, so the answer can go back exactly (renewal_request_header)
              task_parameter("request-from", "Identifier", {"system": _QUALIFIED + (header.from_qualifier or "P"),
                                                        "value": header.from_}),
              task_parameter("request-to", "Identifier", {"system": _QUALIFIED + (header.to_qualifier or "D"),
                                                      "value": header.to})]
    if header.rx_reference_number:
        inputs.append(task_parameter("rx-reference-number", "String", header.rx_reference_number))
    if header.prescriber_order_number:
        inputs.append(task_parameter("prescriber-order-number", "String", header.prescriber_order_number))
    if refills is not None:
        inputs.append(task_parameter("requested-refills", "UnsignedInt", refills))
    inputs.append(task_parameter("medication-dispensed", "CodeableConcept", _medication_concept(dispensed)))
    quantity = _quantity(dispensed)
    if quantity:
        inputs.append(task_parameter("quantity-dispensed", "Quantity", quantity))
    if dispensed.days_supply is not None:
        inputs.append(task_parameter("days-supply", "UnsignedInt", dispensed.days_supply))
    if dispensed.last_fill_date:
        inputs.append(task_parameter("last-fill-date", "Date", dispensed.last_fill_date.isoformat()))
    if dispensed.sig:
        inputs.append(task_parameter("sig", "String", dispensed.sig))
    task["input"] = inputs
    return task


def renewal_request_header(task: dict) -> Header:
    """The RxRenewalRequest's Header again, from its renewal Task: what
    renewal_response.build_renewal_response needs to answer it."""
    inputs = task_parameters(task, "input")
    try:
        sender, receiver = inputs["request-from"], inputs["request-to"]
        return Header(
            to=receiver["value"], from_=sender["value"], message_id=inputs["message-id"],
            sent_time=datetime.fromisoformat(inputs["request-sent-time"]),
            to_qualifier=receiver["system"].removeprefix(_QUALIFIED),
            from_qualifier=sender["system"].removeprefix(_QUALIFIED),
            rx_reference_number=inputs.get("rx-reference-number"),
            prescriber_order_number=inputs.get("prescriber-order-number"),
        )
    except (KeyError, TypeError, ValueError):
        raise ValueError("the Task is not a renewal Task made by renewal_task") from None


def renewal_proposal(request: RxRenewalRequest, patient_ref: str | dict, requester_ref: str | dict,
                     medication_request_ref: str | dict | None = None) -> dict:
    """A draft MedicationRequest (intent proposal) for what the pharmacy asks; the clinician turns it
    into an order (or not) when answering the renewal Task."""
    prescribed = request.prescribed or request.dispensed
    dispensed = request.dispensed
    proposal: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": _medication_concept(prescribed),
        "subject": _ref(patient_ref),
        "requester": _ref(requester_ref),
    }
    if request.header.rx_reference_number:
        proposal["identifier"] = [{"system": RX_REFERENCE_SYSTEM, "value": request.header.rx_reference_number}]
    if medication_request_ref:
        proposal["priorPrescription"] = _ref(medication_request_ref)
    sig = prescribed.sig or dispensed.sig
    if sig:
        proposal["dosageInstruction"] = [{"text": sig}]
    dispense: dict[str, Any] = {}
    refills = request.requested_refills
    if refills is not None:
        dispense["numberOfRepeatsAllowed"] = refills
    quantity = _quantity(prescribed) or _quantity(dispensed)
    if quantity:
        dispense["quantity"] = quantity
    days = prescribed.days_supply if prescribed.days_supply is not None else dispensed.days_supply
    if days is not None:
        dispense["expectedSupplyDuration"] = {"value": days, "unit": "days", "system": "http://unitsofmeasure.org",
                                              "code": "d"}
    if dispense:
        proposal["dispenseRequest"] = dispense
    substitutions = prescribed.substitutions
    if substitutions in ("0", "1"):
        proposal["substitution"] = {"allowedBoolean": substitutions == "0"}
    return proposal


__all__ = [
    "DELIVERY_STATES", "DELIVERY_STATUS_SYSTEM", "DeliveryChanges", "MESSAGE_ID_SYSTEM",
    "business_status", "delivery_update", "error_communication", "error_outcome", "medication_request_update",
    "reflect_delivery", "renewal_proposal", "renewal_request_header", "renewal_task", "transmission_task",
    "transmitted_message_id", "transmitted_message_type", "transport_failure",
]

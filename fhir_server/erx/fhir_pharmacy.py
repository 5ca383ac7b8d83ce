"""Delivering prescriptions to FHIR-native pharmacies: the "erx.fhir" jobs and their transmission Tasks.

A pharmacy whose Organization names an active hl7-fhir-rest Endpoint (mappers/fhir_pharmacy.py)
gets the MedicationRequest as a FHIR transaction Bundle POSTed to that Endpoint's address instead of
a SCRIPT NewRx; a cancel is the same transaction with the MedicationRequest's new status (its
conditional update, `PUT MedicationRequest?identifier=...`, updates the pharmacy's one copy).

Queueing (`queue_delivery`, called by the trigger in the write's own unit of work): the Bundle is
built and checked in the write (a prescription that cannot be sent is refused with 422 and nothing
is stored), then a transmission Task and a job of kind "erx.fhir" are committed with the write. The
job's key is a new delivery id (uuid hex); its payload holds the Bundle itself (every attempt sends
the same bytes), the endpoint address, the MedicationRequest, the Task, the purpose (order, cancel)
and, for a cancel, the order's Task.

The transmission Task (`delivery_task`) is shaped as reflect.transmission_task shapes SCRIPT ones
(same code, focus, for, requester, owner, input and output types, businessStatus codes), with:
`identifier` = the delivery id under FHIR_DELIVERY_ID_SYSTEM (not an NCPDP MessageID, so the SCRIPT
inbound route never finds it); input `message-type` valueCode `fhir-transaction`, `message-id` (the
delivery id), `transaction-purpose` (order | cancel), `endpoint` (valueUrl, the base URL it goes to:
a cancel goes where its order went) and `prescription-identifier`. Its states are reflect's:

  | businessStatus | when                                                          | Task.status |
  |----------------|---------------------------------------------------------------|-------------|
  | queued         | queued with the write                                         | requested   |
  | retrying       | HTTP 5xx, 408, 429 (Retry-After honoured), a timeout, a       | in-progress |
  |                | connection failure, a 2xx that is not a transaction-response  |             |
  | accepted       | 2xx with a transaction-response: output pharmacy-location (the| completed   |
  |                | pharmacy's Location of its MedicationRequest), response-status|             |
  | error          | any other HTTP status (4xx; 3xx: redirects are not followed)  | failed      |
  | dead-letter    | the last attempt failed as `retrying` would; or an order whose| failed      |
  |                | MedicationRequest was cancelled before it was sent            |             |

`sent` (a network has it) does not happen: the pharmacy's server answers for itself. A cancel that
the pharmacy's server accepted is `accepted` and completed: the conditional update IS the outcome
(there is no CancelRxResponse to wait for).

What error and dead-letter do (`consequences`): an order that was not delivered puts the
MedicationRequest on-hold (statusReason = the Task's: the pharmacy's OperationOutcome issue codes,
system http://hl7.org/fhir/issue-type, for a refusal), and a Communication tells the prescriber
(reflect.error_communication, with its own text), for orders and cancels alike. The pharmacy's
OperationOutcome is kept, trimmed to its issues, contained in the Task (output error-detail); its
diagnostics go nowhere else. Logs and job errors carry the job and delivery ids, the Task id, HTTP
statuses and issue codes only: never the Bundle, the pharmacy's answer or its diagnostics.

Order and cancel: a cancel queued while the order is still queued or retrying waits (RetryLater)
until the order's delivery ends, so the pharmacy never gets the active prescription after its
cancellation; and an order whose MedicationRequest is cancelled by the time it is sent is not sent
(its Task becomes dead-letter with that reason) while the cancel, sent anyway, tells the pharmacy in
case an earlier attempt of the order reached it. On its last attempt a cancel is sent whatever the
order's state.

Crash safety is the conditional update's: a resend (a lease that expired, an operator's retry)
updates the same MedicationRequest at the pharmacy, and the conditional creates find what the first
delivery made. Recording is delivery.apply_to_transmission's (one unit of work, re-read on a
VersionConflict, nothing written when the state does not change).

Authentication to the pharmacy's server is not done: the POST carries no credentials. A SMART
Backend Services client (a registered client, a JWT assertion signed with our key, system/ scopes)
would be the way; until then only pharmacies reachable without it (a private network, a relay) work.

Who decides where prescriptions go: whoever may write the pharmacy's Organization and Endpoint.
Their addresses must be https (plain http only to loopback, for tests and local relays; checked when
queued and again before sending); write access to Organization and Endpoint should be an
administrator's (SMART scopes), since it routes patient data.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import uuid
from datetime import datetime, timezone
from typing import Any, NoReturn

import httpx
import orjson

from mappers.fhir_pharmacy import (
    FHIR_DELIVERY_ID_SYSTEM,
    address_problems,
    base_url,
    build_transaction,
    is_fhir_rest_endpoint,
    prescription_identifier,
)
from mappers.ncpdp.reflect import (
    DELIVERY_STATES,
    TASK_CODE_SYSTEM,
    DeliveryChanges,
    business_status,
    error_communication,
    set_state,
    task_parameter,
    task_parameters,
    transmitted_message_type,
)
from mappers.ncpdp.resources import PrescriptionContext, Read

from ..audit import disclosures
from ..outbox import Permanent, RetryLater
from ..storage import UnitOfWork
from ..storage.base import OutboxJob
from .delivery import (Change, HttpDelivery, Recorded, TransmissionAttempt, apply_to_transmission, mark_state,
                       split_reference)

log = logging.getLogger("fhir_server.erx")

JOB_KIND = "erx.fhir"
MESSAGE_TYPE = "fhir-transaction"
ORDER, CANCEL = "order", "cancel"
ISSUE_TYPE_SYSTEM = "http://hl7.org/fhir/issue-type"
FHIR_HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json",
                "Prefer": "return=minimal"}  # the answer needs locations, not the resources back
RETRYABLE_HTTP = frozenset({408, 429})  # besides every 5xx
MAX_ANSWER_BYTES = 1024 * 1024
MAX_RETRY_AFTER_S = 3600.0
WITHDRAWN = frozenset({"cancelled", "stopped", "entered-in-error"})  # trigger.CANCELLED
_UNFINISHED = frozenset({"queued", "retrying"})
_SEVERITIES = frozenset({"fatal", "error", "warning", "information"})
_ISSUE_CODE = re.compile(r"[a-z][a-z-]{0,63}")
_MAX_ISSUES = 20
_MAX_TEXT = 2000


# ---- the transmission Task ------------------------------------------------------------------------

def _now(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds")


def delivery_task(medication_request: dict, delivery_id: str, purpose: str, address: str, *,
                  now: datetime | None = None) -> dict:
    """The Task recording one delivery to a FHIR pharmacy, `queued` (write it with the job)."""
    if purpose not in (ORDER, CANCEL):
        raise ValueError(f"{purpose!r} is not a delivery purpose ({ORDER}, {CANCEL})")
    stamp = _now(now)
    focus = {"reference": f"MedicationRequest/{medication_request['id']}"}
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": FHIR_DELIVERY_ID_SYSTEM, "value": delivery_id}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "transmission",
                             "display": "Deliver an e-prescribing message"}]},
        "description": f"FHIR transaction ({'prescription' if purpose == ORDER else 'cancellation'}) "
                       f"for {focus['reference']}",
        "focus": focus,
        "authoredOn": stamp,
        "lastModified": stamp,
    }
    for element, source in (("for", "subject"), ("requester", "requester")):
        if medication_request.get(source):
            task[element] = copy.deepcopy(medication_request[source])
    pharmacy = (medication_request.get("dispenseRequest") or {}).get("performer")
    if pharmacy:
        task["owner"] = copy.deepcopy(pharmacy)
    task["input"] = [task_parameter("message-type", "Code", MESSAGE_TYPE), task_parameter("message-id", "String", delivery_id),
                     task_parameter("transaction-purpose", "Code", purpose), task_parameter("endpoint", "Url", address)]
    identifier = prescription_identifier(medication_request)
    if identifier:
        task["input"].append(task_parameter("prescription-identifier", "Identifier",
                                        {"system": identifier["system"], "value": identifier["value"]}))
    set_state(task, "queued", stamp)
    task.pop("executionPeriod")
    return task


def is_fhir_delivery(task: dict) -> bool:
    return transmitted_message_type(task) == MESSAGE_TYPE


def delivery_purpose(task: dict) -> str | None:
    return task_parameters(task, "input").get("transaction-purpose") if is_fhir_delivery(task) else None


def delivery_endpoint(task: dict) -> str | None:
    return task_parameters(task, "input").get("endpoint") if is_fhir_delivery(task) else None


def fhir_delivery_id(task: dict) -> str | None:
    return next((i.get("value") for i in task.get("identifier") or [] if i.get("system") == FHIR_DELIVERY_ID_SYSTEM),
                None)


def accepted(task: dict, *, response_status: str | None, location: str | None, attempts: int,
             now: datetime | None = None) -> dict:
    """The Task after the pharmacy's server took the transaction (unchanged when an earlier
    answer already decided it)."""
    task = copy.deepcopy(task)
    if business_status(task) not in _UNFINISHED:
        return task
    set_state(task, "accepted", _now(now))
    task.pop("statusReason", None)
    task.pop("contained", None)
    outputs = [task_parameter("attempts", "UnsignedInt", attempts)]
    if response_status:
        outputs.append(task_parameter("response-status", "String", response_status))
    if location:
        outputs.append(task_parameter("pharmacy-location", "Uri", location))
    task["output"] = outputs
    return task


def issue_codes(outcome: dict | None) -> list[str]:
    """The distinct issue codes of an (already trimmed) OperationOutcome, in order."""
    found: list[str] = []
    for issue in (outcome or {}).get("issue") or []:
        if issue.get("code") not in found:
            found.append(issue["code"])
    return found


def trimmed_outcome(answer: object) -> dict | None:
    """The pharmacy's OperationOutcome reduced to valid issues (severity, code, details,
    diagnostics, expression, capped in number and length); None when there is none."""
    if not isinstance(answer, dict) or answer.get("resourceType") != "OperationOutcome":
        return None
    issues = []
    for raw in answer.get("issue") or []:
        if not isinstance(raw, dict) or raw.get("severity") not in _SEVERITIES:
            continue
        code = raw.get("code")
        if not isinstance(code, str) or not _ISSUE_CODE.fullmatch(code):
            continue
        issue: dict[str, Any] = {"severity": raw["severity"], "code": code}
        details = raw.get("details")
        if isinstance(details, dict):
            concept: dict[str, Any] = {}
            codings = [{k: c[k][:_MAX_TEXT] for k in ("system", "code", "display") if isinstance(c.get(k), str) and c[k]}
                       for c in details.get("coding") or [] if isinstance(c, dict)]
            codings = [c for c in codings if c][:_MAX_ISSUES]
            if codings:
                concept["coding"] = codings
            if isinstance(details.get("text"), str) and details["text"].strip():
                concept["text"] = details["text"][:_MAX_TEXT]
            if concept:
                issue["details"] = concept
        if isinstance(raw.get("diagnostics"), str) and raw["diagnostics"].strip():
            issue["diagnostics"] = raw["diagnostics"][:_MAX_TEXT]
        expressions = [e[:_MAX_TEXT] for e in raw.get("expression") or [] if isinstance(e, str) and e.strip()]
        if expressions:
            issue["expression"] = expressions[:_MAX_ISSUES]
        issues.append(issue)
        if len(issues) == _MAX_ISSUES:
            break
    return {"resourceType": "OperationOutcome", "issue": issues} if issues else None


def refused(task: dict, http_status: int, outcome: dict | None, *, attempts: int,
            now: datetime | None = None) -> dict | None:
    """The Task after the pharmacy's server refused the transaction (HTTP 4xx ...): `error`, the
    issue codes as statusReason, the trimmed OperationOutcome contained. None when an earlier
    answer already decided the Task."""
    if business_status(task) not in _UNFINISHED:
        return None
    codes = issue_codes(outcome)
    what = "cancellation" if delivery_purpose(task) == CANCEL else "prescription"
    reason = f"The pharmacy's FHIR server refused the {what}: HTTP {http_status}"
    if codes:
        reason += f" ({', '.join(codes)})"
    task = mark_state(task, "error", reason, attempts=attempts, now=now)
    status_reason: dict[str, Any] = {"text": reason}
    if codes:
        status_reason["coding"] = [{"system": ISSUE_TYPE_SYSTEM, "code": c} for c in codes]
    task["statusReason"] = status_reason
    if outcome is not None:
        task["contained"] = [{**outcome, "id": "error"}]
        task["output"].append(task_parameter("error-detail", "Reference", {"reference": "#error"}))
    return task


def withdrawn(task: dict, *, now: datetime | None = None) -> dict | None:
    """An order not sent because its MedicationRequest was cancelled first: `dead-letter`."""
    if business_status(task) not in _UNFINISHED:
        return None
    return mark_state(task, "dead-letter", "Not sent: the prescription was cancelled before it was delivered; "
                      "the cancellation is sent instead", now=now)


def consequences(medication_request: dict, task: dict, *, tell_prescriber: bool = True) -> DeliveryChanges:
    """The Task plus what its state means for the MedicationRequest (an order not delivered:
    on-hold) and the prescriber (a Communication for error and dead-letter)."""
    state = business_status(task)
    update = None
    if (state in ("error", "dead-letter") and delivery_purpose(task) == ORDER
            and medication_request.get("status") == "active"):
        update = copy.deepcopy(medication_request)
        update["status"] = "on-hold"
        update["statusReason"] = copy.deepcopy(task.get("statusReason") or {"text": "Not delivered to the pharmacy"})
    communication = None
    if tell_prescriber:
        task_ref = {"reference": f"Task/{task['id']}"} if task.get("id") else None
        communication = error_communication(medication_request, task, task_ref=task_ref)
    if communication is not None:
        what = "cancellation of this prescription" if delivery_purpose(task) == CANCEL else "prescription"
        reason = (task.get("statusReason") or {}).get("text") or DELIVERY_STATES[state][0]
        ending = "It will not be sent again." if state == "error" else "Sending was given up."
        communication["payload"] = [{"contentString": f"The {what} could not be delivered to the pharmacy's FHIR "
                                                      f"server: {reason}. {ending}"}]
    return DeliveryChanges(task, update, communication)


# ---- choosing and queueing ------------------------------------------------------------------------

async def pharmacy_endpoint(ctx: PrescriptionContext, read: Read) -> dict | None:
    """The pharmacy's active hl7-fhir-rest Endpoint (stored, or contained in the Organization or,
    for a contained Organization, in the MedicationRequest), None for a SCRIPT pharmacy."""
    organization = ctx.pharmacy
    if not organization or not organization.get("id"):
        return None
    mr = ctx.medication_request
    in_request = any(r is organization for r in mr.get("contained") or [])
    scopes = [organization.get("contained") or []] + ([mr.get("contained") or []] if in_request else [])
    for reference in organization.get("endpoint") or []:
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(ref, str) or not ref.strip():
            continue
        if ref.startswith("#"):
            endpoint = next((r for scope in scopes for r in scope if isinstance(r, dict) and r.get("id") == ref[1:]),
                            None)
        else:
            endpoint = await read(ref.strip())
        if is_fhir_rest_endpoint(endpoint):
            return endpoint
    return None


async def queue_delivery(uow: UnitOfWork, medication_request: dict, ctx: PrescriptionContext, address: str,
                         purpose: str, *, order_task_id: str | None = None) -> str:
    """Build (or refuse: 422) the transaction and commit its Task and job with the write; the
    delivery id."""
    bundle = build_transaction(ctx, endpoint={"address": address})
    url = base_url(address)
    delivery_id = uuid.uuid4().hex
    task_id = str(uuid.uuid4())
    await uow.write("Task", task_id, delivery_task(medication_request, delivery_id, purpose, url), method="POST",
                    must_not_exist=True)
    payload = {"bundle": bundle, "endpoint": url, "purpose": purpose,
               "medication_request": f"MedicationRequest/{medication_request['id']}", "task": f"Task/{task_id}"}
    if order_task_id:
        payload["order_task"] = f"Task/{order_task_id}"
    await uow.enqueue(JOB_KIND, delivery_id, payload)
    return delivery_id


# ---- delivering -----------------------------------------------------------------------------------

def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after", "").strip()
    return min(float(value), MAX_RETRY_AFTER_S) if value.isdigit() else None


def _json(content: bytes | None) -> object:
    if not content:
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _transaction_answer(answer: object, address: str) -> tuple[str | None, str | None] | None:
    """(the MedicationRequest entry's status, its absolute Location) from a transaction-response
    whose first entry (the MedicationRequest) succeeded; None for anything else."""
    if not isinstance(answer, dict) or answer.get("resourceType") != "Bundle" or answer.get("type") != "transaction-response":
        return None
    entries = answer.get("entry")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return None
    response = entries[0].get("response")
    if not isinstance(response, dict) or not str(response.get("status") or "").strip().startswith("2"):
        return None
    status = str(response["status"]).strip()[:100]
    location = response.get("location")
    if not isinstance(location, str) or not location.strip():
        return status, None
    location = location.strip()[:_MAX_TEXT]
    if "://" not in location:
        location = f"{address}/{location.lstrip('/')}"
    return status, location


class FhirPharmacyDelivery(HttpDelivery):
    """The "erx.fhir" handler: `OutboxWorker(store, {"erx.fhir": FhirPharmacyDelivery(store, settings).handle})`."""

    def consequences(self, medication_request: dict, task: dict) -> DeliveryChanges:
        return consequences(medication_request, task)  # this module's: FHIR orders, not SCRIPT messages

    async def handle(self, job: OutboxJob) -> None:
        try:
            payload = job.payload
            bundle, address, purpose = payload["bundle"], str(payload["endpoint"]), str(payload["purpose"])
            if not isinstance(bundle, dict) or purpose not in (ORDER, CANCEL):
                raise ValueError
            task_id = split_reference(payload["task"])[1]
            mr_ref = str(payload["medication_request"])
            mr_type, mr_id = split_reference(mr_ref)
            order_task_id = split_reference(payload["order_task"])[1] if payload.get("order_task") else None
        except (KeyError, TypeError, AttributeError, ValueError):
            raise Permanent(f"{job.kind} job {job.id}: the payload is not an erx.fhir payload") from None
        attempt = _Attempt(self, job, task_id, mr_ref, final=job.attempts >= self.settings.max_attempts)

        if address_problems(address):
            await attempt.refused_here("the pharmacy's FHIR Endpoint address is not one a prescription may be sent to")
        if purpose == ORDER:
            current = await self.store.read(mr_type, mr_id)
            if current is not None and current.body is not None and orjson.loads(current.body).get("status") in WITHDRAWN:
                await attempt.withdrawn()
                return
        elif order_task_id and not attempt.final:
            order = await self.store.read("Task", order_task_id)
            if order is not None and order.body is not None and business_status(orjson.loads(order.body)) in _UNFINISHED:
                raise RetryLater("the order's delivery has not ended yet: its cancellation waits for it")

        try:
            status, headers, content = await self._post(orjson.dumps(bundle), base_url(address), job.key)
        except (httpx.TimeoutException, TimeoutError):
            await attempt.transport_failed(f"no answer from the pharmacy's FHIR server within {self.settings.timeout_s:g} s")
        except httpx.HTTPError as exc:  # connection refused, reset, protocol error ...
            await attempt.transport_failed(f"could not reach the pharmacy's FHIR server ({type(exc).__name__})")

        if status >= 500 or status in RETRYABLE_HTTP:
            await attempt.transport_failed(f"the pharmacy's FHIR server answered HTTP {status}",
                                           after=_retry_after(headers))
        if not 200 <= status < 300:
            await attempt.refused(status, trimmed_outcome(_json(content)))
        await disclosures.resources_sent(self.store, [mr_ref], base_url(address),
                                         f"FHIR {purpose} to the pharmacy's FHIR server")
        if content is None:
            await attempt.transport_failed(f"the pharmacy's answer is over {MAX_ANSWER_BYTES} bytes")
        answer = _transaction_answer(_json(content), base_url(address))
        if answer is None:
            await attempt.transport_failed(f"the pharmacy's answer (HTTP {status}) is not a transaction-response "
                                           "with the MedicationRequest's entry")
        await attempt.accepted(*answer)

    async def _post(self, body: bytes, url: str, delivery_id: str) -> tuple[int, httpx.Headers, bytes | None]:
        """(HTTP status, headers, the answer's bytes, None when over MAX_ANSWER_BYTES)."""
        timeout = self.settings.timeout_s
        headers = {**FHIR_HEADERS, "X-Request-ID": delivery_id}
        async with asyncio.timeout(timeout):  # httpx's timeout is per phase; this one bounds the whole
            async with self._http().stream("POST", url, content=body, headers=headers,
                                           timeout=httpx.Timeout(timeout)) as response:
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        return response.status_code, response.headers, None
                    chunks.append(chunk)
                return response.status_code, response.headers, b"".join(chunks)

    async def record(self, task_id: str, mr_ref: str, change: Change) -> Recorded:
        """Its own method, so tests can simulate a crash between sending and recording."""
        return await apply_to_transmission(self.store, task_id, change, medication_request_ref=mr_ref)


class _Attempt(TransmissionAttempt):
    """One attempt of one FHIR delivery (delivery.TransmissionAttempt records and retries)."""

    async def refused(self, status: int, outcome: dict | None) -> NoReturn:
        attempts = self.job.attempts

        def change(task: dict, mr: dict) -> DeliveryChanges | None:
            updated = refused(task, status, outcome, attempts=attempts)
            return consequences(mr, updated) if updated is not None else None

        await self._record(change)
        codes = issue_codes(outcome)
        raise Permanent(f"the pharmacy's FHIR server refused the transaction: HTTP {status}"
                        + (f" ({', '.join(codes)})" if codes else ""))

    async def refused_here(self, reason: str) -> NoReturn:
        attempts = self.job.attempts
        await self._record(lambda task, mr: consequences(mr, mark_state(task, "error", reason, attempts=attempts))
                           if business_status(task) in _UNFINISHED else None)
        raise Permanent(reason)

    async def withdrawn(self) -> None:
        await self._record(lambda task, mr: DeliveryChanges(updated) if (updated := withdrawn(task)) else None)
        log.info("erx: %s: not sent, the prescription was cancelled first", self._what())

    async def accepted(self, response_status: str | None, location: str | None) -> None:
        attempts = self.job.attempts
        await self._record(lambda task, mr: DeliveryChanges(accepted(task, response_status=response_status,
                                                                     location=location, attempts=attempts)))
        log.debug("erx: %s: the pharmacy's FHIR server accepted it (%s)", self._what(), response_status)


__all__ = [
    "CANCEL", "JOB_KIND", "MESSAGE_TYPE", "ORDER", "FhirPharmacyDelivery", "accepted", "consequences",
    "delivery_endpoint", "delivery_purpose", "delivery_task", "fhir_delivery_id", "is_fhir_delivery",
    "issue_codes", "pharmacy_endpoint", "queue_delivery", "refused", "trimmed_outcome", "withdrawn",
]

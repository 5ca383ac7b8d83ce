"""Delivering SCRIPT messages to the gateway: the handler of the outbox's "erx.send" jobs.

The trigger (trigger.py) built and validated the message when the MedicationRequest was written and
committed, in the same unit of work, the transmission Task (businessStatus `queued`) and a job
whose payload holds the exact message bytes. For each attempt `ErxDelivery.handle`:

- POSTs those bytes, unchanged, to the gateway (`Content-Type: application/xml`,
  `Idempotency-Key: <MessageID>`), within `timeout_s`;
- HTTP 2xx: parses the SCRIPT answer (Status, Error, Verify, CancelRxResponse; at most
  MAX_INBOUND_BYTES are read) and reflects it (mappers/ncpdp/reflect.py) into the Task, the
  MedicationRequest (on-hold when undeliverable) and a Communication to the prescriber, written
  together in ONE unit of work; a retryable Error (600/602) raises RetryLater, anything else
  completes the job (the pharmacy's later answers come through /erx/inbound, inbound.py);
- HTTP 5xx, 408, 429 (Retry-After honoured), a timeout, a connection failure, or an answer that is
  not a SCRIPT answer to this message: the Task becomes `retrying` (written only when its state
  changes) and RetryLater is raised;
- any other HTTP status (4xx, 3xx: redirects are not followed): the gateway refuses the message as
  it is: the Task becomes `error` (MedicationRequest on-hold, a Communication to the prescriber) and
  Permanent is raised (an operator may fix the cause and `erx retry` it: admin.py);
- from attempt `max_attempts` on, a failure that would be retried dead-letters instead: the Task
  becomes `dead-letter` (MedicationRequest on-hold, a Communication to the prescriber) and
  Permanent is raised.

Crash safety: sending and recording are not atomic. If the process dies after the gateway got the
message but before the Task was written, the job's lease expires and an attempt sends the SAME
bytes with the SAME MessageID again; the gateway recognises the MessageID (and Idempotency-Key),
records the message once and answers as before, which is then recorded. Recording is idempotent:
an answer that does not change the Task's state writes nothing.

What is logged, and what goes into RetryLater/Permanent (the job's last_error): job id, kind,
MessageID, Task id, HTTP status and NCPDP codes. Never message bytes or gateway descriptions
(which may quote patient data); those go into the Task only, which is FHIR data like the rest.

System writes (`apply_to_transmission`) are the server's own actions: straight to the store's unit
of work, read-modify-write with the version read, re-read and re-applied on a VersionConflict.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, NoReturn

import httpx
import orjson

from mappers.ncpdp.envelope import MessageError
from mappers.ncpdp.inbound import (
    MAX_INBOUND_BYTES,
    CancelRxResponse,
    ErrorMessage,
    InboundMessage,
    StatusMessage,
    VerifyMessage,
    parse_inbound,
)
from mappers.ncpdp.reflect import (
    DeliveryChanges,
    business_status,
    error_communication,
    medication_request_update,
    reflect_delivery,
    set_state,
    task_parameter,
    transmission_task,
    transport_failure,
)

from .. import outbound
from ..audit import disclosures
from ..outbox import Permanent, RetryLater
from ..storage.base import OutboxJob
from ..storage.errors import VersionConflict
from .config import ErxSettings

log = logging.getLogger("fhir_server.erx")

JOB_KIND = "erx.send"
XML_HEADERS = {"Content-Type": "application/xml", "Accept": "application/xml"}
RETRYABLE_HTTP = frozenset({408, 429})  # besides every 5xx
MAX_RETRY_AFTER_S = 3600.0
WRITE_ATTEMPTS = 5  # re-reads after a VersionConflict before giving up (the job is then retried)

Change = Callable[[dict, dict], "DeliveryChanges | None"]
"""(the Task, the MedicationRequest) -> what to write; None or an unchanged state: nothing."""


class TransmissionError(Exception):
    """The transmission Task or its job cannot be worked on (no patient data in the message)."""


@dataclass(frozen=True)
class Recorded:
    """The outcome of apply_to_transmission: the Task's delivery state before and after, and
    whether anything was written."""

    before: str | None
    after: str | None
    written: bool
    task_version: int


def split_reference(reference: str) -> tuple[str, str]:
    """"Type/id" (also absolute or versioned) -> (type, id); ValueError for anything else."""
    parts = str(reference).split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2 or not parts[-2] or not parts[-1]:
        raise ValueError("not a Type/id reference")
    return parts[-2], parts[-1]


def consequences(medication_request: dict, task: dict) -> DeliveryChanges:
    """The Task plus what its (new) state means for the MedicationRequest and the prescriber."""
    task_ref = {"reference": f"Task/{task['id']}"} if task.get("id") else None
    return DeliveryChanges(task, medication_request_update(medication_request, task),
                           error_communication(medication_request, task, task_ref=task_ref))


def _stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds")


def mark_state(task: dict, state: str, reason: str, *, attempts: int | None = None,
               now: datetime | None = None) -> dict:
    """The Task forced into `state` (a DELIVERY_STATES code) for a reason that is not a SCRIPT answer
    (the gateway refused the HTTP request; an operator requeued it), shaped as transport_failure
    shapes its Tasks: statusReason text, output attempts and transport-error."""
    task = copy.deepcopy(task)
    set_state(task, state, _stamp(now))
    task["statusReason"] = {"text": reason}
    task.pop("contained", None)
    outputs = [task_parameter("transport-error", "String", reason)]
    if attempts is not None:
        outputs.insert(0, task_parameter("attempts", "UnsignedInt", attempts))
    task["output"] = outputs
    return task


async def apply_to_transmission(store, task_id: str, change: Change, *, medication_request_ref: str | None = None,
                                message_type: str | None = None, message_id: str | None = None) -> Recorded:
    """Read the Task and its MedicationRequest, compute `change(task, medication_request)` and write
    the Task (+ MedicationRequest, + a new Communication) in ONE unit of work, when the Task's
    delivery state changes; re-read and re-apply after a VersionConflict.

    The MedicationRequest is `medication_request_ref` or the Task's focus; when it is gone, a stub
    with its id stands in (and is never written). A Task that is gone (never written, or deleted) is
    made again from transmission_task when `message_type` and `message_id` are given, else
    TransmissionError."""
    for _ in range(WRITE_ATTEMPTS):
        try:
            async with store.unit_of_work() as uow:
                stored_task = await uow.read("Task", task_id)
                exists = stored_task is not None and stored_task.body is not None
                task = orjson.loads(stored_task.body) if exists else None
                mr_ref = medication_request_ref or ((task or {}).get("focus") or {}).get("reference")
                if not mr_ref:
                    raise TransmissionError(f"Task/{task_id} names no MedicationRequest")
                mr_type, mr_id = split_reference(mr_ref)
                stored_mr = await uow.read(mr_type, mr_id)
                mr_live = stored_mr is not None and stored_mr.body is not None
                mr = orjson.loads(stored_mr.body) if mr_live else {"resourceType": mr_type, "id": mr_id}
                if task is None:
                    if not (message_type and message_id):
                        raise TransmissionError(f"Task/{task_id} does not exist")
                    task = {**transmission_task(mr, message_type, message_id), "id": task_id}
                    log.warning("erx: Task/%s was missing; made again for MessageID %s", task_id, message_id)
                before = business_status(task) if exists else None
                version = stored_task.version if stored_task is not None else 0
                changes = change(task, mr)
                if changes is None:
                    return Recorded(before, before, False, version)
                after = business_status(changes.task)
                if exists and after == before:
                    return Recorded(before, after, False, version)
                written = await uow.write("Task", task_id, changes.task, method="PUT",
                                          expected_version=stored_task.version if stored_task is not None else None)
                if changes.medication_request is not None and mr_live:
                    await uow.write(mr_type, mr_id, changes.medication_request, method="PUT",
                                    expected_version=stored_mr.version)
                if changes.communication is not None:
                    await uow.write("Communication", str(uuid.uuid4()), changes.communication, method="POST",
                                    must_not_exist=True)
                return Recorded(before, after, True, written.version)
        except VersionConflict:
            continue  # someone wrote the Task or the MedicationRequest meanwhile: read again, apply again
    raise TransmissionError(f"Task/{task_id} kept changing under {WRITE_ATTEMPTS} attempts to record its delivery")


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after", "").strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    return None


def _answer_problem(message: InboundMessage, message_type: str, message_id: str) -> str | None:
    """Why an answer cannot be the answer to this message, or None."""
    if not isinstance(message, (StatusMessage, ErrorMessage, VerifyMessage, CancelRxResponse)):
        return f"the gateway answered with a {message.message_type}"
    relates_to = message.header.relates_to_message_id
    if relates_to and relates_to != message_id:
        return "the gateway's answer relates to another message"
    if isinstance(message, CancelRxResponse) and message_type != "CancelRx":
        return "the gateway answered with a CancelRxResponse"
    return None


class HttpDelivery:
    """What the delivery handlers share: the store they record in, the settings, and one HTTP
    client. `client`: an httpx.AsyncClient to send with (tests pass one over a MockTransport); by
    default one is made on first use and closed by `aclose()`."""

    def __init__(self, store, settings: ErxSettings, client: httpx.AsyncClient | None = None):
        self.store = store
        self.settings = settings
        self._client = client
        self._own_client = client is None

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = outbound.async_client(follow_redirects=False)  # verifies certificates
        return self._client

    def consequences(self, medication_request: dict, task: dict) -> DeliveryChanges:
        """What a Task's new state means for the prescription and the prescriber (SCRIPT rules)."""
        return consequences(medication_request, task)

    async def dead_lettered(self, job: OutboxJob, error: str) -> None:
        """The worker gave the job up (OutboxWorker on_dead_letter): whatever way that happened (the
        last attempt failed, or crashed), the Task must not stay queued or retrying. A Task already
        settled (error, dead-letter, accepted ...) is left as it is."""
        try:
            task_id = split_reference(str(job.payload["task"]))[1]
            mr_ref = str(job.payload["medication_request"])
        except (KeyError, TypeError, ValueError):
            return

        def change(task: dict, medication_request: dict) -> "DeliveryChanges | None":
            if business_status(task) not in ("queued", "sent", "retrying"):
                return None
            return self.consequences(medication_request, mark_state(
                task, "dead-letter", "delivery was given up after repeated failures", attempts=job.attempts))

        await apply_to_transmission(self.store, task_id, change, medication_request_ref=mr_ref)


class ErxDelivery(HttpDelivery):
    """The "erx.send" handler: `OutboxWorker(store, {"erx.send": ErxDelivery(store, settings).handle})`."""

    # -- the handler ---------------------------------------------------------------------------

    async def handle(self, job: OutboxJob) -> None:
        try:
            payload = job.payload
            message_id, message_type = str(payload["message_id"]), str(payload["message_type"])
            body = payload["xml"].encode("utf-8")
            task_id = split_reference(payload["task"])[1]
            mr_ref = str(payload["medication_request"])
            split_reference(mr_ref)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise Permanent(f"{job.kind} job {job.id}: the payload is not an erx.send payload") from None
        if not self.settings.gateway_url:
            raise RetryLater("no e-prescribing gateway is configured")
        final = job.attempts >= self.settings.max_attempts
        context = _Attempt(self, job, task_id, mr_ref, final, message_type=message_type, message_id=message_id)

        try:
            status, headers, content = await self._post(body, message_id)
        except (httpx.TimeoutException, TimeoutError):
            await context.transport_failed(f"no answer from the gateway within {self.settings.timeout_s:g} s")
        except httpx.HTTPError as exc:  # connection refused, reset, protocol error ...
            await context.transport_failed(f"could not reach the gateway ({type(exc).__name__})")

        if status >= 500 or status in RETRYABLE_HTTP:
            await context.transport_failed(f"the gateway answered HTTP {status}", after=_retry_after(headers))
        if not 200 <= status < 300:
            await context.refused(f"the gateway refused the message: HTTP {status}")
        # the gateway took the message: the prescription has been disclosed (the accounting's record)
        await disclosures.resources_sent(self.store, [mr_ref], self.settings.gateway_url,
                                         f"NCPDP SCRIPT {message_type} to the e-prescribing gateway")
        if content is None:
            await context.transport_failed(f"the gateway's answer is over {MAX_INBOUND_BYTES} bytes")

        try:
            message = parse_inbound(content)
        except MessageError:
            await context.transport_failed(f"the gateway's answer (HTTP {status}) is not a SCRIPT message "
                                           "this server reads")
        problem = _answer_problem(message, message_type, message_id)
        if problem:
            await context.transport_failed(problem)
        await context.answered(message)

    async def _post(self, body: bytes, message_id: str) -> tuple[int, httpx.Headers, bytes | None]:
        """(HTTP status, headers, the answer's bytes, None when over MAX_INBOUND_BYTES)."""
        timeout = self.settings.timeout_s
        headers = {**XML_HEADERS, "Idempotency-Key": message_id}
        # httpx's timeout applies per phase (connect, each read ...); the outer one bounds the whole
        async with asyncio.timeout(timeout):
            async with self._http().stream("POST", self.settings.gateway_url, content=body, headers=headers,
                                           timeout=httpx.Timeout(timeout)) as response:
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_INBOUND_BYTES:
                        return response.status_code, response.headers, None
                    chunks.append(chunk)
                return response.status_code, response.headers, b"".join(chunks)

    # -- recording (its own method, so tests can simulate a crash between send and record) --------

    async def record(self, task_id: str, mr_ref: str, change: Change, *, message_type: str,
                     message_id: str) -> Recorded:
        return await apply_to_transmission(self.store, task_id, change, medication_request_ref=mr_ref,
                                           message_type=message_type, message_id=message_id)


@dataclass
class TransmissionAttempt:
    """One attempt of one delivery job: how each outcome is recorded on its Task, and what the
    worker is told. The SCRIPT and FHIR-pharmacy deliveries add their own outcomes."""

    delivery: "HttpDelivery"  # its record() writes the outcome
    job: OutboxJob
    task_id: str
    mr_ref: str
    final: bool  # the last attempt allowed: a failure dead-letters

    def _what(self) -> str:
        return f"{self.job.kind} job {self.job.id} (delivery {self.job.key}, attempt {self.job.attempts})"

    async def _recording(self, change: Change) -> Recorded:
        return await self.delivery.record(self.task_id, self.mr_ref, change)

    async def _record(self, change: Change) -> Recorded:
        try:
            recorded = await self._recording(change)
        except TransmissionError as exc:
            raise RetryLater(f"could not record the delivery: {exc}") from None
        if recorded.written:
            log.info("erx: %s: Task/%s %s -> %s", self._what(), self.task_id, recorded.before or "-", recorded.after)
        return recorded

    async def transport_failed(self, reason: str, *, after: float | None = None) -> NoReturn:
        """No answer (or none to trust): the Task becomes retrying (dead-letter on the final attempt)."""
        attempts, final = self.job.attempts, self.final
        await self._record(lambda task, mr: self.delivery.consequences(
            mr, transport_failure(task, reason, attempts=attempts, dead_letter=final)))
        if final:
            raise Permanent(f"{reason}; gave up after {attempts} attempts")
        raise RetryLater(reason, after)


@dataclass
class _Attempt(TransmissionAttempt):
    message_type: str = ""
    message_id: str = ""

    def _what(self) -> str:
        return f"{self.job.kind} job {self.job.id} (MessageID {self.message_id}, attempt {self.job.attempts})"

    async def _recording(self, change: Change) -> Recorded:
        return await self.delivery.record(self.task_id, self.mr_ref, change,
                                          message_type=self.message_type, message_id=self.message_id)

    async def refused(self, reason: str) -> NoReturn:
        """The gateway refuses the HTTP request itself (4xx): sending it again changes nothing."""
        attempts = self.job.attempts
        await self._record(lambda task, mr: consequences(mr, mark_state(task, "error", reason, attempts=attempts))
                           if business_status(task) in (None, "queued", "retrying") else None)
        raise Permanent(reason)

    async def answered(self, message: InboundMessage) -> None:
        """A SCRIPT answer: reflected; a retryable Error retries (dead-letters on the final attempt)."""
        code = getattr(message, "code", None)
        summary = f"the gateway answered {message.message_type}" + (f" {code}" if code else "")
        if isinstance(message, ErrorMessage) and message.description_code:
            summary += f"/{message.description_code}"
        retryable = isinstance(message, ErrorMessage) and message.retryable
        attempts, final = self.job.attempts, self.final

        def change(task: dict, mr: dict) -> DeliveryChanges:
            changes = reflect_delivery(mr, message, task)
            if retryable and final and business_status(changes.task) == "retrying":
                return consequences(mr, transport_failure(task, message.summary, attempts=attempts, dead_letter=True))
            return changes

        recorded = await self._record(change)
        if retryable and recorded.after in ("retrying", "dead-letter"):
            if final:
                raise Permanent(f"{summary}; gave up after {attempts} attempts")
            raise RetryLater(summary)
        log.debug("erx: %s: %s", self._what(), summary)


async def reopen_transmission(store, job: OutboxJob) -> Recorded | None:
    """Before an operator requeues a dead job: its Task (dead-letter or error) becomes `retrying`
    again, so the answers to the resend are reflected; and the MedicationRequest, if the failure put
    it on-hold (same statusReason), becomes active again. None when the job has no Task."""
    try:
        task_id = split_reference(job.payload["task"])[1]
        mr_ref = str(job.payload["medication_request"])
    except (KeyError, TypeError, ValueError):
        return None

    def change(task: dict, mr: dict) -> DeliveryChanges | None:
        if business_status(task) not in ("dead-letter", "error"):
            return None
        reopened = mark_state(task, "retrying", "Requeued by an operator: the same message will be sent again",
                              attempts=0)
        restored = None
        if mr.get("status") == "on-hold" and mr.get("statusReason") == task.get("statusReason"):
            restored = copy.deepcopy(mr)
            restored["status"] = "active"
            restored.pop("statusReason", None)
        return DeliveryChanges(reopened, restored)

    try:
        return await apply_to_transmission(store, task_id, change, medication_request_ref=mr_ref)
    except TransmissionError:
        return None


__all__ = ["JOB_KIND", "ErxDelivery", "Recorded", "TransmissionError", "apply_to_transmission", "consequences",
           "mark_state", "reopen_transmission", "split_reference"]

"""The simulated e-prescribing network: a Starlette app that takes SCRIPT over HTTP and answers the
way a real switch does (research/ncpdp.md section 8).

- `POST /script` (also `POST /`): an `application/xml` SCRIPT message. The synchronous answer is a
  SCRIPT Status (`000` pending when an asynchronous answer will follow, else `010` accepted) or a
  SCRIPT Error (`601` unreadable, `900` invalid), always HTTP 200 with `application/xml`, addressed
  back to the sender with RelatesToMessageID = the received MessageID. The same MessageID (or
  `Idempotency-Key` header) again with the same bytes is counted as a duplicate, not recorded
  twice, and gets the stored answer; different bytes under a used MessageID get Error 900.
- Asynchronous answers (a pharmacy's Verify/Status/Error, CancelRxResponse) are POSTed
  (`application/xml`, up to three attempts) to `callback_url` after `late_status_after_s`: a
  Verify when the message body has `<ReturnReceipt>1</ReturnReceipt>`, else what `late_answer`
  says; a CancelRx also gets the `cancel_response`. Only the first copy of a message schedules them.
- `POST /inject`: deliver the XML in the body to the callback as if a pharmacy sent it
  (RxRenewalRequest, for instance).
- `GET /messages`: what arrived (raw XML, received_at, message_id, type, duplicates, answer);
  `GET /deliveries`: what was sent to the callback (kind, raw, relates_to_message_id, http_status,
  error, finished_at); `GET|POST /control`: the modes below; `GET /health`.

Loopback only unless started with `--allow-remote` (listen address and callback URLs alike): it
has no authentication and echoes what it is sent.

Modes (`POST /control`, JSON; counters count down per request):
`fail_next` N answers HTTP 500; `timeout_next` N answers only after `hang_s` seconds (the message
is recorded and answered, the client just does not hear it, as when a network times out);
`error_next` N answers SCRIPT Error `error_code`/`error_description_code`/`error_description`;
`sync_status` forces the Status code; `late_answer` `verify|status|error|none`;
`late_error_code`; `cancel_response` `approved|denied|none`; `callback_url`; `callback_token` (sent
as a Bearer token on callbacks); `reset: true`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mappers.ncpdp.envelope import Header, MessageError, parse_message

from . import messages

MAX_BODY_BYTES = 1024 * 1024
ACCEPTED_TYPES = ("NewRx", "CancelRx", "RxRenewalResponse", "RxChangeResponse")
XML_TYPES = ("application/xml", "text/xml")
LATE_ANSWERS = ("verify", "status", "error", "none")
CANCEL_RESPONSES = ("approved", "denied", "none")


@dataclass
class Modes:
    fail_next: int = 0
    timeout_next: int = 0
    hang_s: float = 30.0
    error_next: int = 0
    error_code: str = "900"
    error_description_code: str | None = None
    error_description: str = "Transaction rejected by the simulated network"
    sync_status: str | None = None
    late_answer: str = "none"
    late_status_after_s: float = 0.0
    late_error_code: str = "900"
    cancel_response: str = "none"
    callback_url: str | None = None
    callback_token: str | None = None  # sent as `Authorization: Bearer` on callbacks, as a network's credentials


@dataclass
class Received:
    key: str
    raw: bytes
    received_at: datetime
    message_id: str | None
    type: str | None
    idempotency_key: str | None
    duplicates: int = 0
    conflicts: int = 0
    asks_return_receipt: bool = False
    answer: bytes | None = None  # the final answer, replayed to duplicates
    answer_summary: dict | None = None
    http_statuses: list[int] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"message_id": self.message_id, "type": self.type, "received_at": self.received_at.isoformat(),
                "raw": self.raw.decode("utf-8", "replace"), "duplicates": self.duplicates,
                "conflicts": self.conflicts, "idempotency_key": self.idempotency_key,
                "answer": self.answer_summary, "http_statuses": self.http_statuses}


@dataclass
class Delivery:
    kind: str
    url: str
    raw: bytes
    scheduled_at: datetime
    relates_to: str | None
    finished_at: datetime | None = None  # delivered, or given up after three attempts
    http_status: int | None = None
    error: str | None = None

    def as_json(self) -> dict:
        return {"kind": self.kind, "url": self.url, "raw": self.raw.decode("utf-8", "replace"),
                "relates_to_message_id": self.relates_to, "scheduled_at": self.scheduled_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "http_status": self.http_status, "error": self.error}


class ControlError(ValueError):
    pass


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Gateway:
    """The simulator's state: modes, what it received, what it sent to the callback."""

    def __init__(self, *, allow_remote_callbacks: bool = False):
        self.allow_remote_callbacks = allow_remote_callbacks
        self.modes = Modes()
        self.received: dict[str, Received] = {}
        self.deliveries: list[Delivery] = []
        self.pending: set[asyncio.Task] = set()

    # ---- control ------------------------------------------------------------------------------
    def reset(self) -> None:
        for task in self.pending:
            task.cancel()
        self.pending.clear()
        self.modes = Modes()
        self.received.clear()
        self.deliveries.clear()

    def configure(self, settings: dict[str, Any]) -> None:
        if not isinstance(settings, dict):
            raise ControlError("the body must be a JSON object")
        if settings.get("reset"):
            self.reset()
        known = {f.name: f for f in fields(Modes)}
        unknown = set(settings) - set(known) - {"reset"}
        if unknown:
            raise ControlError(f"unknown settings: {', '.join(sorted(unknown))}")
        updated = asdict(self.modes)
        for name, value in settings.items():
            if name == "reset":
                continue
            updated[name] = self._checked(name, value)
        self.modes = Modes(**updated)

    def _checked(self, name: str, value: Any) -> Any:
        if name in ("fail_next", "timeout_next", "error_next"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ControlError(f"{name} must be a non-negative integer")
        elif name in ("hang_s", "late_status_after_s"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 3600:
                raise ControlError(f"{name} must be a number of seconds (0-3600)")
            value = float(value)
        elif name == "late_answer" and value not in LATE_ANSWERS:
            raise ControlError(f"late_answer must be one of {', '.join(LATE_ANSWERS)}")
        elif name == "cancel_response" and value not in CANCEL_RESPONSES:
            raise ControlError(f"cancel_response must be one of {', '.join(CANCEL_RESPONSES)}")
        elif name == "callback_url" and value is not None:
            parts = urlsplit(value) if isinstance(value, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ControlError("callback_url must be an http(s) URL")
            if not self.allow_remote_callbacks and not is_loopback(parts.hostname):
                raise ControlError("callback_url must be on loopback (start with --allow-remote to lift this)")
        elif name == "callback_token" and value is not None and (not isinstance(value, str) or not value):
            raise ControlError("callback_token must be a non-empty string")
        elif name in ("error_code", "late_error_code", "sync_status", "error_description_code", "error_description"):
            if value is not None and not isinstance(value, str):
                raise ControlError(f"{name} must be a string")
            if name in ("error_code", "late_error_code", "error_description") and not value:
                raise ControlError(f"{name} must not be empty")
        return value

    # ---- receiving ----------------------------------------------------------------------------
    def receive(self, raw: bytes,
                idempotency_key: str | None) -> tuple[Received, Header | None, str | None, str | None]:
        """Record a message (or count a duplicate): (record, header, type, problem)."""
        header: Header | None = None
        message_type: str | None = None
        problem: str | None = None
        element = None
        try:
            header, message_type, element = parse_message(raw)
        except MessageError as err:
            problem = str(err)
        key = idempotency_key or (header.message_id if header else None) or f"unreadable-{uuid.uuid4().hex}"
        record = self.received.get(key)
        if record is None:
            record = Received(key, raw, datetime.now(timezone.utc), header.message_id if header else None,
                              message_type, idempotency_key,
                              asks_return_receipt=element is not None and _asks_return_receipt(element))
            self.received[key] = record
        elif record.raw != raw:
            record.conflicts += 1
            return record, header, message_type, "conflict"
        else:
            record.duplicates += 1
        return record, header, message_type, problem

    def answer(self, record: Received, header: Header | None, message_type: str | None,
               problem: str | None) -> bytes:
        """The SCRIPT answer (stored on the record when it is final, so duplicates get it again)."""
        if problem == "conflict":
            return messages.error(header, "900", None,
                                  "MessageID already used for a different message")
        if record.answer is not None:
            return record.answer
        if problem is not None:
            answer, final = messages.error(header, "601", None, f"Unable to process the message: {problem}"), True
            summary = {"type": "Error", "code": "601"}
        elif self.modes.error_next > 0:
            self.modes.error_next -= 1
            m = self.modes
            answer = messages.error(header, m.error_code, m.error_description_code, m.error_description)
            final = m.error_code not in ("600", "602")
            summary = {"type": "Error", "code": m.error_code}
        else:
            invalid = _invalid(header, message_type)
            if invalid:
                code, description_code, text = invalid
                answer, final = messages.error(header, code, description_code, text), True
                summary = {"type": "Error", "code": code}
            else:
                late = self._plan_late_answers(record, header, message_type)
                code = self.modes.sync_status or ("000" if late else "010")
                description = "Transaction pending" if code == "000" else "Transaction accepted"
                answer, final = messages.status(header, code, description), True
                summary = {"type": "Status", "code": code}
                for delivery in late:
                    self._schedule(delivery)
        if final:
            record.answer, record.answer_summary = answer, summary
        return answer

    def _plan_late_answers(self, record: Received, header: Header, message_type: str) -> list[Delivery]:
        url = self.modes.callback_url
        if not url:
            return []
        m = self.modes
        planned: list[tuple[str, bytes]] = []
        mode = m.late_answer
        if mode == "none" and record.asks_return_receipt:
            mode = "verify"
        if mode == "verify":
            planned.append(("Verify", messages.verify(header)))
        elif mode == "status":
            planned.append(("Status", messages.status(header, "010", "Transaction accepted")))
        elif mode == "error":
            planned.append(("Error", messages.error(header, m.late_error_code, None,
                                                    "Rejected by the pharmacy (simulated)")))
        if message_type == "CancelRx" and m.cancel_response != "none":
            approved = m.cancel_response == "approved"
            planned.append(("CancelRxResponse", messages.cancel_rx_response(
                header, approved, note="Simulated pharmacy answer",
                denial_reason_code=None if approved else "AA",
                denial_reason=None if approved else "Prescription already dispensed")))
        now = datetime.now(timezone.utc)
        return [Delivery(kind, url, raw, now, header.message_id) for kind, raw in planned]

    # ---- callbacks ----------------------------------------------------------------------------
    def _schedule(self, delivery: Delivery, delay: float | None = None) -> None:
        self.deliveries.append(delivery)
        wait = self.modes.late_status_after_s if delay is None else delay
        task = asyncio.get_running_loop().create_task(self._deliver(delivery, wait))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _deliver(self, delivery: Delivery, delay: float) -> None:
        await asyncio.sleep(delay)
        async with httpx.AsyncClient(timeout=10.0) as client:
            for attempt in range(3):
                try:
                    headers = {"Content-Type": "application/xml"}
                    if self.modes.callback_token:
                        headers["Authorization"] = f"Bearer {self.modes.callback_token}"
                    response = await client.post(delivery.url, content=delivery.raw, headers=headers)
                    delivery.http_status, delivery.error = response.status_code, None
                    if response.status_code < 500:
                        break
                except httpx.HTTPError as err:
                    delivery.error = f"{type(err).__name__}: {err}"
                await asyncio.sleep(0.2 * (attempt + 1))
        delivery.finished_at = datetime.now(timezone.utc)

    def inject(self, raw: bytes, delay: float) -> Delivery:
        if not self.modes.callback_url:
            raise ControlError("no callback_url is configured")
        header, message_type, _ = parse_message(raw)
        delivery = Delivery(message_type, self.modes.callback_url, raw, datetime.now(timezone.utc),
                            header.relates_to_message_id)
        self._schedule(delivery, delay)
        return delivery


def _asks_return_receipt(element: etree._Element) -> bool:
    for child in element:
        if isinstance(child.tag, str) and etree.QName(child.tag).localname == "ReturnReceipt":
            return (child.text or "").strip().lower() in ("1", "true", "y", "yes")
    return False


def _invalid(header: Header, message_type: str) -> tuple[str, str | None, str] | None:
    """What a network would reject outright: (Error code, DescriptionCode, Description) or None."""
    if message_type not in ACCEPTED_TYPES:
        return "900", None, f"{message_type} is not a message this network accepts from a prescriber"
    if header.to_qualifier != "P" or not (header.to.isdigit() and len(header.to) == 7):
        return "900", "002", "Receiver ID not on file (To must be a 7-digit NCPDPID with Qualifier P)"
    if message_type in ("CancelRx", "RxRenewalResponse", "RxChangeResponse") and not header.relates_to_message_id:
        return "900", None, f"a {message_type} needs RelatesToMessageID"
    return None


async def _read_body(request: Request) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _is_xml(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() in XML_TYPES


def create_app(*, allow_remote_callbacks: bool = False) -> Starlette:
    gateway = Gateway(allow_remote_callbacks=allow_remote_callbacks)

    async def script(request: Request) -> Response:
        if not _is_xml(request):
            return PlainTextResponse("send SCRIPT as application/xml", status_code=415)
        raw = await _read_body(request)
        if raw is None:
            return PlainTextResponse(f"a message over {MAX_BODY_BYTES} bytes is refused", status_code=413)
        record, header, message_type, problem = gateway.receive(raw, request.headers.get("idempotency-key"))
        modes = gateway.modes
        if modes.fail_next > 0:
            modes.fail_next -= 1
            record.http_statuses.append(500)
            return PlainTextResponse("simulated gateway failure", status_code=500)
        answer = gateway.answer(record, header, message_type, problem)
        if modes.timeout_next > 0:
            modes.timeout_next -= 1
            await asyncio.sleep(modes.hang_s)
        record.http_statuses.append(200)
        return Response(answer, media_type="application/xml")

    async def list_messages(request: Request) -> Response:
        wanted = request.query_params.get("type")
        return JSONResponse([r.as_json() for r in gateway.received.values() if not wanted or r.type == wanted])

    async def list_deliveries(request: Request) -> Response:
        return JSONResponse([d.as_json() for d in gateway.deliveries])

    async def control(request: Request) -> Response:
        if request.method == "POST":
            try:
                gateway.configure(json.loads(await request.body() or b"{}"))
            except (ValueError, ControlError) as err:  # json.JSONDecodeError is a ValueError
                return JSONResponse({"error": str(err)}, status_code=400)
        return JSONResponse(asdict(gateway.modes))

    async def inject(request: Request) -> Response:
        if not _is_xml(request):
            return PlainTextResponse("send SCRIPT as application/xml", status_code=415)
        raw = await _read_body(request)
        if raw is None:
            return PlainTextResponse("too large", status_code=413)
        try:
            delay = min(max(float(request.query_params.get("delay", "0")), 0.0), 3600.0)
            delivery = gateway.inject(raw, delay)
        except (ControlError, MessageError, ValueError) as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        return JSONResponse(delivery.as_json(), status_code=202)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[
        Route("/", script, methods=["POST"]),
        Route("/script", script, methods=["POST"]),
        Route("/messages", list_messages, methods=["GET"]),
        Route("/deliveries", list_deliveries, methods=["GET"]),
        Route("/control", control, methods=["GET", "POST"]),
        Route("/inject", inject, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])
    app.state.gateway = gateway
    return app

"""The outbound builders and the inbound side meet over real HTTP: every sendable fixture's NewRx
goes to the gateway simulator, whose synchronous answer is parsed and reflected into the
transmission Task; a CancelRx follows and its CancelRxResponse is reflected too."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from mappers.gateway_sim.process import GatewaySimProcess
from mappers.ncpdp.cancelrx import build_cancelrx
from mappers.ncpdp.envelope import parse_message
from mappers.ncpdp.inbound import StatusMessage, parse_inbound
from mappers.ncpdp.newrx import build_newrx
from mappers.ncpdp.reflect import business_status, reflect_delivery, transmission_task
from mappers.ncpdp.resources import resolve_context
from tests.fixtures import erx

XML = {"Content-Type": "application/xml"}


def message_id(xml: bytes) -> str:
    return parse_message(xml)[0].message_id


@pytest.fixture(scope="module")
def gateway():
    with GatewaySimProcess() as sim:
        yield sim


@pytest.mark.parametrize("name", erx.SENDABLE)
def test_newrx_is_accepted_and_reflected_as_accepted(gateway, name):
    mr = erx.medication_request(name)
    ctx = asyncio.run(resolve_context(mr, erx.reader()))
    xml = build_newrx(ctx, sender_id="TELEHEALTH01")
    answer = httpx.post(f"{gateway.url}/script", content=xml, headers=XML, timeout=10.0)
    assert answer.status_code == 200
    message = parse_inbound(answer.content)
    assert isinstance(message, StatusMessage)
    sent_id = message_id(xml)
    assert message.header.relates_to_message_id == sent_id
    task = transmission_task(mr, "NewRx", sent_id)
    changes = reflect_delivery(mr, message, task)
    assert business_status(changes.task) in ("accepted", "sent")


def test_cancelrx_after_newrx_relates_to_it(gateway):
    mr = erx.medication_request("amlodipine-tablet")
    ctx = asyncio.run(resolve_context(mr, erx.reader()))
    newrx = build_newrx(ctx, sender_id="TELEHEALTH01")
    httpx.post(f"{gateway.url}/script", content=newrx, headers=XML, timeout=10.0)
    cancelled = {**mr, "status": "cancelled"}
    ctx = asyncio.run(resolve_context(cancelled, erx.reader()))
    cancel = build_cancelrx(ctx, original_message_id=message_id(newrx), sender_id="TELEHEALTH01")
    answer = httpx.post(f"{gateway.url}/script", content=cancel, headers=XML, timeout=10.0)
    assert answer.status_code == 200
    received = [m for m in gateway.messages() if m["message_id"] == message_id(cancel)]
    assert received and received[0]["type"] == "CancelRx"

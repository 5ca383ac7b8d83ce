"""`python -m fhir_server erx worker`: the delivery worker runs on its own, without the HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fhir_server.erx.config import ErxSettings
from fhir_server.erx.service import erx_components
from fhir_server.erx.trigger import transmissions
from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store
from mappers.gateway_sim.process import GatewaySimProcess
from mappers.ncpdp.reflect import business_status, transmitted_message_id
from tests.fixtures import erx
from tests.support import ROOT


async def _queue_prescription(db: str, gateway_url: str) -> str:
    """Store the fixtures and write a prescription through the e-Rx write hook (no server)."""
    parts = erx_components(ErxSettings(gateway_url=gateway_url), open_store(db, indexer=extract_index))
    await parts.store.open()
    try:
        async with parts.store.unit_of_work() as uow:
            for reference in erx._directory():
                kind, id = reference.split("/")
                await uow.write(kind, id, erx.resource(reference), method="PUT")
            mr = erx.medication_request("amlodipine-tablet")
            await uow.write("MedicationRequest", mr["id"], mr, method="PUT")
        return mr["id"]
    finally:
        await parts.stop()
        await parts.store.close()


async def _tasks(db: str, mr_id: str) -> list[dict]:
    store = open_store(db, indexer=extract_index)
    await store.open()
    try:
        async with store.unit_of_work() as uow:
            return await transmissions(uow, mr_id)
    finally:
        await store.close()


@pytest.fixture()
def gateway():
    with GatewaySimProcess() as sim:
        yield sim


async def test_the_standalone_worker_delivers_what_the_server_queued(tmp_path, gateway):
    db = f"sqlite:///{tmp_path / 'fhir.db'}"
    mr_id = await _queue_prescription(db, f"{gateway.url}/script")
    run = subprocess.run([sys.executable, "-m", "fhir_server", "erx", "worker", "--database", db,
                          "--erx-gateway", f"{gateway.url}/script", "--once"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "ran 1 due job" in run.stdout
    [task] = await _tasks(db, mr_id)
    assert business_status(task) in ("accepted", "verified")
    assert [m["message_id"] for m in gateway.messages()] == [transmitted_message_id(task)]


def test_the_worker_needs_a_gateway(tmp_path):
    run = subprocess.run([sys.executable, "-m", "fhir_server", "erx", "worker",
                          "--database", f"sqlite:///{tmp_path / 'x.db'}", "--once"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("FHIR_ERX")})
    assert run.returncode == 2
    assert "--erx-gateway" in run.stderr

"""Audit retention: `audit purge` removes the oldest AuditEvents for good, and the kept trail
still verifies (its first kept event follows purged ones)."""

from __future__ import annotations

import asyncio
import time

from fhir_server.audit.cli import verify_trail
from fhir_server.audit.events import REST, AuditRecord, rest_subtype
from fhir_server.audit.trail import AuditTrail
from fhir_server.search.extract import extract_index
from fhir_server.search.parse import parse_search
from fhir_server.storage import HistoryQuery, open_store
from fhir_server.storage.serialization import now_instant, utc_now_ms


def _record(n: int) -> AuditRecord:
    return AuditRecord(type=REST, subtype=rest_subtype("read"), action="R", outcome="0", recorded=now_instant(),
                       client_id="app", resources=[f"Patient/p{n}/_history/1"], patients=[f"p{n}"])


def test_purge_removes_what_is_older_and_the_rest_still_verifies(tmp_path):
    async def run():
        store = open_store(f"sqlite:///{tmp_path / 'fhir.db'}", indexer=extract_index)
        await store.open()
        try:
            trail = AuditTrail(store)
            for n in range(5):
                trail.record(_record(n))
            await trail.flush()
            time.sleep(0.01)
            cut = utc_now_ms()
            time.sleep(0.01)
            for n in range(5, 8):
                trail.record(_record(n))
            await trail.flush()
            removed = await store.purge_before("AuditEvent", cut)
            kept = await store.history(HistoryQuery(resource_type="AuditEvent", count=100))
            search = await store.search(parse_search(["AuditEvent"], [("patient", "Patient/p1")]))
            result = await verify_trail(store)
            return removed, kept, search, result
        finally:
            await store.close()

    removed, kept, search, result = asyncio.run(run())
    assert removed == 5
    assert len(kept.versions) == 3
    assert not search.matches  # the purged events' index rows went with them
    assert result.first_break is None and result.oldest == 6

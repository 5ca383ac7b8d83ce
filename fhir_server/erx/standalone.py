"""`python -m fhir_server erx worker`: the e-prescribing outbox worker on its own, without the HTTP
server (the server also runs one; several workers may run at once: jobs are leased, each runs once).
"""

from __future__ import annotations

import logging

from ..search.extract import extract_index
from ..storage import open_store
from .config import ErxSettings
from .service import erx_components

log = logging.getLogger("fhir_server.erx")


async def run_worker(database_url: str, settings: ErxSettings, *, once: bool = False) -> list[str]:
    if not settings.enabled:
        raise ValueError("the worker needs a gateway: --erx-gateway URL (or FHIR_ERX_GATEWAY)")
    # The worker writes Tasks and MedicationRequests: the store indexes them as the server does.
    erx = erx_components(settings, open_store(database_url, indexer=extract_index))
    assert erx.worker is not None
    await erx.store.open()
    try:
        if once:
            claimed = await erx.worker.run_once()
            return [f"ran {claimed} due job(s)"]
        log.info("e-prescribing worker running (Ctrl-C stops it)")
        await erx.worker.run_forever()
        return []
    finally:
        await erx.stop()
        await erx.store.close()

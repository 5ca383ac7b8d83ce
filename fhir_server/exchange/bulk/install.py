"""What the app mounts for bulk export: `bulk_components(store, settings)` gives the routes, the
outbox worker that runs "bulk.export" jobs, and the retention sweep (on start, then hourly).

app.py:
    bulk = bulk_components(store, settings)      # after `store = ValidatingStore(...)`
    routes=[..., *bulk.routes, *ROUTES]          # before the generic ROUTES
    app.state.bulk = bulk
    bulk.start()  /  await bulk.stop()           # in the lifespan, beside erx.start()/stop()

Settings come from the environment (the lead may add matching `serve` flags):
FHIR_EXPORT_MAX_FILE_BYTES (default 100 MB), FHIR_EXPORT_RETENTION (seconds, default 86400),
FHIR_EXPORT_LEASE_SECONDS (default 600: a job running longer than 95% of it is cut off and goes on
from its checkpoint in the next attempt; a job whose server died is taken over, from its
checkpoint, when its lease ends), FHIR_EXPORT_RETRY_AFTER (seconds a client should wait between
polls, default 2), FHIR_EXPORT_SETTLE_SECONDS (how long after transactionTime a job waits before
reading: cutoff.py; default 0), FHIR_EXPORT_DIR
(default beside the SQLite file: `<db>.exports`).

A job's transactionTime is its kick-off's unit-of-work stamp (OutboxJob.created_at; cutoff.py says
why that loses no change), so a rerun of the same job keeps the same cut-off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from ...outbox import OutboxWorker
from ...outbox.worker import Backoff
from ...storage.base import OutboxJob
from ...storage.serialization import format_instant
from . import files
from .cutoff import barrier, settle_default
from .jobs import JOB_KIND, ExportRequest
from .runner import DEFAULT_MAX_FILE_BYTES, Cancelled, manifest, run_export

log = logging.getLogger("fhir_server.bulk")

SWEEP_EVERY = 3600.0


@dataclass(frozen=True)
class BulkSettings:
    root: Path
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    retention_seconds: float = 24 * 3600.0
    lease_seconds: float = 600.0
    retry_after: float = 2.0
    settle_seconds: float = 0.0

    @classmethod
    def from_env(cls, database_url: str, workers: int = 1) -> "BulkSettings":
        env = os.environ
        settle = env.get("FHIR_EXPORT_SETTLE_SECONDS")
        return cls(
            root=files.export_root(database_url),
            max_file_bytes=int(env.get("FHIR_EXPORT_MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES)),
            retention_seconds=float(env.get("FHIR_EXPORT_RETENTION", 24 * 3600)),
            lease_seconds=float(env.get("FHIR_EXPORT_LEASE_SECONDS", 600)),
            retry_after=float(env.get("FHIR_EXPORT_RETRY_AFTER", 2)),
            settle_seconds=float(settle) if settle is not None else settle_default(database_url, workers),
        )


@dataclass
class BulkComponents:
    store: object
    settings: BulkSettings
    worker: OutboxWorker
    routes: list
    _sweep: asyncio.Task | None = None

    def start(self) -> None:
        self.settings.root.mkdir(parents=True, exist_ok=True)
        self.worker.start()
        self._sweep = asyncio.get_running_loop().create_task(self._sweep_loop(), name="bulk-export-sweep")

    async def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        await self.worker.stop()

    async def _sweep_loop(self) -> None:
        while True:
            try:
                removed = await asyncio.to_thread(files.sweep, self.settings.root, self.settings.retention_seconds)
                if removed:
                    log.info("bulk export: %d expired job folders removed", removed)
            except Exception as exc:  # noqa: BLE001 - a failed sweep runs again later
                log.warning("bulk export sweep failed: %s", type(exc).__name__)
            await asyncio.sleep(min(SWEEP_EVERY, max(1.0, self.settings.retention_seconds / 4)))

    def folder(self, job_id: str) -> Path:
        return files.job_dir(self.settings.root, job_id)


def export_handler(store, settings: BulkSettings):
    async def handle(job: OutboxJob) -> None:
        request = ExportRequest.from_payload(job.payload)
        request.transaction_time = format_instant(job.created_at)
        folder = files.job_dir(settings.root, job.id)
        if files.cancelled(folder) or (folder / files.MANIFEST).exists():
            return
        folder.mkdir(parents=True, exist_ok=True)  # an earlier attempt's files stay: the runner goes on from them
        await barrier(store, job.created_at, settings.settle_seconds)
        last = [0.0]

        def on_progress(p) -> None:
            now = time.monotonic()
            if now - last[0] < 1.0:
                return
            last[0] = now
            files.write_atomic(folder / files.PROGRESS, orjson.dumps({
                "written": p.total_written, "type": p.current_type, "types_done": p.types_done,
                "types_total": p.types_total}))

        try:
            result = await run_export(store, request, folder, max_file_bytes=settings.max_file_bytes,
                                      on_progress=on_progress, is_cancelled=lambda: files.cancelled(folder))
        except Cancelled:
            files.clean(folder, keep=(files.CANCELLED,))
            return
        if files.cancelled(folder):
            files.clean(folder, keep=(files.CANCELLED,))
            return
        body = manifest(request, result, lambda name: f"{request.base}/$export-file/{job.id}/{name}")
        files.write_atomic(folder / files.MANIFEST, orjson.dumps(body))
        (folder / files.PROGRESS).unlink(missing_ok=True)
        (folder / files.CHECKPOINT).unlink(missing_ok=True)
        log.info("bulk export job %s: %d files, %d deleted files", job.id, len(result.output), len(result.deleted))

    return handle


def bulk_components(store, settings) -> BulkComponents:
    """`settings`: the server's Settings (its database_url places the files)."""
    from ...api.bulk_routes import ROUTES

    bulk_settings = BulkSettings.from_env(settings.database_url, getattr(settings, "workers", 1))
    worker = OutboxWorker(store, {JOB_KIND: export_handler(store, bulk_settings)},
                          lease_seconds=bulk_settings.lease_seconds, handler_timeout=bulk_settings.lease_seconds * 0.95,
                          max_attempts=3, concurrency=2, backoff=Backoff(base=2.0, cap=60.0), poll_interval=1.0)
    return BulkComponents(store, bulk_settings, worker, ROUTES)

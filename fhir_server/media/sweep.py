"""The orphan sweep: blobs that no version of their Binary records.

An upload writes its blob first and then the Binary in a unit of work; when that unit of work
fails the route deletes the blob at once (delete-on-rollback). Only a crash between the two
leaves a blob nobody references: this sweep, run in the background at start-up, removes such
blobs once they are older than any upload in flight could be (an hour by default). A blob is
referenced when any version of the Binary whose id its key starts with names it, so the bytes of
older versions and deleted Binaries stay readable through history.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from ..storage import HistoryQuery, ResourceReader
from ..storage.blobs import BlobStore, FileBlobStore, binary_id_of

log = logging.getLogger("fhir_server.media")

GRACE = timedelta(hours=1)


async def referenced(reader: ResourceReader, key: str) -> bool:
    needle = key.encode("ascii")
    at_or_before = None
    while True:
        page = await reader.history(HistoryQuery("Binary", binary_id_of(key), at_or_before_seq=at_or_before,
                                                 count=100))
        if any(v.body is not None and needle in v.body for v in page.versions):
            return True
        if page.next_seq is None:
            return False
        at_or_before = page.next_seq


async def sweep_orphans(blobs: BlobStore, reader: ResourceReader, *, grace: timedelta = GRACE,
                        now: datetime | None = None) -> int:
    """Delete the blobs older than `grace` that no Binary version references; the number removed."""
    cutoff = (now or datetime.now(timezone.utc)) - grace
    orphans = [key async for key, written in blobs.listing()
               if written < cutoff and not await referenced(reader, key)]
    for key in orphans:
        await blobs.delete(key)
    if isinstance(getattr(blobs, "inner", blobs), FileBlobStore):  # also behind the encrypting wrapper
        for path in blobs.stale_uploads(cutoff):  # temporary files of uploads cut off by a crash
            path.unlink(missing_ok=True)
    if orphans:
        log.info("blob sweep: %d unreferenced blobs removed", len(orphans))
    return len(orphans)

"""Where export files live and how they are written: `<db file>.exports/<job id>/` beside a SQLite
database (FHIR_EXPORT_DIR overrides; other backends default to ./data/exports).

A job's folder holds its NDJSON files (`Type-N.ndjson`; deletions `Type.deleted-N.ndjson`;
written as `.NAME.part` and renamed when complete), `checkpoint.ndjson` (the files completed so far
and where to go on: checkpoint.py), `progress.json` (resources written so far, rewritten
atomically), `manifest.json` (written last: its presence means the export is complete),
`cancelled` (a DELETE: the job is gone for its client; the runner stops when it sees it) and
`polled` (its mtime is the client's last status request: shared by every server process, so the
429 "polled too fast" answer holds across `serve --workers N`).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import orjson

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
CHECKPOINT = "checkpoint.ndjson"
CANCELLED = "cancelled"
POLLED = "polled"
FILE_NAME = re.compile(r"^[A-Za-z]{1,64}(\.deleted)?-[0-9]{1,6}\.ndjson$")
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def export_root(database_url: str) -> Path:
    configured = os.environ.get("FHIR_EXPORT_DIR")
    if configured:
        return Path(configured)
    if database_url.startswith("sqlite:"):
        path = urlparse(database_url).path  # as SQLiteStore.from_url reads it
        path = path[1:] if path.startswith("/") else path
        return Path(path + ".exports")
    return Path("data/exports")


def job_dir(root: Path, job_id: str) -> Path:
    if not JOB_ID.match(job_id):
        raise ValueError("not a job id")
    return root / job_id


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def clean(folder: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove everything in the job's folder but `keep` (a new attempt starts from nothing)."""
    if not folder.exists():
        return
    for entry in folder.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def polled_too_soon(folder: Path, min_interval: float, now: float | None = None) -> bool:
    """Whether the last status request for this job came less than `min_interval` seconds ago;
    records this one (when allowed). One stat and one utime: cheap enough for every poll. Two
    processes answering the same instant may both allow it; a burst of polls is still caught."""
    now = time.time() if now is None else now
    marker = folder / POLLED
    try:
        last = marker.stat().st_mtime
    except FileNotFoundError:
        last = None
    if last is not None and 0 <= now - last < min_interval:
        return True
    try:
        if last is None:
            folder.mkdir(parents=True, exist_ok=True)
            marker.touch()
        os.utime(marker, (now, now))
    except FileNotFoundError:  # the folder was swept or cancelled meanwhile: nothing to remember
        pass
    return False


def cancel(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CANCELLED).touch()
    clean(folder, keep=(CANCELLED,))


def cancelled(folder: Path) -> bool:
    return (folder / CANCELLED).exists()


def sweep(root: Path, retention_seconds: float, now: float | None = None) -> int:
    """Remove the folders of jobs finished (manifest) or cancelled more than `retention_seconds`
    ago; returns how many. Running jobs (neither marker) are left alone."""
    if not root.exists():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for marker in (MANIFEST, CANCELLED):
            try:
                age = now - (folder / marker).stat().st_mtime
            except FileNotFoundError:
                continue
            if age > retention_seconds:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
                break
    return removed

"""`backup` and `restore` of the embedded store: the database and its blobs in one tar file.

The database is copied with SQLite's online backup API (sqlite3_backup, all pages in one step, so
one consistent snapshot) while the server keeps running; WAL lets it go on writing meanwhile.
With SQLCipher the copy is made into a database keyed with the same key, so the backup's pages are
as encrypted as the store's (SQLCipher copies the ciphertext pages through its codec).

Blobs are copied after the snapshot, as the files they are (already encrypted when a key is
configured). A Binary's blob is written before the Binary that names it and a named blob is never
deleted, so every blob the snapshot references is there; blobs written after the snapshot come
along as orphans, which the server's sweep removes after restore.

    FILE (tar):  manifest.json   {"format": 1, "created": ..., "encrypted": bool, "key_id": kid, "blobs": n}
                 fhir.db         the database snapshot
                 blobs/<xx>/<key> every blob file

Restore checks that the snapshot opens with the configured key ring before it replaces anything,
and refuses to overwrite an existing database unless told to (--force), and a database in use
in any case.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..storage.blobs.base import valid_key
from ..storage.sqlite import driver
from . import keyring
from .keyring import KeyRingError
from .offline import ensure_not_in_use
from .rotate import sqlite_path

FORMAT = 1
_DB_MEMBER = "fhir.db"
_MANIFEST = "manifest.json"


class BackupError(Exception):
    """A refused backup or restore; one line for stderr."""


@dataclass
class BackupSummary:
    file: str
    encrypted: bool
    key_id: str | None
    blobs: int
    database_bytes: int


def _require_sqlite(database_url: str) -> str:
    path = sqlite_path(database_url)
    if path is None:
        raise BackupError("backup and restore cover the embedded SQLite store; for MongoDB use mongodump/mongorestore "
                          "or your platform's backups (README: Encryption at rest and backups)")
    return path


def backup(database_url: str, to: str | Path) -> BackupSummary:
    path = _require_sqlite(database_url)
    to = Path(to)
    if not Path(path).exists():
        raise BackupError(f"{path} does not exist")
    if to.exists():
        raise BackupError(f"{to} exists: a backup never overwrites a file")
    to.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{to.name}.", dir=to.parent))
    try:
        ring = keyring.current()
        source = driver.connect(path)
        try:
            kid = driver.key_id_of(path) if ring is not None else None
            snapshot = str(work / _DB_MEMBER)
            if ring is None:
                target = sqlite3.connect(snapshot)
            else:
                target = driver.open_with_key(snapshot, ring.key(kid))  # the same key: pages copied as they are
            try:
                source.backup(target)
                target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
            finally:
                target.close()
        finally:
            source.close()
        blob_root = Path(f"{path}.blobs")
        blobs = sorted(p for p in blob_root.glob("*/*") if p.parent.name != "tmp" and valid_key(p.name))
        manifest = {"format": FORMAT, "created": datetime.now(timezone.utc).isoformat(),
                    "encrypted": ring is not None, "key_id": kid, "blobs": len(blobs)}
        partial = work / "backup.tar"
        with tarfile.open(partial, "w") as tar:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(_MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(datetime.now().timestamp()), 0o600
            tar.addfile(info, io.BytesIO(data))
            tar.add(snapshot, _DB_MEMBER)
            for blob in blobs:
                try:
                    tar.add(blob, f"blobs/{blob.parent.name}/{blob.name}")
                except FileNotFoundError:  # an orphan swept meanwhile: referenced blobs are never removed
                    pass
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, to)
        return BackupSummary(str(to), ring is not None, kid, len(blobs), os.path.getsize(snapshot))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def restore(from_file: str | Path, database_url: str, *, force: bool = False) -> BackupSummary:
    path = _require_sqlite(database_url)
    source = Path(from_file)
    if not source.is_file():
        raise BackupError(f"{source} is not a file")
    exists = any(Path(p).exists() for p in (path, f"{path}-wal", f"{path}.blobs"))
    if exists and not force:
        raise BackupError(f"{path} exists: restore over it only with --force")
    ensure_not_in_use(path, "restoring over it")
    target_dir = Path(path).parent
    target_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".restore.", dir=target_dir))
    try:
        try:
            with tarfile.open(source, "r") as tar:
                members = tar.getmembers()
                for member in members:
                    if not _expected(member):
                        raise BackupError(f"{source}: unexpected member {member.name!r}: not a backup of this server")
                tar.extractall(work, members=members, filter="data")
        except tarfile.TarError as exc:
            raise BackupError(f"{source}: not a readable backup ({exc})") from None
        try:
            manifest = json.loads((work / _MANIFEST).read_text())
        except (OSError, ValueError):
            raise BackupError(f"{source}: no manifest: not a backup of this server") from None
        if manifest.get("format") != FORMAT:
            raise BackupError(f"{source}: backup format {manifest.get('format')!r}, this server reads {FORMAT}")
        snapshot = work / _DB_MEMBER
        try:
            driver.connect(str(snapshot)).close()  # the configured key ring must open it before anything is replaced
        except driver.StoreKeyError as exc:
            raise BackupError(f"the backup's database does not open: {exc}") from None
        finally:
            driver.forget(str(snapshot))
        blobs = work / "blobs"
        blobs.mkdir(exist_ok=True)
        for side in (f"{path}-wal", f"{path}-shm"):
            Path(side).unlink(missing_ok=True)
        os.replace(snapshot, path)
        old_blobs = Path(f"{path}.blobs")
        if old_blobs.exists():
            old_blobs.rename(work / "replaced-blobs")
        blobs.rename(old_blobs)
        fd = os.open(target_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        driver.forget(path)
        count = sum(1 for _ in old_blobs.glob("*/*"))
        return BackupSummary(str(source), bool(manifest.get("encrypted")), manifest.get("key_id"), count,
                             os.path.getsize(path))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _expected(member: tarfile.TarInfo) -> bool:
    if member.name in (_MANIFEST, _DB_MEMBER):
        return member.isfile()
    parts = member.name.split("/")
    if parts[0] != "blobs":
        return False
    if len(parts) == 3:
        return member.isfile() and valid_key(parts[2]) and parts[1] == parts[2][:2]
    return member.isdir() and len(parts) <= 2


__all__ = ["BackupError", "BackupSummary", "KeyRingError", "backup", "restore"]

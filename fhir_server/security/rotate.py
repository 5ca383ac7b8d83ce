"""`keys rotate`: a new primary key, the database re-keyed under it, every blob re-encrypted.

Order, so that a crash at any point leaves data readable with the key file as it then is:
1. the new ring (old keys kept) replaces the key file atomically;
2. the database is re-keyed (PRAGMA rekey), or, if it was never encrypted, exported into an
   encrypted copy (sqlcipher_export) that replaces it; the store opens under any key of the ring,
   so a crash between 1 and 2 leaves it under the old key, still in the ring;
3. each blob is rewritten under the new key (file blobs are replaced atomically, one by one).
Run again after a crash, it adds yet another key and finishes the job.

The server must be stopped: re-keying pages under a running server's connections would break
them. The database must not be open elsewhere (offline.py) and is held in exclusive locking mode
for the whole rotation, so a server started meanwhile waits and then fails rather than read a
half-rotated store. Old keys stay in the key file: remove them by hand once no backup written
under them is still wanted.

MongoDB: only the key ring changes (new GridFS blobs use the new key); existing GridFS blobs keep
their keys, which must stay in the ring, because GridFS cannot replace a file atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..storage.blobs.encrypted import EncryptedBlobStore
from ..storage.blobs.files import FileBlobStore
from ..storage.sqlite import driver
from .keyring import KeyRing, KeyRingError
from .offline import ensure_not_in_use


@dataclass
class Rotation:
    new_kid: str
    old_kids: list[str]
    database: str  # what happened to the database: "re-keyed", "encrypted", "none (MongoDB)", ...
    blobs_rewritten: int = 0
    blobs_already: int = 0


def sqlite_path(database_url: str) -> str | None:
    """The file a sqlite:/// URL names (the store's own rule), None for other URLs."""
    if not database_url.startswith("sqlite:"):
        return None
    from ..storage.sqlite.store import SQLiteStore

    return SQLiteStore.from_url(database_url).path


async def rotate(database_url: str, key_file: str | Path) -> Rotation:
    old = KeyRing.load(key_file)
    path = sqlite_path(database_url)
    if path is None:
        new = old.with_new_primary()
        new.replace(key_file)
        return Rotation(new.primary, list(old.keys), "unchanged (MongoDB: encrypt it with the storage engine)")
    if not Path(path).exists():
        raise KeyRingError(f"{path} does not exist")
    ensure_not_in_use(path, "rotating keys")
    plain = driver.is_plain_sqlite(path)
    conn = driver.open_with_key(path, None) if plain else driver.connect(path, ring=old)
    try:
        _hold_exclusively(conn)
        new = old.with_new_primary()
        new.replace(key_file)
        if plain:
            _export_encrypted(conn, path, new.primary_key)
            conn.close()
            conn = None
            _swap_in(path)
            conn = driver.open_with_key(path, new.primary_key)
            _hold_exclusively(conn)  # kept while the blobs are rewritten
            state = "encrypted (it was not)"
        else:
            conn.execute(f"PRAGMA rekey = \"x'{new.primary_key.hex()}'\"")
            state = "re-keyed"
        driver.forget(path)
        rotation = Rotation(new.primary, list(old.keys), state)
        blobs = EncryptedBlobStore(FileBlobStore.beside(path), lambda: new)
        await blobs.open()
        async for key, _ in blobs.listing():
            if await blobs.reencrypt(key):
                rotation.blobs_rewritten += 1
            else:
                rotation.blobs_already += 1
        return rotation
    finally:
        if conn is not None:
            conn.close()


def _hold_exclusively(conn) -> None:
    """Exclusive locking mode: the lock this transaction takes is kept until the connection closes,
    so no server can open the database meanwhile."""
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    conn.execute("COMMIT")


def _export_encrypted(conn, path: str, key: bytes) -> None:
    """Copy a plain database into `<path>.encrypting` under `key` (SQLCipher's documented way to
    encrypt an existing database: https://www.zetetic.net/sqlcipher/sqlcipher-api/#sqlcipher_export)."""
    target = f"{path}.encrypting"
    for leftover in (target, f"{target}-wal", f"{target}-shm", f"{target}-journal"):
        Path(leftover).unlink(missing_ok=True)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute("ATTACH DATABASE ? AS encrypted KEY ?", (target, f"x'{key.hex()}'"))
    try:
        conn.execute("SELECT sqlcipher_export('encrypted')").fetchone()
        conn.execute(f"PRAGMA encrypted.user_version = {int(version)}")  # sqlcipher_export leaves it out
    finally:
        conn.execute("DETACH DATABASE encrypted")


def _swap_in(path: str) -> None:
    """Replace the plain database (closed, its WAL checkpointed into it and so into the copy)."""
    for side in (f"{path}-wal", f"{path}-shm"):
        Path(side).unlink(missing_ok=True)
    os.replace(f"{path}.encrypting", path)
    fd = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

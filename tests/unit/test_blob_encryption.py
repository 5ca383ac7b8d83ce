"""Blobs encrypted at rest: the chunked AES-GCM format over the file blob store (encrypted.py, cipher.py)."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

import pytest

from fhir_server.security.keyring import KeyRing, KeyRingError
from fhir_server.storage.blobs import BlobIntegrityError, EncryptedBlobStore, FileBlobStore
from fhir_server.storage.blobs.cipher import CHUNK, MAGIC, TAG

MARKER = b"MARKER-7f3a-blob-plaintext"


def key_for(binary_id: str = "bin") -> str:
    return f"{binary_id}.{uuid.uuid4().hex}"


async def pieces(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def collect(stream) -> bytes:
    return b"".join([c async for c in stream])


def payload(n: int) -> bytes:
    # a marker in every chunk, the rest random: any plaintext left on disk would show
    out = bytearray()
    while len(out) < n:
        out += MARKER + os.urandom(4000)
    return bytes(out[:n])


@pytest.fixture()
def ring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture()
async def files(tmp_path):
    store = FileBlobStore(tmp_path / "fhir.db.blobs")
    await store.open()
    return store


@pytest.fixture()
def blobs(files, ring):
    return EncryptedBlobStore(files, lambda: ring)


def stored_bytes(files: FileBlobStore, key: str) -> bytes:
    return files.path_of(key).read_bytes()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 12345])
async def test_round_trip_keeps_plaintext_size_and_hash(blobs, files, size):
    data = payload(size)
    key = key_for()
    info = await blobs.put(key, pieces(data, 10_000))
    assert info.size == size
    assert info.sha1 == base64.b64encode(hashlib.sha1(data).digest()).decode()
    assert await blobs.size(key) == size
    assert await collect(blobs.read(key)) == data
    raw = stored_bytes(files, key)
    assert raw.startswith(MAGIC) and MARKER not in raw
    assert len(raw) > size  # header and a tag per chunk
    # a fresh wrapper (no cached header) computes the same plaintext size from the stored size alone
    assert await EncryptedBlobStore(files, lambda: None).size(key) == size


async def test_one_large_piece_streams_in_chunks(blobs, files):
    data = payload(5 * CHUNK + 7)
    key = key_for()
    await blobs.put(key, pieces(data, len(data)))  # e.g. a whole scrubbed photo at once
    assert await collect(blobs.read(key)) == data
    chunks = -(-len(data) // CHUNK)
    assert len(stored_bytes(files, key)) - len(data) - chunks * TAG < 100  # only the header besides the tags


@pytest.mark.parametrize("start,end", [
    (0, 10), (CHUNK - 5, CHUNK + 5), (CHUNK, 2 * CHUNK), (CHUNK + 1, 3 * CHUNK - 1), (2 * CHUNK - 1, None),
    (3 * CHUNK + 100, None), (0, None), (10, 11), (3 * CHUNK + 12344, None)])
async def test_range_reads_across_chunk_boundaries(blobs, start, end):
    data = payload(3 * CHUNK + 12345)
    key = key_for()
    await blobs.put(key, pieces(data, 65_000))
    assert await collect(blobs.read(key, start, end)) == data[start:end]


async def test_range_read_decrypts_only_the_chunks_it_needs(blobs, files):
    data = payload(10 * CHUNK)
    key = key_for()
    await blobs.put(key, pieces(data, CHUNK))
    asked: list[tuple[int, int | None]] = []
    original = files.read

    def spying(k, start=0, end=None):
        asked.append((start, end))
        return original(k, start, end)

    files.read = spying
    assert await collect(blobs.read(key, 5 * CHUNK + 3, 5 * CHUNK + 10)) == data[5 * CHUNK + 3:5 * CHUNK + 10]
    start, end = asked[-1]
    assert end - start == CHUNK + TAG  # one chunk read, not the blob


@pytest.mark.parametrize("where", ["first chunk", "middle chunk", "last chunk", "header kid", "tag"])
async def test_one_altered_byte_fails_the_read(blobs, files, where):
    data = payload(3 * CHUNK + 99)
    key = key_for()
    await blobs.put(key, pieces(data, 50_000))
    path = files.path_of(key)
    raw = bytearray(path.read_bytes())
    header = len(raw) - len(data) - 4 * TAG
    offset = {"first chunk": header + 10, "middle chunk": header + CHUNK + TAG + 500,
              "last chunk": len(raw) - TAG - 3, "header kid": 15, "tag": len(raw) - 1}[where]
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))
    fresh = EncryptedBlobStore(files, lambda: blobs._key_ring())
    with pytest.raises((BlobIntegrityError, KeyRingError)):
        await collect(fresh.read(key))


async def test_truncation_at_a_chunk_boundary_and_reordering_fail(blobs, files):
    data = payload(3 * CHUNK)
    key = key_for()
    await blobs.put(key, pieces(data, CHUNK))
    path = files.path_of(key)
    raw = path.read_bytes()
    header = len(raw) - len(data) - 3 * TAG
    sealed = CHUNK + TAG
    path.write_bytes(raw[:header + 2 * sealed])  # the last chunk dropped: chunk 1 was not sealed as final
    with pytest.raises(BlobIntegrityError):
        await collect(EncryptedBlobStore(files, lambda: blobs._key_ring()).read(key))
    c = [raw[header + i * sealed:header + (i + 1) * sealed] for i in range(3)]
    path.write_bytes(raw[:header] + c[1] + c[0] + c[2])  # two chunks swapped
    with pytest.raises(BlobIntegrityError):
        await collect(EncryptedBlobStore(files, lambda: blobs._key_ring()).read(key))


async def test_a_blob_moved_under_another_key_fails(blobs, files):
    a, b = key_for("a"), key_for("b")
    await blobs.put(a, pieces(b"photo A", 100))
    await blobs.put(b, pieces(b"photo B", 100))
    files.path_of(b).write_bytes(files.path_of(a).read_bytes())
    with pytest.raises(BlobIntegrityError):
        await collect(EncryptedBlobStore(files, lambda: blobs._key_ring()).read(b))


async def test_clear_blobs_from_before_the_key_stay_readable_and_rotation_reencrypts(files, ring):
    clear = EncryptedBlobStore(files, lambda: None)
    old_data = payload(2 * CHUNK + 5)
    old = key_for("old")
    await clear.put(old, pieces(old_data, 30_000))
    assert MARKER in stored_bytes(files, old)  # no key: stored as is
    current = {"ring": ring}
    blobs = EncryptedBlobStore(files, lambda: current["ring"])
    assert await blobs.size(old) == len(old_data)
    assert await collect(blobs.read(old, 5, CHUNK + 9)) == old_data[5:CHUNK + 9]
    new = key_for("new")
    new_data = payload(CHUNK + 1)
    await blobs.put(new, pieces(new_data, 4096))

    current["ring"] = ring.with_new_primary()  # rotation: a new primary, the old key kept
    assert await collect(blobs.read(new)) == new_data  # still readable under the old key
    assert await blobs.reencrypt(old) and await blobs.reencrypt(new)
    assert not await blobs.reencrypt(new)  # already under the primary
    for key, data in ((old, old_data), (new, new_data)):
        raw = stored_bytes(files, key)
        assert MARKER not in raw and current["ring"].primary.encode() in raw[:100]
        assert await collect(EncryptedBlobStore(files, lambda: current["ring"]).read(key)) == data
    without_old = KeyRing(current["ring"].primary, {current["ring"].primary: current["ring"].primary_key})
    assert await collect(EncryptedBlobStore(files, lambda: without_old).read(new)) == new_data


async def test_encrypted_blob_without_the_key_is_refused(blobs, files):
    key = key_for()
    await blobs.put(key, pieces(b"secret", 10))
    with pytest.raises(KeyRingError):
        await collect(EncryptedBlobStore(files, lambda: None).read(key))
    with pytest.raises(KeyRingError):
        await collect(EncryptedBlobStore(files, lambda: KeyRing.generate()).read(key))  # its kid is not in that ring


async def test_failed_upload_keeps_nothing(blobs, files):
    async def broken():
        yield b"x" * (CHUNK * 2)
        raise RuntimeError("client gone")

    key = key_for()
    with pytest.raises(RuntimeError):
        await blobs.put(key, broken())
    assert await blobs.size(key) is None
    assert list((files.root / "tmp").iterdir()) == []


def test_key_ring_file(tmp_path):
    ring = KeyRing.generate()
    path = tmp_path / "keys.json"
    ring.write_new(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert KeyRing.load(path) == ring
    with pytest.raises(KeyRingError, match="never overwritten"):
        ring.write_new(path)
    rotated = ring.with_new_primary()
    rotated.replace(path)
    loaded = KeyRing.load(path)
    assert loaded.primary != ring.primary and set(loaded.keys) == {ring.primary, loaded.primary}
    assert ring.primary_key.hex() not in repr(ring)
    path.write_text('{"primary": "a", "keys": {"a": "c2hvcnQ="}}')
    with pytest.raises(KeyRingError, match="expected 32"):
        KeyRing.load(path)


async def test_the_sweep_removes_stale_uploads_behind_the_wrapper(tmp_path, files, ring):
    from datetime import datetime, timedelta, timezone

    from fhir_server.media.sweep import sweep_orphans
    from fhir_server.search.extract import extract_index
    from fhir_server.storage.sqlite.store import SQLiteStore

    store = SQLiteStore(str(tmp_path / "fhir.db"), indexer=extract_index)
    await store.open()
    try:
        stale = files.root / "tmp" / ".upload-crashed"
        stale.write_bytes(b"half an upload")
        old = (datetime.now(timezone.utc) - timedelta(hours=2)).timestamp()
        os.utime(stale, (old, old))
        await sweep_orphans(EncryptedBlobStore(files, lambda: ring), store)
        assert not stale.exists()
    finally:
        await store.close()

"""The file blob store, the orphan sweep, the Binary's record of its blob, and Range parsing."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from fhir_server.api.binary_routes import RangeNotSatisfiable, parse_range
from fhir_server.errors import PayloadTooLarge
from fhir_server.media.binary_resource import blob_ref, with_blob_ref, without_blob_ref
from fhir_server.media.sweep import sweep_orphans
from fhir_server.search.extract import extract_index
from fhir_server.storage.blobs import FileBlobStore, blob_store_for
from fhir_server.storage.sqlite.store import SQLiteStore


def key_for(binary_id: str) -> str:
    return f"{binary_id}.{uuid.uuid4().hex}"


async def chunks(*parts: bytes):
    for part in parts:
        yield part


async def collect(stream) -> bytes:
    return b"".join([c async for c in stream])


@pytest.fixture()
async def blobs(tmp_path):
    store = FileBlobStore(tmp_path / "fhir.db.blobs")
    await store.open()
    return store


async def test_put_hashes_stores_and_reads_ranges(blobs):
    key = key_for("abc")
    data = os.urandom(700_000)
    info = await blobs.put(key, chunks(data[:1000], data[1000:]))
    assert info.size == len(data)
    assert info.sha1 == base64.b64encode(hashlib.sha1(data).digest()).decode()
    assert await blobs.size(key) == len(data)
    assert await collect(blobs.read(key)) == data
    assert await collect(blobs.read(key, 10, 300_010)) == data[10:300_010]
    assert list((blobs.root / "tmp").iterdir()) == []
    await blobs.delete(key)
    assert await blobs.size(key) is None
    await blobs.delete(key)  # no error the second time


async def test_a_failing_upload_keeps_nothing(blobs):
    async def too_much():
        yield b"x" * 1000
        raise PayloadTooLarge("too large")

    key = key_for("abc")
    with pytest.raises(PayloadTooLarge):
        await blobs.put(key, too_much())
    assert await blobs.size(key) is None
    assert list((blobs.root / "tmp").iterdir()) == []
    assert [k async for k, _ in blobs.listing()] == []


def test_keys_cannot_escape_the_directory(tmp_path):
    store = FileBlobStore(tmp_path / "b")
    for bad in ("../x." + "0" * 32, "abc", "a/b." + "0" * 32):
        with pytest.raises(ValueError):
            store.path_of(bad)


def test_blob_store_beside_the_sqlite_database(tmp_path):
    store = SQLiteStore(str(tmp_path / "fhir.db"))
    assert blob_store_for(store).root == tmp_path / "fhir.db.blobs"


async def test_sweep_removes_only_old_unreferenced_blobs(tmp_path, blobs):
    store = SQLiteStore(str(tmp_path / "fhir.db"), indexer=extract_index)
    await store.open()
    try:
        kept, orphan, young = key_for("kept"), key_for("orphan"), key_for("young")
        infos = {k: await blobs.put(k, chunks(b"bytes")) for k in (kept, orphan, young)}
        async with store.unit_of_work() as uow:
            await uow.write("Binary", "kept", with_blob_ref({"resourceType": "Binary", "contentType": "image/png"},
                                                            infos[kept]), method="PUT")
            await uow.write("Binary", "kept", {"resourceType": "Binary", "contentType": "image/png"}, method="PUT")
        now = datetime.now(timezone.utc)
        old = (now - timedelta(hours=2)).timestamp()
        for k in (kept, orphan):
            os.utime(blobs.path_of(k), (old, old))
        assert await sweep_orphans(blobs, store, now=now) == 1  # the young one may be an upload in flight
        assert await blobs.size(orphan) is None and await blobs.size(young) == 5
        assert await sweep_orphans(blobs, store, now=now + timedelta(hours=2)) == 1
        assert await blobs.size(young) is None
        assert await blobs.size(kept) == 5  # an older version of Binary/kept still names it
    finally:
        await store.close()


def test_blob_ref_round_trip_and_forgery():
    from fhir_server.storage.blobs import BlobInfo

    info = BlobInfo("bin-1." + "a" * 32, 12, "AAAA")
    body = with_blob_ref({"resourceType": "Binary", "contentType": "image/png", "data": "AA==",
                          "meta": {"tag": [{"code": "x"}]}}, info)
    assert "data" not in body and body["meta"]["tag"] == [{"code": "x"}]
    ref = blob_ref(body, "bin-1")
    assert (ref.key, ref.size, ref.sha1) == (info.key, 12, "AAAA")
    assert blob_ref(body, "someone-else") is None  # a key is only served for its own Binary
    assert without_blob_ref(body) == {"resourceType": "Binary", "contentType": "image/png",
                                      "meta": {"tag": [{"code": "x"}]}}


@pytest.mark.parametrize("header,expected", [
    (None, None), ("bytes=0-9", (0, 10)), ("bytes=5-", (5, 100)), ("bytes=-10", (90, 100)),
    ("bytes=90-200", (90, 100)), ("bytes=-500", (0, 100)), ("items=0-1", None), ("bytes=0-1,5-6", None),
    ("bytes=9-3", None), ("bytes=x-", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header,size", [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)])
def test_unsatisfiable_range(header, size):
    with pytest.raises(RangeNotSatisfiable) as err:
        parse_range(header, size)
    assert err.value.status == 416 and err.value.headers["Content-Range"] == f"bytes */{size}"

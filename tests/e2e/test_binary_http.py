"""Photos and video over HTTP against the real server: raw and FHIR JSON uploads, metadata removed
before storing, magic bytes checked, limits enforced while streaming, bytes kept beside the
database, raw or FHIR reads, Range."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import httpx
import pytest

pytest.importorskip("PIL", reason="the media tests make their photos with Pillow (the test extra)")

from tests.fixtures.media import LEAKS, jpeg, metadata, pixels, png, webp  # noqa: E402
from tests.support import FHIR_JSON, ServerProcess  # noqa: E402

MAX_IMAGE = 100_000
MAX_VIDEO = 400_000
MAKERS = {"image/jpeg": jpeg, "image/png": png, "image/webp": webp}
BLOB_EXTENSION = "http://fhir-async-telehealth.example/StructureDefinition/binary-blob"


def mp4(size: int) -> bytes:
    ftyp = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    payload = os.urandom(size - len(ftyp) - 8)
    return ftyp + (len(payload) + 8).to_bytes(4, "big") + b"mdat" + payload


def sha1(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("binary") / "fhir.db"
    proc = ServerProcess(db, extra_args=["--max-image-bytes", str(MAX_IMAGE),
                                         "--max-video-bytes", str(MAX_VIDEO)]).start()
    proc.blob_dir = Path(f"{db}.blobs")
    yield proc
    proc.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.base, timeout=30.0) as c:
        yield c


@pytest.fixture(scope="module")
def patient_id(server):
    with httpx.Client(base_url=server.base) as c:
        r = c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Testperson"}]}, headers=FHIR_JSON)
        assert r.status_code == 201
        return r.json()["id"]


def blob_files(server) -> list[Path]:
    return sorted(p for p in server.blob_dir.rglob("*") if p.is_file())


def upload(client, data: bytes, content_type: str, patient_id: str, **headers) -> httpx.Response:
    return client.post("/Binary", content=data, headers={"Content-Type": content_type,
                                                         "X-Security-Context": f"Patient/{patient_id}", **headers})


def blob_of(body: dict) -> dict:
    [ext] = [e for e in body["meta"]["extension"] if e["url"] == BLOB_EXTENSION]
    return {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in ext["extension"]}


@pytest.mark.parametrize("content_type", sorted(MAKERS))
def test_raw_photo_is_stored_without_metadata_and_served_raw(client, server, patient_id, content_type):
    original = MAKERS[content_type]()
    assert "exif" in metadata(original)
    r = upload(client, original, content_type, patient_id)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["contentType"] == content_type and "data" not in body
    assert body["securityContext"] == {"reference": f"Patient/{patient_id}"}
    assert r.headers["location"].startswith(f"{server.base}/Binary/{body['id']}/_history/1")

    got = client.get(f"/Binary/{body['id']}", headers={"Accept": "image/*"})
    assert got.status_code == 200
    assert got.headers["content-type"] == content_type
    stored = got.content
    for leak in LEAKS:
        assert leak not in stored
    assert metadata(stored) == {}
    assert pixels(stored) == pixels(original)
    # the server's size and SHA-1 are of the stored (cleaned) bytes
    assert r.headers["x-binary-size"] == got.headers["x-binary-size"] == str(len(stored))
    assert r.headers["x-binary-hash"] == got.headers["x-binary-hash"] == sha1(stored)
    assert blob_of(body) == {"key": blob_of(body)["key"], "size": len(stored), "hash": sha1(stored)}
    # and the bytes on disk, beside the database, are those bytes
    [on_disk] = [p for p in blob_files(server) if p.name == blob_of(body)["key"]]
    assert on_disk.read_bytes() == stored


def test_fhir_binary_with_base64_data_is_cleaned_too_and_read_back_as_fhir(client, patient_id):
    original = jpeg()
    resource = {"resourceType": "Binary", "contentType": "image/jpeg", "data": base64.b64encode(original).decode(),
                "securityContext": {"reference": f"Patient/{patient_id}"}}
    r = client.post("/Binary", json=resource, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    id = r.json()["id"]
    fhir = client.get(f"/Binary/{id}", headers={"Accept": "application/fhir+json"})
    assert fhir.status_code == 200 and fhir.headers["content-type"].startswith("application/fhir+json")
    read = fhir.json()
    stored = base64.b64decode(read["data"])
    assert b"Exif" not in stored and pixels(stored) == pixels(original)
    assert read["securityContext"] == resource["securityContext"] and read["meta"]["versionId"] == "1"
    assert client.get(f"/Binary/{id}", params={"_format": "json"}).json()["data"] == read["data"]
    raw = client.get(f"/Binary/{id}")  # httpx sends Accept: */*: the content itself
    assert raw.headers["content-type"] == "image/jpeg" and raw.content == stored


def test_png_declared_as_jpeg_is_refused_and_not_kept(client, server, patient_id):
    before = blob_files(server)
    r = upload(client, png(), "image/jpeg", patient_id)
    assert r.status_code == 415
    assert r.json()["resourceType"] == "OperationOutcome"
    r = client.post("/Binary", json={"resourceType": "Binary", "contentType": "video/mp4",
                                     "data": base64.b64encode(png()).decode()}, headers=FHIR_JSON)
    assert r.status_code == 415
    assert blob_files(server) == before


def test_oversized_uploads_are_refused_while_streaming_and_not_kept(client, server, patient_id):
    before = blob_files(server)
    big_photo = jpeg() + b"\x00" * MAX_IMAGE
    r = upload(client, big_photo, "image/jpeg", patient_id)
    assert r.status_code == 413 and r.json()["issue"][0]["code"] == "too-costly"

    def chunked(data: bytes):  # no Content-Length: the limit is met while the bytes arrive
        for i in range(0, len(data), 32_768):
            yield data[i:i + 32_768]

    r = upload(client, chunked(big_photo), "image/jpeg", patient_id)
    assert r.status_code == 413
    r = upload(client, chunked(mp4(MAX_VIDEO + 50_000)), "video/mp4", patient_id)
    assert r.status_code == 413
    assert blob_files(server) == before  # nothing kept, temporary files included


def test_video_is_streamed_in_and_served_with_ranges(client, server, patient_id):
    video = mp4(300_000)

    def chunked():
        for i in range(0, len(video), 65_536):
            yield video[i:i + 65_536]

    r = upload(client, chunked(), "video/mp4", patient_id)
    assert r.status_code == 201, r.text
    id = r.json()["id"]
    assert r.headers["x-binary-hash"] == sha1(video)  # videos are stored as sent
    whole = client.get(f"/Binary/{id}", headers={"Accept": "video/mp4"})
    assert whole.status_code == 200 and whole.content == video
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-length"] == str(len(video))

    part = client.get(f"/Binary/{id}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(video)}"
    assert part.content == video[1000:2000]
    tail = client.get(f"/Binary/{id}", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == video[-10:]
    rest = client.get(f"/Binary/{id}", headers={"Range": "bytes=299990-"})
    assert rest.content == video[299_990:]
    bad = client.get(f"/Binary/{id}", headers={"Range": f"bytes={len(video)}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(video)}"
    assert client.get(f"/Binary/{id}", headers={"Accept": "image/png"}).status_code == 406
    fhir = client.get(f"/Binary/{id}", headers={"Accept": "application/fhir+json"}).json()
    assert base64.b64decode(fhir["data"]) == video


def test_other_content_types_stay_fhir_json_only(client):
    assert client.post("/Binary", content=b"hello", headers={"Content-Type": "text/plain"}).status_code == 415
    pdf = {"resourceType": "Binary", "contentType": "application/pdf", "data": base64.b64encode(b"%PDF-1.4").decode()}
    r = client.post("/Binary", json=pdf, headers=FHIR_JSON)
    assert r.status_code == 201 and r.json()["data"] == pdf["data"]  # inline, as before
    raw = client.get(f"/Binary/{r.json()['id']}")
    assert raw.content == b"%PDF-1.4" and raw.headers["content-type"] == "application/pdf"
    assert raw.headers["x-content-type-options"] == "nosniff"


def test_a_binary_cannot_be_pointed_at_another_binarys_bytes(client, patient_id):
    victim = upload(client, jpeg(), "image/jpeg", patient_id).json()
    forged = {"resourceType": "Binary", "id": "forged-1", "contentType": "image/jpeg", "meta": victim["meta"]}
    forged["meta"] = {"extension": victim["meta"]["extension"]}
    assert client.put("/Binary/forged-1", json=forged, headers=FHIR_JSON).status_code == 201
    assert client.get("/Binary/forged-1").content == b""
    # and a client's own copy of the extension is dropped on POST
    pdf = {"resourceType": "Binary", "contentType": "application/pdf", "meta": forged["meta"],
           "data": base64.b64encode(b"%PDF").decode()}
    r = client.post("/Binary", json=pdf, headers=FHIR_JSON)
    assert r.status_code == 201 and "extension" not in r.json()["meta"]


def test_history_and_search_routes_still_reach_the_generic_handlers(client):
    assert client.get("/Binary/_history", headers=FHIR_JSON).json()["type"] == "history"
    assert client.get("/Binary", headers=FHIR_JSON).json()["type"] == "searchset"


def test_a_photo_in_a_transaction_is_cleaned_stored_as_a_blob_and_measured_on_its_media(client, server, patient_id):
    """The patient app's one request: Binary (base64 photo with GPS) + Media pointing at it."""
    photo = jpeg()
    binary_url, media_url = "urn:uuid:5f0c0000-0000-4000-8000-00000000b001", "urn:uuid:5f0c0000-0000-4000-8000-00000000b002"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": binary_url, "request": {"method": "POST", "url": "Binary"},
         "resource": {"resourceType": "Binary", "contentType": "image/jpeg", "data": base64.b64encode(photo).decode(),
                      "securityContext": {"reference": f"Patient/{patient_id}"}}},
        {"fullUrl": media_url, "request": {"method": "POST", "url": "Media"},
         "resource": {"resourceType": "Media", "status": "completed", "subject": {"reference": f"Patient/{patient_id}"},
                      "content": {"contentType": "image/jpeg", "url": binary_url}}},
    ]}
    response = client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    binary_ref, media_ref = (e["response"]["location"].rsplit("/_history", 1)[0] for e in response.json()["entry"])
    stored = client.get(f"/{binary_ref}", headers={"Accept": "image/jpeg"}).content
    assert not any(leak in stored for leak in LEAKS)
    assert pixels(stored) == pixels(photo)
    binary = client.get(f"/{binary_ref}", headers={"Accept": "application/fhir+json"}).json()
    assert blob_of(binary)["key"].startswith(binary_ref.split("/")[1] + ".")
    media = client.get(f"/{media_ref}", headers=FHIR_JSON).json()
    assert media["content"]["size"] == len(stored) and media["content"]["hash"] == sha1(stored)


def test_a_media_claiming_another_size_than_its_binary_is_refused(client, patient_id):
    uploaded = upload(client, png(), "image/png", patient_id)
    assert uploaded.status_code == 201
    media = {"resourceType": "Media", "status": "completed", "subject": {"reference": f"Patient/{patient_id}"},
             "content": {"contentType": "image/png", "url": f"Binary/{uploaded.json()['id']}", "size": 1}}
    response = client.post("/Media", json=media, headers=FHIR_JSON)
    assert response.status_code == 422
    assert "media-content-mismatch" in response.text

"""The photo and video HTTP tests (tests/e2e/test_binary_http.py) in-process, with the server on
the MongoDB backend over the in-process fake. GridFS needs a real AsyncDatabase, which the fake is
not, so the blobs go to the file blob store here: this runs the routes, the record of the blob on
the Binary, access and rollback on MongoDB, not GridFS itself (storage/blobs/gridfs.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("mongomock", reason="runs the MongoDB backend on mongomock (pip install -e '.[test]')")
pytest.importorskip("PIL", reason="the media tests make their photos with Pillow (the test extra)")

import warnings  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from fhir_server.api.app import create_app  # noqa: E402
from fhir_server.config import Settings  # noqa: E402
from fhir_server.search.extract import extract_index  # noqa: E402
from fhir_server.storage.blobs import FileBlobStore  # noqa: E402
from fhir_server.storage.mongo import MongoStore  # noqa: E402
from fhir_server.storage.mongo.fake import FakeAsyncMongoClient  # noqa: E402
from tests.e2e import test_binary_http  # noqa: E402
from tests.support import FHIR_JSON  # noqa: E402

BASE = "http://testserver"

for _name, _value in vars(test_binary_http).items():
    if _name.startswith("test_"):
        globals()[_name] = _value


@pytest.fixture(scope="module")
def _app(tmp_path_factory):
    blob_dir = tmp_path_factory.mktemp("mongo-blobs") / "blobs"
    store = MongoStore("mongodb://fake/fhir", client=FakeAsyncMongoClient(), indexer=extract_index)
    settings = Settings(auth_enabled=False, max_image_bytes=test_binary_http.MAX_IMAGE,
                        max_video_bytes=test_binary_http.MAX_VIDEO)
    app = create_app(settings, store=store, blobs=FileBlobStore(blob_dir))
    with TestClient(app, base_url=BASE) as c:
        yield c, blob_dir


@pytest.fixture(scope="module")
def server(_app):
    return SimpleNamespace(base=BASE, blob_dir=_app[1])


@pytest.fixture()
def client(_app):
    return _app[0]


@pytest.fixture(scope="module")
def patient_id(_app):
    r = _app[0].post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    assert r.status_code == 201
    return r.json()["id"]


# -- in-process only: who may upload and read, and the blob of a failed write ----------------------


@pytest.fixture()
def as_patient(monkeypatch):
    """Requests made as a patient app's token for Patient/<id> (patient/ scopes)."""
    from smart_auth.principal import Principal
    from smart_auth.scopes import ScopeSet

    from fhir_server.api import binary_routes

    def use(patient: str) -> None:
        principal = Principal(client_id="app", subject="u", patient=patient,
                              scopes=ScopeSet.parse("patient/Binary.cr patient/Patient.r"))

        async def fixed(request):
            return principal

        monkeypatch.setattr(binary_routes, "request_principal", fixed)

    return use


def test_a_patient_uploads_and_reads_own_photos_only(client, as_patient):
    a = client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()["id"]
    b = client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()["id"]
    photo = test_binary_http.jpeg()
    theirs = test_binary_http.upload(client, photo, "image/jpeg", b).json()["id"]
    as_patient(a)
    r = test_binary_http.upload(client, photo, "image/jpeg", a)
    assert r.status_code == 201, r.text
    assert client.get(f"/Binary/{r.json()['id']}").status_code == 200
    hidden = client.get(f"/Binary/{theirs}")
    assert hidden.status_code == 404 and hidden.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/Binary/{theirs}", headers={"Range": "bytes=0-10"}).status_code == 404
    # uploading into another patient's compartment is refused before any byte is taken
    assert test_binary_http.upload(client, photo, "image/jpeg", b).status_code == 403
    assert test_binary_http.upload(client, photo, "image/jpeg", "").status_code == 403  # no securityContext


def test_the_blob_of_a_write_that_fails_is_deleted(client, server, patient_id, monkeypatch):
    from fhir_server.api import binary_routes
    from fhir_server.errors import Conflict

    async def failing(*args, **kwargs):
        raise Conflict("the unit of work failed")

    before = test_binary_http.blob_files(server)
    monkeypatch.setattr(binary_routes.crud, "create", failing)
    r = test_binary_http.upload(client, test_binary_http.png(), "image/png", patient_id)
    assert r.status_code == 409
    assert test_binary_http.blob_files(server) == before

"""The HTTP end-to-end suites (tests/e2e) once more, in-process, with the server on the MongoDB
backend over the in-process fake (fhir_server/storage/mongo/fake.py): CRUD, history, search,
batch and transaction Bundles through the real app and routes. The e2e modules' tests are
imported here and get this module's `server` and `client` fixtures instead of the session's
real SQLite server process. Needs mongomock (the test extra)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("mongomock", reason="runs the MongoDB backend on mongomock (pip install -e '.[test]')")

import warnings  # noqa: E402

with warnings.catch_warnings():  # starlette's note about httpx2 concerns its TestClient, not the server
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from fhir_server.api.app import create_app  # noqa: E402
from fhir_server.config import Settings  # noqa: E402
from fhir_server.search.extract import extract_index  # noqa: E402
from fhir_server.storage.mongo import MongoStore  # noqa: E402
from fhir_server.storage.mongo.fake import FakeAsyncMongoClient  # noqa: E402
from tests.e2e import test_bundles, test_crud, test_errors_and_formats, test_history, test_search_http  # noqa: E402

BASE = "http://testserver"

for _module in (test_bundles, test_crud, test_errors_and_formats, test_history, test_search_http):
    for _name, _value in vars(_module).items():
        if _name.startswith("test_") or type(_value).__name__ == "FixtureFunctionDefinition":
            globals()[_name] = _value  # the module's tests and its own fixtures


@pytest.fixture(scope="module")
def server():
    return SimpleNamespace(base=BASE)


@pytest.fixture(scope="module")
def _app_client():
    store = MongoStore("mongodb://fake/fhir", client=FakeAsyncMongoClient(), indexer=extract_index)
    app = create_app(Settings(auth_enabled=False), store=store)
    with TestClient(app, base_url=BASE) as c:
        inner = c.app.state.store  # wrapped: units of work validate (profile_check.py) and run the write hooks
        while hasattr(inner, "_inner"):
            inner = inner._inner
        assert inner is store
        yield c


@pytest.fixture()
def client(_app_client):
    return _app_client

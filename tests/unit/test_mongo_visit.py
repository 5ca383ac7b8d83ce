"""The asynchronous visit on the MongoDB backend (the in-process fake, storage/mongo/fake.py):
$submit, claim, a message, completion with its consult note, $everything, as on SQLite."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("mongomock", reason="runs the MongoDB backend on mongomock (pip install -e '.[test]')")

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient  # noqa: E402

from fhir_server.api.app import create_app  # noqa: E402
from fhir_server.config import Settings  # noqa: E402
from fhir_server.search.extract import extract_index  # noqa: E402
from fhir_server.storage.mongo import MongoStore  # noqa: E402
from fhir_server.storage.mongo.fake import FakeAsyncMongoClient  # noqa: E402
from tests.e2e import test_visit_review as review  # noqa: E402
from tests.e2e.test_everything import completed_visit  # noqa: E402
from tests.support import FHIR_JSON  # noqa: E402


@pytest.fixture()
def client():
    store = MongoStore("mongodb://fake/fhir", client=FakeAsyncMongoClient(), indexer=extract_index)
    app = create_app(Settings(auth_enabled=False), store=store)
    with TestClient(app, base_url="http://testserver", headers=FHIR_JSON) as c:
        yield c


def test_a_visit_runs_to_completion_with_its_consult_note(client):
    visit = completed_visit(client)
    encounter = visit["focus"]["reference"]
    assert client.get(f"/{encounter}").json()["status"] == "finished"
    [composition] = [e["resource"] for e in client.get("/Composition", params={"encounter": encounter}).json()["entry"]]
    assert composition["status"] == "final"
    everything = client.get(f"/{encounter}/$everything").json()
    assert {"Encounter", "Task", "Condition", "CarePlan", "Composition"} <= {e["resource"]["resourceType"] for e in everything["entry"]}


def test_claiming_needs_a_licence_in_the_patients_state(client):
    task = review.submitted(client)
    response = review.claim(client, task, review.practitioner(client, "NY"))
    assert response.status_code == 422 and "visit-claim-licence" in response.text

"""Subscriptions on the MongoDB backend (the in-process fake, storage/mongo/fake.py), the app in
process and a real receiver: handshake, a completed visit's notification, heartbeats, the event
count kept in the event log (the Subscription's history holds only its status changes), $events."""

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
from tests.e2e.test_subscriptions import ENV, Receiver, complete, of_type, params, subscription, wait_status  # noqa: E402
from tests.support import FHIR_JSON  # noqa: E402


@pytest.fixture()
def client(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    store = MongoStore("mongodb://fake/fhir", client=FakeAsyncMongoClient(), indexer=extract_index)
    app = create_app(Settings(auth_enabled=False), store=store)
    with TestClient(app, base_url="http://testserver", headers=FHIR_JSON) as c:
        yield c


def test_notifications_heartbeats_and_events_on_mongodb(client):
    receiver = Receiver().start()
    try:
        sub_id = client.post("/Subscription", json=subscription(receiver.url, heartbeat=1)).json()["id"]
        receiver.wait(of_type("handshake"))
        wait_status(client, sub_id, "active")
        receiver.wait(of_type("heartbeat"), timeout=5)
        task = complete(client)
        [note] = receiver.wait(of_type("event-notification"))
        event = {q["name"]: q for q in params(note["body"])["notification-event"]["part"]}
        assert event["event-number"]["valueString"] == "1"
        assert event["focus"]["valueReference"]["reference"].endswith(task["focus"]["reference"])
        complete(client)
        receiver.wait(lambda r: of_type("event-notification")(r) and
                      params(r["body"])["events-since-subscription-start"]["valueString"] == "2")
        history = client.get(f"/Subscription/{sub_id}/_history").json()
        assert [e["resource"]["status"] for e in history["entry"]] == ["active", "requested"]
        answer = client.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "2"}).json()
        numbers = [{q["name"]: q for q in p["part"]}["event-number"]["valueString"]
                   for p in answer["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"]
        assert numbers == ["2"] and params(answer)["type"]["valueCode"] == "query-event"
    finally:
        receiver.stop()

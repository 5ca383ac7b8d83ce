"""Subscriptions end to end: a real receiver (http.server on a loopback port) gets the handshake,
notifications when visits complete (in its filter only), catches up with $events after being
down, and a classic Subscription's update."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.e2e.test_visit_review import claim, practitioner, submitted, with_state
from tests.e2e.visit_support import load
from tests.support import FHIR_JSON, ServerProcess, free_port

BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC = "http://fhir-async-telehealth.example/SubscriptionTopic/consultation-completed"


class Receiver:
    def __init__(self, status: int = 200):
        self.requests: list[dict] = []
        self.status = status
        self.port = free_port()
        self.server = None

    def start(self) -> "Receiver":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                       "body": json.loads(body) if body else None})
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            do_POST = do_PUT = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait(self, predicate, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.requests if predicate(r)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"nothing arrived; got {len(self.requests)} requests")


def params(bundle: dict) -> dict:
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "Parameters"
    return {p["name"]: p for p in status["parameter"]}


def of_type(kind: str):
    return lambda r: r["body"] and r["body"].get("resourceType") == "Bundle" and params(r["body"])["type"]["valueCode"] == kind


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"FHIR_SUBSCRIPTION_ALLOW_HTTP_LOOPBACK": "1", "FHIR_SUBSCRIPTION_MAX_ATTEMPTS": "3",
           "FHIR_SUBSCRIPTION_BACKOFF_BASE": "0.2", "FHIR_SUBSCRIPTION_POLL_SECONDS": "0.2"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        proc = ServerProcess(tmp_path_factory.mktemp("subs") / "fhir.db").start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield proc
    proc.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.base, timeout=30.0, headers=FHIR_JSON) as c:
        yield c


def subscription(endpoint: str, patient: str | None = None, content: str = "id-only") -> dict:
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "test", "criteria": TOPIC,
           "channel": {"type": "rest-hook", "endpoint": endpoint, "header": ["Authorization: Bearer receiver-secret"],
                       "payload": "application/fhir+json",
                       "_payload": {"extension": [{"url": f"{BP}/backport-payload-content", "valueCode": content}]}}}
    if patient:
        sub["_criteria"] = {"extension": [{"url": f"{BP}/backport-filter-criteria",
                                           "valueString": f"Encounter?patient={patient}"}]}
    return sub


def complete(client: httpx.Client, task: dict | None = None) -> dict:
    task = task or submitted(client)
    claimed = claim(client, task, practitioner(client, "CA")).json()
    condition = load("profiles/examples/visit-diagnosis-valid.json")
    careplan = load("profiles/examples/visit-careplan-valid.json")
    for resource in (condition, careplan):
        resource.pop("id")
        resource.pop("meta", None)
        resource["encounter"] = task["focus"]
        resource["subject"] = task["for"]
    careplan["addresses"] = [{"reference": "Condition/" + client.post("/Condition", json=condition).json()["id"]}]
    assert client.post("/CarePlan", json=careplan).status_code == 201
    response = client.put(f"/Task/{task['id']}", json=with_state(claimed, "completed", "completed"))
    assert response.status_code == 200, response.text
    return task


def wait_status(client, sub_id: str, status: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sub = client.get(f"/Subscription/{sub_id}").json()
        if sub["status"] == status:
            return sub
        time.sleep(0.2)
    raise AssertionError(f"status stayed {sub['status']}")


def test_handshake_then_a_notification_when_a_visit_completes_only_for_its_patient(client):
    receiver = Receiver().start()
    try:
        mine = submitted(client)  # a visit waiting for review: its patient is who we filter on
        patient = mine["for"]["reference"]
        created = client.post("/Subscription", json=subscription(receiver.url, patient))
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "requested"
        sub_id = created.json()["id"]
        [handshake] = receiver.wait(of_type("handshake"))
        assert handshake["headers"]["Authorization"] == "Bearer receiver-secret"
        assert handshake["headers"]["Content-Type"].startswith("application/fhir+json")
        assert params(handshake["body"])["status"]["valueCode"] == "requested"
        wait_status(client, sub_id, "active")

        other = complete(client)  # another patient's visit: nothing
        assert other["for"]["reference"] != patient
        time.sleep(1.5)
        assert not [r for r in receiver.requests if of_type("event-notification")(r)]

        complete(client, mine)  # ours: one notification, event 1, focus our Encounter
        [note] = receiver.wait(of_type("event-notification"))
        p = params(note["body"])
        event = {q["name"]: q for q in p["notification-event"]["part"]}
        assert event["event-number"]["valueString"] == "1"
        assert event["focus"]["valueReference"]["reference"].endswith(mine["focus"]["reference"])
        assert [e["fullUrl"] for e in note["body"]["entry"][1:]][0].endswith(mine["focus"]["reference"])
        assert all("resource" not in e for e in note["body"]["entry"][1:])  # id-only
    finally:
        receiver.stop()


def test_unfiltered_subscription_gets_focus_and_event_numbers(client):
    receiver = Receiver().start()
    try:
        sub_id = client.post("/Subscription", json=subscription(receiver.url, content="full-resource")).json()["id"]
        wait_status(client, sub_id, "active")
        started = time.monotonic()
        task = complete(client)
        [note] = receiver.wait(of_type("event-notification"))
        assert time.monotonic() - started < 10
        p = params(note["body"])
        assert note["body"]["type"] == "history"
        assert p["events-since-subscription-start"]["valueString"] == "1"
        event = {q["name"]: q for q in p["notification-event"]["part"]}
        assert event["event-number"]["valueString"] == "1"
        assert event["focus"]["valueReference"]["reference"].endswith(task["focus"]["reference"])
        encounters = [e["resource"] for e in note["body"]["entry"][1:] if e["resource"]["resourceType"] == "Encounter"]
        assert encounters and encounters[0]["status"] == "finished"
        complete(client)
        receiver.wait(lambda r: of_type("event-notification")(r) and
                      params(r["body"])["events-since-subscription-start"]["valueString"] == "2")
        status = client.get(f"/Subscription/{sub_id}/$status").json()
        assert status["type"] == "searchset"
        assert params(status)["events-since-subscription-start"]["valueString"] == "2"
    finally:
        receiver.stop()


def test_a_receiver_that_was_down_catches_up_with_events(client):
    receiver = Receiver().start()
    sub_id = client.post("/Subscription", json=subscription(receiver.url)).json()["id"]
    wait_status(client, sub_id, "active")
    receiver.stop()
    task = complete(client)
    sub = wait_status(client, sub_id, "error", timeout=30)
    assert "delivery failed" in sub["error"]
    events = client.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "1"})
    assert events.status_code == 200, events.text
    p = params(events.json())
    assert p["type"]["valueCode"] == "query-event"
    parts = {q["name"]: q for q in p["notification-event"]["part"]}
    assert parts["event-number"]["valueString"] == "1"
    assert parts["focus"]["valueReference"]["reference"].endswith(task["focus"]["reference"])


def test_a_classic_subscription_gets_the_finished_encounter(client):
    receiver = Receiver().start()
    try:
        sub = {"resourceType": "Subscription", "status": "requested", "reason": "classic",
               "criteria": "Encounter?status=finished",
               "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json"}}
        created = client.post("/Subscription", json=sub)
        assert created.status_code == 201, created.text
        wait_status(client, created.json()["id"], "active")
        task = complete(client)
        encounter_id = task["focus"]["reference"].split("/")[1]
        [put] = receiver.wait(lambda r: r["method"] == "PUT")
        assert put["path"] == f"/hook/Encounter/{encounter_id}"
        assert put["body"]["status"] == "finished"
    finally:
        receiver.stop()


@pytest.mark.parametrize("change", [
    lambda s: s.update(criteria="http://example.org/SubscriptionTopic/unknown"),
    lambda s: s["channel"].update(endpoint="http://example.org/hook"),
    lambda s: s["channel"]["_payload"]["extension"][0].update(valueCode="everything"),
    lambda s: s.update(_criteria={"extension": [{"url": f"{BP}/backport-filter-criteria", "valueString": "Encounter?bogus=1"}]}),
])
def test_subscriptions_the_server_cannot_honour_are_refused(client, change):
    sub = subscription("http://127.0.0.1:9/hook")
    change(sub)
    assert client.post("/Subscription", json=sub).status_code in (400, 422)

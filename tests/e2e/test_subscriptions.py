"""Subscriptions end to end: a real receiver (http.server on a loopback port) gets the handshake,
notifications when visits complete (in its filter only), catches up with $events after being
down, and a classic Subscription's update; heartbeats come each period (once, with two worker
processes too); a slow receiver holds up only its own subscription, whose events still arrive in
order; the Subscription's history holds only its status changes; purged events are reported."""

from __future__ import annotations

import json
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
    def __init__(self, status: int = 200, delay: float = 0.0):
        self.requests: list[dict] = []
        self.status = status
        self.delay = delay  # seconds each answer takes (a slow endpoint)
        self.port = free_port()
        self.server = None

    def start(self) -> "Receiver":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                started = time.monotonic()
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {"method": self.command, "path": self.path, "headers": dict(self.headers),
                          "body": json.loads(body) if body else None, "at": started}
                outer.requests.append(record)
                time.sleep(outer.delay)
                record["done"] = time.monotonic()
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


ENV = {"FHIR_SUBSCRIPTION_ALLOW_HTTP_LOOPBACK": "1", "FHIR_SUBSCRIPTION_MAX_ATTEMPTS": "3",
       "FHIR_SUBSCRIPTION_BACKOFF_BASE": "0.2", "FHIR_SUBSCRIPTION_POLL_SECONDS": "0.2"}


def start_server(database, env: dict, *extra_args: str) -> ServerProcess:
    """A server whose subscription settings come from `env` (read at start-up)."""
    return ServerProcess(database, extra_args=list(extra_args), env=env).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = start_server(tmp_path_factory.mktemp("subs") / "fhir.db", ENV)
    yield proc
    proc.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.base, timeout=30.0, headers=FHIR_JSON) as c:
        yield c


def subscription(endpoint: str, patient: str | None = None, content: str = "id-only",
                 heartbeat: int | None = None) -> dict:
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "test", "criteria": TOPIC,
           "channel": {"type": "rest-hook", "endpoint": endpoint, "header": ["Authorization: Bearer receiver-secret"],
                       "payload": "application/fhir+json",
                       "_payload": {"extension": [{"url": f"{BP}/backport-payload-content", "valueCode": content}]}}}
    if heartbeat:
        sub["channel"]["extension"] = [{"url": f"{BP}/backport-heartbeat-period", "valueUnsignedInt": heartbeat}]
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
        # two events, and the Subscription has only its own changes: created requested, then active
        history = client.get(f"/Subscription/{sub_id}/_history").json()
        assert [e["resource"]["status"] for e in history["entry"]] == ["active", "requested"]
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


def heartbeats(receiver: Receiver) -> list[dict]:
    return [r for r in receiver.requests if of_type("heartbeat")(r)]


def test_heartbeats_come_each_period_while_nothing_else_is_sent(client):
    receiver = Receiver().start()
    try:
        sub_id = client.post("/Subscription", json=subscription(receiver.url, patient="Patient/nobody",
                                                                 heartbeat=1)).json()["id"]
        wait_status(client, sub_id, "active")
        deadline = time.monotonic() + 15
        while len(heartbeats(receiver)) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        beats = heartbeats(receiver)
        assert len(beats) >= 4, len(beats)
        gaps = [b["at"] - a["at"] for a, b in zip(beats, beats[1:])]
        assert all(0.5 < g < 1.6 for g in gaps), gaps
        p = params(beats[0]["body"])
        assert p["status"]["valueCode"] == "active"
        assert p["events-since-subscription-start"]["valueString"] == "0"
        assert "notification-event" not in p and len(beats[0]["body"]["entry"]) == 1
        assert beats[0]["headers"]["Authorization"] == "Bearer receiver-secret"
        # turned off: the heartbeats stop
        sub = client.get(f"/Subscription/{sub_id}").json()
        assert client.put(f"/Subscription/{sub_id}", json={**sub, "status": "off"}).status_code == 200
        time.sleep(1.2)
        count = len(heartbeats(receiver))
        time.sleep(2.5)
        assert len(heartbeats(receiver)) == count
    finally:
        receiver.stop()


def test_a_subscription_without_a_heartbeat_period_gets_none(client):
    receiver = Receiver().start()
    try:
        sub_id = client.post("/Subscription", json=subscription(receiver.url, patient="Patient/nobody")).json()["id"]
        wait_status(client, sub_id, "active")
        time.sleep(2.5)
        assert heartbeats(receiver) == []
    finally:
        receiver.stop()


def test_a_slow_receiver_holds_up_only_its_own_subscription_whose_events_stay_in_order(client):
    slow, fast = Receiver(delay=3.0).start(), Receiver().start()
    try:
        slow_id = client.post("/Subscription", json=subscription(slow.url)).json()["id"]
        fast_id = client.post("/Subscription", json=subscription(fast.url)).json()["id"]
        wait_status(client, slow_id, "active", timeout=20)
        wait_status(client, fast_id, "active")
        tasks = [submitted(client), submitted(client)]
        complete(client, tasks[0])
        first_done = time.monotonic()
        complete(client, tasks[1])
        second_done = time.monotonic()
        notes = fast.wait(lambda r: of_type("event-notification")(r) and event_number(r) == "2")
        assert notes[0]["at"] - second_done < 1.5  # not behind the slow receiver's 3 s
        assert [n for n in fast.requests if of_type("event-notification")(n)][0]["at"] - first_done < 1.5
        slow_notes = slow.wait(lambda r: of_type("event-notification")(r) and
                               event_number(r) == "2", timeout=20)
        events = [r for r in slow.requests if of_type("event-notification")(r)]
        assert [event_number(r) for r in events] == ["1", "2"]
        assert events[1]["at"] >= events[0]["done"]  # never two in flight: 2 only after 1 was answered
        assert slow_notes
    finally:
        slow.stop()
        fast.stop()


def event_number(request: dict) -> str:
    event = {q["name"]: q for q in params(request["body"])["notification-event"]["part"]}
    return event["event-number"]["valueString"]


def test_two_worker_processes_send_each_heartbeat_once_and_purged_events_are_reported(tmp_path):
    env = {**ENV, "FHIR_SUBSCRIPTION_EVENT_RETENTION_DAYS": str(3 / 86400), "FHIR_SUBSCRIPTION_PURGE_SECONDS": "1"}
    proc = start_server(tmp_path / "fhir.db", env, "--workers", "2")
    receiver = Receiver().start()
    try:
        with httpx.Client(base_url=proc.base, timeout=30.0, headers=FHIR_JSON) as c:
            sub_id = c.post("/Subscription", json=subscription(receiver.url, heartbeat=1)).json()["id"]
            wait_status(c, sub_id, "active")
            receiver.wait(lambda r: of_type("heartbeat")(r))
            count = len(heartbeats(receiver))
            time.sleep(4.0)
            beats = len(heartbeats(receiver)) - count
            assert 3 <= beats <= 5, beats  # one per second, not one per worker
            complete(c)
            complete(c)
            receiver.wait(lambda r: of_type("event-notification")(r) and event_number(r) == "2")
            deadline = time.monotonic() + 20  # retention 3 s, purge every second: event 1 goes, 2 stays
            while time.monotonic() < deadline:
                answer = c.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "1"}).json()
                if "error" in params(answer):
                    break
                time.sleep(0.5)
            p = params(answer)
            assert p["error"]["valueCodeableConcept"]["coding"][0]["code"] == "events-purged"
            assert "Event 1 " in p["error"]["valueCodeableConcept"]["text"]
            assert p["events-since-subscription-start"]["valueString"] == "2"
            kept = [{q["name"]: q for q in e["part"]} for e in answer["entry"][0]["resource"]["parameter"]
                    if e["name"] == "notification-event"]
            assert [k["event-number"]["valueString"] for k in kept] == ["2"]
    finally:
        receiver.stop()
        proc.stop()

"""Accepting Subscriptions: what the server will and will not honour (exchange.md A.5)."""

from __future__ import annotations

import pytest

from fhir_server.errors import UnprocessableEntity
from fhir_server.exchange.subscriptions.accept import parse_spec
from fhir_server.exchange.subscriptions.config import SubscriptionSettings
from fhir_server.exchange.subscriptions.heartbeat import heartbeat_period
from fhir_server.exchange.subscriptions.state import EVENTS_EXT, owner_extension, owner_of, strip_state, with_state
from fhir_server.exchange.subscriptions.topics import TOPICS, capability_extensions
from smart_auth.principal import Principal
from smart_auth.scopes import ScopeSet

BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC = "http://fhir-async-telehealth.example/SubscriptionTopic/consultation-completed"
LOOPBACK = SubscriptionSettings(allow_http_loopback=True)


def sub(**changes) -> dict:
    s = {"resourceType": "Subscription", "status": "requested", "criteria": TOPIC,
         "_criteria": {"extension": [{"url": f"{BP}/backport-filter-criteria", "valueString": "Encounter?patient=Patient/1"}]},
         "channel": {"type": "rest-hook", "endpoint": "https://receiver.example/hook", "header": ["X-Key: abc"],
                     "payload": "application/fhir+json",
                     "_payload": {"extension": [{"url": f"{BP}/backport-payload-content", "valueCode": "id-only"}]},
                     "extension": [{"url": f"{BP}/backport-max-count", "valuePositiveInt": 5}]}}
    s.update(changes)
    return s


def test_a_backport_subscription_is_understood():
    spec = parse_spec(sub(), SubscriptionSettings())
    assert (spec.kind, spec.resource_type, spec.content, spec.max_count) == ("topic", "Encounter", "id-only", 5)
    assert spec.filters == (("patient", "Patient/1"),) and spec.headers == (("X-Key", "abc"),)


@pytest.mark.parametrize("value", ["patient=Patient/1", "Encounter.patient=Patient/1", "Encounter?patient=Patient/1"])
def test_three_filter_shapes(value):
    s = sub(_criteria={"extension": [{"url": f"{BP}/backport-filter-criteria", "valueString": value}]})
    assert parse_spec(s, SubscriptionSettings()).filters == (("patient", "Patient/1"),)


@pytest.mark.parametrize("bad", [
    {"criteria": "http://example.org/SubscriptionTopic/nope"},
    {"_criteria": {"extension": [{"url": "http://hl7.org/fhir/5.0/subscriptions-backport/StructureDefinition/backport-filter-criteria",
                                  "valueString": "patient=Patient/1"}]}},
    {"_criteria": {"extension": [{"url": f"{BP}/backport-filter-criteria", "valueString": "Task?patient=Patient/1"}]}},
    {"_criteria": {"extension": [{"url": f"{BP}/backport-filter-criteria", "valueString": "status=finished"}]}},
])
def test_unsupported_topics_and_filters_are_refused(bad):
    with pytest.raises(UnprocessableEntity):
        parse_spec(sub(**bad), SubscriptionSettings())


def test_http_endpoints_only_on_loopback_when_allowed():
    s = sub()
    s["channel"]["endpoint"] = "http://127.0.0.1:9999/hook"
    with pytest.raises(UnprocessableEntity):
        parse_spec(s, SubscriptionSettings())
    assert parse_spec(s, LOOPBACK).endpoint.startswith("http://127.0.0.1")
    s["channel"]["endpoint"] = "http://receiver.example/hook"
    with pytest.raises(UnprocessableEntity):
        parse_spec(s, LOOPBACK)


def test_payload_content_and_version_are_checked():
    s = sub()
    s["channel"]["_payload"]["extension"][0]["valueCode"] = "full"
    with pytest.raises(UnprocessableEntity):
        parse_spec(s, SubscriptionSettings())
    s = sub()
    s["channel"]["payload"] = "application/fhir+json;fhirVersion=5.0"
    with pytest.raises(UnprocessableEntity):
        parse_spec(s, SubscriptionSettings())


def test_classic_criteria():
    s = {"resourceType": "Subscription", "status": "requested", "criteria": "Encounter?status=finished",
         "channel": {"type": "rest-hook", "endpoint": "https://r.example/fhir"}}
    spec = parse_spec(s, SubscriptionSettings())
    assert (spec.kind, spec.filters, spec.payload, spec.content) == ("classic", (("status", "finished"),), None, "empty")
    with pytest.raises(UnprocessableEntity):
        parse_spec({**s, "criteria": "Encounter?nonsense=1"}, SubscriptionSettings())
    with pytest.raises(UnprocessableEntity):
        parse_spec({**s, "criteria": "Account?status=active"}, SubscriptionSettings())


def test_topics_are_advertised_and_the_owner_round_trips():
    assert len(capability_extensions()) == len(TOPICS) >= 3
    principal = Principal(client_id="app", subject="u", scopes=ScopeSet.parse("patient/Encounter.rs"), patient="p1")
    s = with_state(sub(), owner=owner_extension(principal))
    back = owner_of(s)
    assert (back.client_id, back.patient, back.scopes.text, back.unrestricted) == ("app", "p1", "patient/Encounter.rs", False)


def test_a_heartbeat_period_is_taken_on_topic_subscriptions_only():
    s = sub()
    s["channel"]["extension"].append({"url": f"{BP}/backport-heartbeat-period", "valueUnsignedInt": 60})
    assert parse_spec(s, SubscriptionSettings()).heartbeat == 60
    assert heartbeat_period(s) == 60
    classic = {"resourceType": "Subscription", "status": "requested", "criteria": "Encounter?status=finished",
               "channel": {"type": "rest-hook", "endpoint": "https://r.example/fhir", "extension": [
                   {"url": f"{BP}/backport-heartbeat-period", "valueUnsignedInt": 60}]}}
    with pytest.raises(UnprocessableEntity):
        parse_spec(classic, SubscriptionSettings())
    assert heartbeat_period(classic) is None


def test_the_old_counter_extensions_are_stripped_not_kept():
    legacy = {**sub(), "extension": [{"url": EVENTS_EXT, "valueInteger": 7}, {"url": "http://x.example/e", "valueString": "x"}]}
    assert strip_state(legacy)["extension"] == [{"url": "http://x.example/e", "valueString": "x"}]
    assert with_state(legacy)["extension"] == [{"url": "http://x.example/e", "valueString": "x"}]

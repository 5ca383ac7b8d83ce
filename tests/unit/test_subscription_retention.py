"""The retention sweep re-seeds heartbeat chains: an active Subscription with a heartbeat period
whose chain died (its job given up while the store was down) gets its next heartbeat scheduled;
a live chain is left as it is (the period's job is unique by key)."""

from __future__ import annotations

from fhir_server.exchange.subscriptions.accept import HEARTBEAT_EXT
from fhir_server.exchange.subscriptions.config import SubscriptionSettings
from fhir_server.exchange.subscriptions.heartbeat import HEARTBEAT_KIND, heartbeat_key
from fhir_server.exchange.subscriptions.retention import Retention
from fhir_server.exchange.subscriptions.topics import CONSULTATION_COMPLETED
from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store


def _subscription(id: str, status: str, period: int | None) -> dict:
    channel = {"type": "rest-hook", "endpoint": "https://ehr.example/hook", "payload": "application/fhir+json"}
    if period:
        channel["extension"] = [{"url": HEARTBEAT_EXT, "valueUnsignedInt": period}]
    return {"resourceType": "Subscription", "id": id, "status": status, "reason": "test",
            "criteria": CONSULTATION_COMPLETED.url, "channel": channel}


async def test_active_subscriptions_with_a_period_get_their_next_heartbeat_once(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'fhir.db'}", indexer=extract_index)
    await store.open()
    try:
        async with store.unit_of_work() as uow:
            for sub in (_subscription("beats", "active", 60), _subscription("quiet", "active", None),
                        _subscription("stopped", "off", 60)):
                await uow.write("Subscription", sub["id"], sub, method="PUT")
        retention = Retention(store, SubscriptionSettings())
        now = 1_800_000_000.0
        assert await retention.reseed_heartbeats(now) == 1
        assert await retention.reseed_heartbeats(now) == 1  # again: the same job, not a second one
        jobs = await store.jobs(kind=HEARTBEAT_KIND)
        assert [j.key for j in jobs] == [heartbeat_key("beats", 60, int(now // 60) + 1)]
    finally:
        await store.close()

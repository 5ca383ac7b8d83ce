"""The subscription event log (exchange/subscriptions/eventlog.py) on the store's keyed outbox
methods (job_range, claim_jobs_in_order, purge_jobs), on SQLite and on the MongoDB backend over
its in-process fake (with and without transactions)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fhir_server.exchange.subscriptions import eventlog
from fhir_server.exchange.subscriptions.accept import NOTIFY_KIND
from fhir_server.storage import open_store
from fhir_server.storage.base import DEAD, DONE, PENDING

LEASE = 60.0


@pytest.fixture(params=["sqlite", "mongo-fake", "mongo-fake-no-transactions"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'events.db'}")
    else:
        pytest.importorskip("mongomock", reason="needs mongomock (pip install -e '.[test]')")
        from fhir_server.storage.mongo import MongoStore
        from fhir_server.storage.mongo.fake import FakeAsyncMongoClient

        transactions = request.param == "mongo-fake"
        s = MongoStore("mongodb://fake/fhir", client=FakeAsyncMongoClient(replica_set=transactions),
                       transactions=transactions)
    await s.open()
    yield s
    await s.close()


async def _append(store, sub_id: str, n: int = 1) -> list[int]:
    async with store.unit_of_work() as uow:
        return [await eventlog.append(uow, sub_id, "event-notification", {"focus": f"Encounter/e{i}"})
                for i in range(n)]


async def _claim(store, now: datetime | None = None):
    return await store.claim_jobs_in_order([NOTIFY_KIND], limit=10, lease_seconds=LEASE, separator=":", now=now)


async def test_numbers_count_per_subscription_and_a_unit_of_work_sees_its_own(store):
    assert await _append(store, "s1", 2) == [1, 2]  # the second saw the first, uncommitted
    assert await _append(store, "s1") == [3]
    # ids that share a prefix, or sort next to it, have logs of their own
    assert await _append(store, "s1-2") == [1]
    assert await _append(store, "s10") == [1]
    assert await eventlog.event_count(store, "s1") == 3
    assert await eventlog.event_count(store, "nobody") == 0
    events = await eventlog.events_between(store, "s1", 2, 3, limit=100)
    assert [e["number"] for e in events] == [2, 3] and events[0]["focus"] == "Encounter/e1"
    assert [e["number"] for e in await eventlog.events_between(store, "s1", 1, 3, limit=2)] == [1, 2]
    job = (await store.job_range(NOTIFY_KIND, "s1:", "s1:~", limit=1))[0]
    assert job.key == "s1:000000000001" and job.state == PENDING


async def test_a_unit_of_work_that_fails_numbers_nothing(store):
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await eventlog.append(uow, "s1", "event-notification", {})
            raise RuntimeError("the change failed")
    assert await eventlog.event_count(store, "s1") == 0
    assert await _append(store, "s1") == [1]


async def test_claims_take_one_event_per_subscription_in_number_order(store):
    await _append(store, "a", 3)
    await _append(store, "b", 2)
    async with store.unit_of_work() as uow:  # keys without ':' (handshakes) are not ordered
        await uow.enqueue(NOTIFY_KIND, "a/handshake/1", {})
        await uow.enqueue(NOTIFY_KIND, "a/handshake/2", {})
    first = await _claim(store)
    assert sorted(j.key for j in first) == ["a/handshake/1", "a/handshake/2", "a:000000000001", "b:000000000001"]
    assert await _claim(store) == []  # a:2 and b:2 wait for their predecessors
    by_key = {j.key: j for j in first}
    assert await store.complete_job(by_key["a:000000000001"].id, lease_token=by_key["a:000000000001"].lease_token)
    assert [j.key for j in await _claim(store)] == ["a:000000000002"]
    # given up counts as finished: b's next may go
    assert await store.dead_letter_job(by_key["b:000000000001"].id, lease_token=by_key["b:000000000001"].lease_token,
                                       error="HTTP 500")
    assert [j.key for j in await _claim(store)] == ["b:000000000002"]


async def test_an_expired_lease_is_claimed_again_and_still_blocks_the_next(store):
    await _append(store, "a", 2)
    [job] = await _claim(store)
    later = job.leased_until + timedelta(seconds=1)
    [again] = await _claim(store, now=later)
    assert again.key == job.key and again.attempts == 2
    assert await _claim(store, now=later) == []


async def test_purge_keeps_each_subscriptions_newest_event_and_what_is_unfinished(store):
    await _append(store, "a", 3)
    await _append(store, "b", 1)
    await _append(store, "c", 2)
    for _ in range(3):  # a: 1, 2, 3 done; b: 1 done; c: 1 done, 2 pending
        for job in await _claim(store):
            if job.key != "c:000000000002":
                await store.complete_job(job.id, lease_token=job.lease_token)
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert await store.purge_jobs(NOTIFY_KIND, updated_before=datetime.now(timezone.utc) - timedelta(days=1),
                                  keep_last_of_group=":") == 0  # nothing that old
    assert await eventlog.purge(store, timedelta(days=-1)) == 3  # a:1, a:2, c:1
    assert [j.key for j in await store.job_range(NOTIFY_KIND, "", "~", limit=100)] == [
        "a:000000000003", "b:000000000001", "c:000000000002"]
    assert await eventlog.event_count(store, "a") == 3 and await eventlog.oldest_kept(store, "a") == 3
    assert await _append(store, "a") == [4]  # numbers are never reused
    assert await store.purge_jobs(NOTIFY_KIND, updated_before=future, states=[DONE, DEAD]) == 2  # no groups kept
    assert await eventlog.event_count(store, "a") == 4  # a:4 is pending: never purged

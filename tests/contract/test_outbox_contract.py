"""The transactional outbox's contract (storage/base.py: UnitOfWork.enqueue and the Outbox
methods), run against every backend: sqlite, mongo-fake, and mongo when MONGODB_URL is set
(tests/contract/conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from fhir_server.storage.base import DEAD, DONE, LEASED, MAX_ERROR_CHARS, PENDING, OutboxJob

PATIENT = {"resourceType": "Patient", "active": True}


async def _enqueue(store, kind="test.send", key="k1", payload=None, **options) -> OutboxJob:
    async with store.unit_of_work() as uow:
        return await uow.enqueue(kind, key, payload if payload is not None else {"n": 1}, **options)


def _later(job: OutboxJob, seconds: float) -> datetime:
    return job.available_at + timedelta(seconds=seconds)


async def test_a_job_commits_with_the_resource_written_beside_it(store):
    async with store.unit_of_work() as uow:
        version = await uow.write("Patient", "p1", PATIENT, method="PUT")
        job = await uow.enqueue("test.send", "msg-1", {"patient": "Patient/p1", "nested": {"a.b": [1, 2**40]}})
        assert await store.get_job(job.id) is None  # not visible to others before commit
    assert (await store.read("Patient", "p1")).version == version.version == 1
    stored = await store.get_job(job.id)
    assert stored == job
    assert (stored.kind, stored.key, stored.state, stored.attempts) == ("test.send", "msg-1", PENDING, 0)
    assert stored.payload == {"patient": "Patient/p1", "nested": {"a.b": [1, 2**40]}}
    assert stored.leased_until is None and stored.lease_token is None and stored.last_error is None
    # created with the change: at its lastUpdated, and due at once
    assert stored.created_at == stored.available_at == stored.updated_at == version.last_updated


async def test_a_unit_of_work_that_raises_leaves_neither_resource_nor_job(store):
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await uow.write("Patient", "p1", PATIENT, method="PUT")
            job = await uow.enqueue("test.send", "msg-1", {"n": 1})
            raise RuntimeError("a later step failed")
    assert await store.read("Patient", "p1") is None
    assert await store.get_job(job.id) is None
    assert await store.jobs() == []
    # and the key is free again
    again = await _enqueue(store, key="msg-1")
    assert (await store.get_job(again.id)).state == PENDING


async def test_a_unit_of_work_that_only_enqueues_commits(store):
    job = await _enqueue(store)
    assert (await store.get_job(job.id)).state == PENDING


async def test_a_duplicate_key_is_one_job(store):
    first = await _enqueue(store, key="msg-1", payload={"n": 1})
    second = await _enqueue(store, key="msg-1", payload={"n": 2})
    assert second.id == first.id and second.payload == {"n": 1}
    async with store.unit_of_work() as uow:  # twice in one unit of work
        a = await uow.enqueue("test.send", "msg-2", {"n": 1})
        b = await uow.enqueue("test.send", "msg-2", {"n": 2})
        other_kind = await uow.enqueue("test.other", "msg-2", {"n": 3})  # keys are unique per kind
    assert a.id == b.id and other_kind.id != a.id
    assert sorted((j.kind, j.key) for j in await store.jobs()) == [
        ("test.other", "msg-2"), ("test.send", "msg-1"), ("test.send", "msg-2")]


async def test_a_duplicate_of_a_finished_job_is_still_the_same_job(store):
    job = await _enqueue(store)
    [claimed] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 0))
    assert await store.complete_job(job.id, lease_token=claimed.lease_token, now=_later(job, 1))
    again = await _enqueue(store)
    assert again.id == job.id and again.state == DONE


async def test_claim_leases_due_jobs_and_counts_the_attempt(store):
    job = await _enqueue(store)
    now = _later(job, 0)
    [claimed] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=now)
    assert claimed.id == job.id and claimed.state == LEASED and claimed.attempts == 1
    assert claimed.leased_until == now + timedelta(seconds=30) and claimed.lease_token
    assert claimed.payload == job.payload
    assert await store.get_job(job.id) == claimed


async def test_a_leased_job_is_not_claimed_again(store):
    job = await _enqueue(store)
    assert len(await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 0))) == 1
    assert await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 29)) == []


async def test_claim_respects_available_at_kinds_and_limit(store):
    base = datetime.now(timezone.utc)
    async with store.unit_of_work() as uow:
        later = await uow.enqueue("test.send", "later", {}, available_at=base + timedelta(minutes=5))
        for n in range(3):
            await uow.enqueue("test.send", f"now-{n}", {})
        await uow.enqueue("test.other", "other", {})
    assert abs(later.available_at - (base + timedelta(minutes=5))) <= timedelta(milliseconds=1)  # ms precision
    first = await store.claim_jobs(["test.send"], limit=2, lease_seconds=600, now=base + timedelta(seconds=1))
    second = await store.claim_jobs(["test.send"], limit=5, lease_seconds=600, now=base + timedelta(seconds=1))
    assert len(first) == 2 and len(second) == 1
    assert {j.key for j in first + second} == {"now-0", "now-1", "now-2"}
    assert await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=base + timedelta(seconds=2)) == []
    [due] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=600,
                                   now=base + timedelta(minutes=5, seconds=1))
    assert due.key == "later"
    assert await store.claim_jobs([], limit=5, lease_seconds=30) == []
    assert [j.key for j in await store.claim_jobs(["test.other", "x"], limit=5, lease_seconds=30,
                                                  now=base + timedelta(seconds=1))] == ["other"]


async def test_an_expired_lease_is_claimable_again_and_the_stale_holder_can_change_nothing(store):
    job = await _enqueue(store)
    [crashed] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 0))
    [taken] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 30))
    assert taken.id == job.id and taken.attempts == 2 and taken.lease_token != crashed.lease_token
    # the first worker wakes up late: none of its outcomes applies
    assert not await store.complete_job(job.id, lease_token=crashed.lease_token, now=_later(job, 31))
    assert not await store.retry_job(job.id, lease_token=crashed.lease_token, available_at=_later(job, 60),
                                     error="late", now=_later(job, 31))
    assert not await store.dead_letter_job(job.id, lease_token=crashed.lease_token, error="late", now=_later(job, 31))
    assert await store.get_job(job.id) == taken
    assert await store.complete_job(job.id, lease_token=taken.lease_token, now=_later(job, 32))
    done = await store.get_job(job.id)
    assert done.state == DONE and done.attempts == 2 and done.lease_token is None and done.leased_until is None
    assert done.updated_at == _later(job, 32)
    assert not await store.complete_job(job.id, lease_token=taken.lease_token)  # once only
    assert await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 3600)) == []


async def test_retry_reschedules_with_the_error(store):
    job = await _enqueue(store)
    [claimed] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 0))
    assert await store.retry_job(job.id, lease_token=claimed.lease_token, available_at=_later(job, 10),
                                 error="gateway 503", now=_later(job, 1))
    retried = await store.get_job(job.id)
    assert (retried.state, retried.attempts, retried.last_error) == (PENDING, 1, "gateway 503")
    assert retried.available_at == _later(job, 10) and retried.lease_token is None and retried.leased_until is None
    assert await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 9)) == []
    [again] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 10))
    assert again.attempts == 2 and again.last_error == "gateway 503"


async def test_errors_are_cut_short(store):
    job = await _enqueue(store)
    [claimed] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 0))
    assert await store.retry_job(job.id, lease_token=claimed.lease_token, available_at=_later(job, 1),
                                 error="x" * 5000, now=_later(job, 0))
    assert len((await store.get_job(job.id)).last_error) == MAX_ERROR_CHARS


async def test_dead_letter_and_requeue(store):
    job = await _enqueue(store)
    [claimed] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 0))
    assert await store.requeue_job(job.id) is None  # only dead jobs are requeued
    assert await store.dead_letter_job(job.id, lease_token=claimed.lease_token, error="rejected: bad NPI",
                                       now=_later(job, 1))
    dead = await store.get_job(job.id)
    assert (dead.state, dead.attempts, dead.last_error, dead.lease_token) == (DEAD, 1, "rejected: bad NPI", None)
    assert await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 3600)) == []
    requeued = await store.requeue_job(job.id, now=_later(job, 100))
    assert (requeued.state, requeued.attempts, requeued.available_at) == (PENDING, 0, _later(job, 100))
    assert await store.get_job(job.id) == requeued
    assert await store.requeue_job(job.id) is None  # not dead any more
    assert await store.requeue_job("no-such-job") is None
    [again] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=30, now=_later(job, 100))
    assert again.attempts == 1
    # an outcome recorded under the lease that preceded the dead letter cannot touch the job
    assert not await store.complete_job(job.id, lease_token=claimed.lease_token)


# The worker runs beside the server's writes. A claim or an outcome recorded while a unit of work is
# open (MongoDB: at once, outside its transaction; SQLite: queued behind it on the one writer) is
# never undone by that unit of work's commit or rollback, and never leases an uncommitted job.


async def _beside_a_unit_of_work(store, call, *, fail: bool):
    """Start `call()` while a unit of work (writing a resource and enqueueing a job) is open; end
    the unit of work (raising inside it when `fail`); return (call's result, the enqueued job)."""
    task = None
    try:
        async with store.unit_of_work() as uow:
            await uow.write("Patient", "beside", PATIENT, method="PUT")
            job = await uow.enqueue("test.send", "enqueued-beside", {})
            task = asyncio.create_task(call())
            await asyncio.sleep(0.05)
            if fail:
                raise RuntimeError("the unit of work fails")
    except RuntimeError:
        pass
    return await task, job


async def test_a_claim_beside_a_committing_unit_of_work_survives_its_commit(store):
    job = await _enqueue(store, key="committed")
    claimed, enqueued = await _beside_a_unit_of_work(
        store, lambda: store.claim_jobs(["test.send"], limit=5, lease_seconds=600), fail=False)
    by_key = {j.key: j for j in claimed}
    assert (await store.get_job(job.id)).lease_token == by_key["committed"].lease_token
    assert (await store.read("Patient", "beside")).version == 1
    # the job committed beside it is pending, unless the claim ran after the commit (SQLite) and took it
    beside = await store.get_job(enqueued.id)
    assert beside.state == (LEASED if "enqueued-beside" in by_key else PENDING)


async def test_a_claim_beside_a_failing_unit_of_work_survives_and_misses_its_job(store):
    job = await _enqueue(store, key="committed")
    claimed, enqueued = await _beside_a_unit_of_work(
        store, lambda: store.claim_jobs(["test.send"], limit=5, lease_seconds=600), fail=True)
    assert [j.key for j in claimed] == ["committed"]
    assert (await store.get_job(job.id)).lease_token == claimed[0].lease_token
    assert await store.get_job(enqueued.id) is None and await store.read("Patient", "beside") is None


async def test_an_outcome_beside_a_failing_unit_of_work_survives(store):
    job = await _enqueue(store, key="committed")
    [claimed] = await store.claim_jobs(["test.send"], limit=5, lease_seconds=600)
    completed, _ = await _beside_a_unit_of_work(
        store, lambda: store.complete_job(job.id, lease_token=claimed.lease_token), fail=True)
    assert completed and (await store.get_job(job.id)).state == DONE


async def test_jobs_filters_by_kind_and_state(store):
    async with store.unit_of_work() as uow:
        a = await uow.enqueue("test.send", "a", {})
        b = await uow.enqueue("test.send", "b", {})
        c = await uow.enqueue("test.other", "c", {})
    [claimed] = await store.claim_jobs(["test.other"], limit=5, lease_seconds=30, now=_later(a, 0))
    assert await store.dead_letter_job(c.id, lease_token=claimed.lease_token, error="no", now=_later(a, 0))

    def ids(jobs):
        return {j.id for j in jobs}

    assert ids(await store.jobs()) == {a.id, b.id, c.id}
    assert ids(await store.jobs(kind="test.send")) == {a.id, b.id}
    assert ids(await store.jobs(states=[DEAD])) == {c.id}
    assert ids(await store.jobs(kind="test.send", states=[DEAD])) == set()
    assert ids(await store.jobs(states=[PENDING, DEAD])) == {a.id, b.id, c.id}
    assert await store.jobs(states=[]) == []
    assert len(await store.jobs(limit=2)) == 2
    assert await store.get_job("no-such-job") is None


async def test_jobs_lists_newest_first(store):
    for key in ("first", "second", "third"):
        await _enqueue(store, key=key)
        # distinct creation times, so any backend orders them the same way
        await asyncio.sleep(0.002)
    assert [j.key for j in await store.jobs()] == ["third", "second", "first"]


async def test_jobs_survive_reopening(store):
    job = await _enqueue(store)
    await store.close()
    await store.open()
    assert await store.get_job(job.id) == job


# -- MongoDB without transactions (fhirTransactions=off): jobs held back until the unit of work ends


async def _standalone_store():
    pytest.importorskip("mongomock", reason="needs mongomock (pip install -e '.[test]')")
    from fhir_server.storage.mongo import MongoStore
    from fhir_server.storage.mongo.fake import FakeAsyncMongoClient

    store = MongoStore("mongodb://fake/fhir", client=FakeAsyncMongoClient(replica_set=False), transactions=False)
    await store.open()
    return store


async def test_mongo_without_transactions_inserts_jobs_only_when_the_unit_of_work_ends_cleanly():
    store = await _standalone_store()
    try:
        async with store.unit_of_work() as uow:
            await uow.write("Patient", "p1", PATIENT, method="PUT")
            job = await uow.enqueue("test.send", "k1", {"n": 1})
            assert await uow.enqueue("test.send", "k1", {"n": 2}) == job
            assert await store.get_job(job.id) is None  # held back: no worker can run it yet
        assert await store.get_job(job.id) == job
        assert (await _enqueue(store, key="k1")).id == job.id

        with pytest.raises(RuntimeError):
            async with store.unit_of_work() as uow:
                await uow.write("Patient", "p2", PATIENT, method="PUT")
                dropped = await uow.enqueue("test.send", "k2", {})
                raise RuntimeError("a later step failed")
        assert await store.read("Patient", "p2") is None
        assert await store.get_job(dropped.id) is None and len(await store.jobs()) == 1
    finally:
        await store.close()

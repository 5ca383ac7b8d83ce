"""The outbox worker (fhir_server/outbox/worker.py) against the SQLite store: outcomes of a handler,
backoff on a fake clock, dead letters, crashed workers, two workers on one database, the
background loop (notify, stop), and what reaches the logs."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timedelta, timezone

import pytest

from fhir_server.outbox import Backoff, OutboxWorker, Permanent, RetryLater
from fhir_server.storage import open_store
from fhir_server.storage.base import DEAD, DONE, LEASED, PENDING

KIND = "test.send"


class Clock:
    """A settable wall clock, a little ahead of the real one (jobs are created at real time), in
    whole milliseconds (what the stores keep)."""

    def __init__(self):
        now = datetime.now(timezone.utc) + timedelta(seconds=1)
        self.now = now.replace(microsecond=now.microsecond // 1000 * 1000)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture()
async def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'outbox.db'}")
    await s.open()
    yield s
    await s.close()


async def _enqueue(store, key="k1", payload=None, kind=KIND):
    async with store.unit_of_work() as uow:
        return await uow.enqueue(kind, key, payload if payload is not None else {"n": 1})


def _worker(store, handler, clock=None, **options) -> OutboxWorker:
    options.setdefault("lease_seconds", 30)
    options.setdefault("poll_interval", 0.05)
    return OutboxWorker(store, {KIND: handler}, clock=clock or Clock(), **options)


# -- outcomes ----------------------------------------------------------------------------------


async def test_a_handler_that_returns_completes_the_job(store):
    seen = []

    async def handler(job):
        seen.append((job.key, job.payload, job.attempts))

    job = await _enqueue(store, payload={"to": "pharmacy-1"})
    worker = _worker(store, handler)
    assert await worker.run_once() == 1
    assert seen == [("k1", {"to": "pharmacy-1"}, 1)]
    done = await store.get_job(job.id)
    assert (done.state, done.attempts, done.last_error) == (DONE, 1, None)
    assert await worker.run_once() == 0 and len(seen) == 1


async def test_retry_later_backs_off_exponentially_with_full_jitter(store):
    clock = Clock()
    attempts = []

    async def handler(job):
        attempts.append(clock.now)
        raise RetryLater("gateway 503")

    job = await _enqueue(store)
    worker = _worker(store, handler, clock, max_attempts=10, backoff=Backoff(base=2, cap=5), rand=lambda: 0.5)
    expected_delays = [1.0, 2.0, 2.5, 2.5]  # 0.5 * min(5, 2 * 2**(n-1))
    for n, delay in enumerate(expected_delays, start=1):
        assert await worker.run_once() == 1
        retried = await store.get_job(job.id)
        assert (retried.state, retried.attempts, retried.last_error) == (PENDING, n, "gateway 503")
        assert retried.available_at == clock.now + timedelta(seconds=delay)
        clock.advance(delay - 0.01)
        assert await worker.run_once() == 0  # not due yet
        clock.advance(0.01)
    assert len(attempts) == len(expected_delays)


async def test_retry_later_after_overrides_the_backoff(store):
    clock = Clock()

    async def handler(job):
        raise RetryLater("rate limited", after=120)

    job = await _enqueue(store)
    await _worker(store, handler, clock).run_once()
    assert (await store.get_job(job.id)).available_at == clock.now + timedelta(seconds=120)


def test_backoff_bounds():
    b = Backoff(base=1, cap=60)
    assert [Backoff(base=1, cap=60, jitter=False).delay(n) for n in (1, 2, 3, 7, 8, 30)] == [1, 2, 4, 60, 60, 60]
    assert b.delay(3, lambda: 0.0) == 0.0 and b.delay(3, lambda: 0.999) == pytest.approx(3.996)
    rng = random.Random(7)
    assert all(0 <= b.delay(n, rng.random) <= min(60, 2 ** (n - 1)) for n in range(1, 40))


async def test_any_exception_is_retried_and_recorded_without_its_message(store, caplog):
    async def handler(job):
        raise ValueError(f"no pharmacy for {job.payload['patient']}")  # a message quoting patient data

    job = await _enqueue(store, payload={"patient": "SECRET-PATIENT Smith"})
    with caplog.at_level(logging.DEBUG, logger="fhir_server.outbox"):
        await _worker(store, handler).run_once()
    retried = await store.get_job(job.id)
    assert retried.state == PENDING and retried.last_error.startswith("ValueError at test_outbox_worker.py:")
    assert "in handler" in retried.last_error
    assert "SECRET" not in retried.last_error and "SECRET" not in caplog.text
    assert job.id in caplog.text and KIND in caplog.text
    assert "SECRET" not in repr(retried)  # the payload stays out of a job's repr too


async def test_a_job_is_dead_lettered_after_max_attempts(store, caplog):
    clock = Clock()
    calls = []

    async def handler(job):
        calls.append(job.attempts)
        raise RetryLater("gateway 503")

    job = await _enqueue(store, payload={"secret": "SECRET-PAYLOAD"})
    worker = _worker(store, handler, clock, max_attempts=3, backoff=Backoff(base=1, cap=1, jitter=False))
    with caplog.at_level(logging.DEBUG, logger="fhir_server.outbox"):
        for _ in range(5):
            await worker.run_once()
            clock.advance(1)
    dead = await store.get_job(job.id)
    assert calls == [1, 2, 3]
    assert (dead.state, dead.attempts, dead.last_error) == (DEAD, 3, "gateway 503")
    assert "dead-lettered" in caplog.text and "SECRET" not in caplog.text
    # an operator's retry: pending again, with a fresh count
    await store.requeue_job(job.id, now=clock.now)
    await worker.run_once()
    assert calls == [1, 2, 3, 1]


async def test_permanent_dead_letters_at_once(store):
    calls = []

    async def handler(job):
        calls.append(job.id)
        raise Permanent("rejected by the pharmacy: unknown NCPDP ID")

    job = await _enqueue(store)
    worker = _worker(store, handler, max_attempts=10)
    await worker.run_once()
    dead = await store.get_job(job.id)
    assert (dead.state, dead.attempts, dead.last_error) == (DEAD, 1, "rejected by the pharmacy: unknown NCPDP ID")
    assert await worker.run_once() == 0 and len(calls) == 1


async def test_only_the_kinds_with_a_handler_are_claimed(store):
    await _enqueue(store, kind="test.other")

    async def handler(job):
        raise AssertionError("not this kind")

    assert await _worker(store, handler).run_once() == 0
    assert [j.state for j in await store.jobs(kind="test.other")] == [PENDING]


# -- crashes and leases ------------------------------------------------------------------------


async def test_a_job_whose_worker_crashed_mid_handler_is_retried_once_its_lease_expires(store):
    clock = Clock()
    job = await _enqueue(store)
    # a worker claims the job and dies before recording anything: its lease is simply abandoned
    [abandoned] = await store.claim_jobs([KIND], limit=1, lease_seconds=30, now=clock.now)
    calls = []

    async def handler(job):
        calls.append(job.attempts)

    worker = _worker(store, handler, clock, lease_seconds=30)
    assert await worker.run_once() == 0  # still leased
    clock.advance(29)
    assert await worker.run_once() == 0
    clock.advance(1)
    assert await worker.run_once() == 1
    assert calls == [2]
    assert (await store.get_job(job.id)).state == DONE
    # the crashed worker comes back late: it can no longer change the job
    assert not await store.retry_job(job.id, lease_token=abandoned.lease_token, available_at=clock.now, error="x")


async def test_a_job_abandoned_more_than_max_attempts_times_is_dead_lettered_without_running(store):
    clock = Clock()
    job = await _enqueue(store)
    for _ in range(3):  # three workers died on it (say, the handler crashes the process)
        assert len(await store.claim_jobs([KIND], limit=1, lease_seconds=30, now=clock.now)) == 1
        clock.advance(30)

    async def handler(job):
        raise AssertionError("must not run again")

    await _worker(store, handler, clock, max_attempts=3).run_once()
    dead = await store.get_job(job.id)
    assert dead.state == DEAD and dead.attempts == 4 and dead.last_error.startswith("abandoned: 3 attempts")


async def test_a_handler_that_outlives_its_lease_is_cancelled_and_retried(store):
    job = await _enqueue(store)

    async def handler(job):
        await asyncio.sleep(10)

    worker = _worker(store, handler, lease_seconds=0.5, handler_timeout=0.1)
    await worker.run_once()
    retried = await store.get_job(job.id)
    assert (retried.state, retried.attempts, retried.last_error) == (PENDING, 1, "timed out after 0.1 s")


async def test_a_handlers_own_timeout_error_is_an_ordinary_failure(store):
    job = await _enqueue(store)

    async def handler(job):
        raise TimeoutError("connect to SECRET-HOST timed out")

    await _worker(store, handler).run_once()
    error = (await store.get_job(job.id)).last_error
    assert error.startswith("TimeoutError at ") and "SECRET" not in error


async def test_a_late_outcome_after_the_lease_was_taken_over_changes_nothing(store, caplog):
    clock = Clock()
    job = await _enqueue(store)
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(job):
        started.set()
        await release.wait()

    first = _worker(store, slow, clock, lease_seconds=30, handler_timeout=30)
    run = asyncio.create_task(first.run_once())
    await started.wait()
    clock.advance(31)  # the wall clock passes the lease (the handler's own timeout has not fired)
    second_calls = []

    async def fast(job):
        second_calls.append(job.attempts)

    await _worker(store, fast, clock).run_once()
    assert second_calls == [2] and (await store.get_job(job.id)).state == DONE
    with caplog.at_level(logging.WARNING, logger="fhir_server.outbox"):
        release.set()
        await run
    assert "lease lost" in caplog.text
    after = await store.get_job(job.id)
    assert (after.state, after.attempts) == (DONE, 2)


# -- two workers -------------------------------------------------------------------------------


async def test_two_workers_on_one_database_never_run_a_job_twice_or_at_once(tmp_path):
    """Two stores on one file, as two server processes (--workers 2) each with a worker."""
    path = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [open_store(path), open_store(path)]
    for s in stores:
        await s.open()
    try:
        async with stores[0].unit_of_work() as uow:
            jobs = [await uow.enqueue(KIND, f"k{n}", {"n": n}) for n in range(60)]
        running: set[str] = set()
        runs: list[tuple[str, str]] = []
        overlaps: list[str] = []
        rng = random.Random(3)

        def handler_for(name):
            async def handler(job):
                if job.id in running:
                    overlaps.append(job.id)
                running.add(job.id)
                try:
                    runs.append((name, job.id))
                    await asyncio.sleep(rng.random() * 0.01)
                finally:
                    running.discard(job.id)
            return handler

        workers = [OutboxWorker(s, {KIND: handler_for(f"w{i}")}, lease_seconds=30, poll_interval=0.02,
                                concurrency=4) for i, s in enumerate(stores)]
        for w in workers:
            w.start()
        for _ in range(500):
            if len(await stores[0].jobs(states=[DONE], limit=1000)) == len(jobs):
                break
            await asyncio.sleep(0.02)
        for w in workers:
            await w.stop()
        assert overlaps == []
        assert sorted(job_id for _, job_id in runs) == sorted(j.id for j in jobs)  # each exactly once
        assert {name for name, _ in runs} == {"w0", "w1"}  # both took part
        assert all(j.attempts == 1 for j in await stores[0].jobs(limit=1000))
    finally:
        for s in stores:
            await s.close()


async def test_two_workers_with_short_leases_never_overlap_on_a_slow_job(tmp_path):
    """A handler slower than its lease is cancelled before the lease can pass to the other worker."""
    path = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [open_store(path), open_store(path)]
    for s in stores:
        await s.open()
    try:
        job = await _enqueue(stores[0])
        running: set[str] = set()
        overlaps: list[str] = []
        attempts: list[int] = []

        async def handler(job):
            if job.id in running:
                overlaps.append(job.id)
            running.add(job.id)
            try:
                attempts.append(job.attempts)
                if job.attempts < 3:
                    await asyncio.sleep(5)  # hangs: far beyond the lease
            finally:
                running.discard(job.id)

        # the handler is cancelled 0.2 s after the claim began, the lease ends 0.6 s after it
        workers = [OutboxWorker(s, {KIND: handler}, lease_seconds=0.6, handler_timeout=0.2, poll_interval=0.02,
                                backoff=Backoff(base=0.01, cap=0.01)) for s in stores]
        for w in workers:
            w.start()
        for _ in range(300):
            if (await stores[0].get_job(job.id)).state == DONE:
                break
            await asyncio.sleep(0.02)
        for w in workers:
            await w.stop()
        assert overlaps == [] and attempts == [1, 2, 3]
        assert (await stores[0].get_job(job.id)).state == DONE
    finally:
        for s in stores:
            await s.close()


# -- the background loop ---------------------------------------------------------------------


async def test_notify_wakes_the_worker_before_its_poll(store):
    done = asyncio.Event()

    async def handler(job):
        done.set()

    worker = OutboxWorker(store, {KIND: handler}, poll_interval=3600)
    worker.start()
    try:
        await asyncio.sleep(0.05)  # the worker found nothing and sleeps for an hour
        await _enqueue(store)
        worker.notify()
        await asyncio.wait_for(done.wait(), 2)
    finally:
        await worker.stop()
    assert [j.state for j in await store.jobs()] == [DONE]


async def test_stop_cancels_a_running_handler_after_the_grace_and_puts_its_job_back(store):
    started = asyncio.Event()

    async def handler(job):
        started.set()
        await asyncio.sleep(3600)

    job = await _enqueue(store)
    worker = OutboxWorker(store, {KIND: handler}, poll_interval=0.02, stop_grace=0.05)
    worker.start()
    await asyncio.wait_for(started.wait(), 2)
    await worker.stop()
    back = await store.get_job(job.id)
    assert (back.state, back.attempts, back.last_error) == (PENDING, 1, "interrupted: the worker stopped")
    assert back.lease_token is None


async def test_stop_lets_a_handler_finish_within_the_grace(store):
    started = asyncio.Event()

    async def handler(job):
        started.set()
        await asyncio.sleep(0.05)

    job = await _enqueue(store)
    worker = OutboxWorker(store, {KIND: handler}, poll_interval=0.02, stop_grace=5)
    worker.start()
    await asyncio.wait_for(started.wait(), 2)
    await worker.stop()
    assert (await store.get_job(job.id)).state == DONE


async def test_the_loop_survives_a_failing_claim(store, monkeypatch):
    calls = 0
    real_claim = store.claim_jobs

    async def flaky_claim(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk hiccup")
        return await real_claim(*args, **kwargs)

    monkeypatch.setattr(store, "claim_jobs", flaky_claim)
    done = asyncio.Event()

    async def handler(job):
        done.set()

    await _enqueue(store)
    worker = OutboxWorker(store, {KIND: handler}, poll_interval=0.02)
    worker.start()
    try:
        await asyncio.wait_for(done.wait(), 2)
    finally:
        await worker.stop()
    assert calls >= 2


async def test_a_stopped_worker_can_start_again(store):
    worker = OutboxWorker(store, {KIND: lambda job: asyncio.sleep(0)}, poll_interval=0.02)
    worker.start()
    await worker.stop()
    worker.start()
    await _enqueue(store)
    worker.notify()
    for _ in range(100):
        if (await store.jobs())[0].state == DONE:
            break
        await asyncio.sleep(0.02)
    await worker.stop()
    assert (await store.jobs())[0].state == DONE


def test_options_are_checked():
    for bad in ({"lease_seconds": 0}, {"max_attempts": 0}, {"concurrency": 0}, {"poll_interval": 0},
                {"lease_seconds": 10, "handler_timeout": 11}):
        with pytest.raises(ValueError):
            OutboxWorker(object(), {}, **bad)


# -- the SQLite schema ---------------------------------------------------------------------------


async def test_an_existing_database_gets_the_outbox_table(tmp_path):
    """A database made before the outbox existed (schema version 2) gains it at start-up."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = open_store(url)
    await old.open()
    async with old.unit_of_work() as uow:
        await uow.write("Patient", "p1", {"resourceType": "Patient"}, method="PUT")

    def downgrade():
        old._threads.writer.executescript("DROP TABLE outbox; PRAGMA user_version = 2;")

    await old._threads.in_writer(downgrade)
    await old.close()
    store = open_store(url)
    await store.open()
    try:
        assert (await store.read("Patient", "p1")).version == 1
        job = await _enqueue(store)
        assert (await store.get_job(job.id)).state == PENDING
        version = await store._threads.in_reader(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        assert version == 3
    finally:
        await store.close()


async def test_claims_wait_for_an_open_unit_of_work_instead_of_joining_it(store):
    """The writer connection is shared: an outbox change made while a unit of work is open must not
    ride in (and roll back with) that unit of work's transaction."""
    job = await _enqueue(store)
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await uow.write("Patient", "p1", {"resourceType": "Patient"}, method="PUT")
            claim = asyncio.create_task(store.claim_jobs([KIND], limit=1, lease_seconds=30))
            await asyncio.sleep(0.05)
            assert not claim.done()  # queued behind the unit of work
            raise RuntimeError("the unit of work fails")
    [claimed] = await claim
    assert (await store.get_job(job.id)).state == LEASED and claimed.attempts == 1


async def test_the_dead_letter_hook_hears_of_every_job_given_up_and_its_failure_is_contained(store):
    heard = []

    async def handler(job):
        raise Permanent("refused")

    async def on_dead(job, error):
        heard.append((job.key, error))
        raise RuntimeError("the hook itself failed")

    job = await _enqueue(store, key="given-up")
    worker = _worker(store, handler, on_dead_letter={KIND: on_dead})
    await worker.run_once()
    assert heard == [("given-up", "refused")]
    assert (await store.get_job(job.id)).state == DEAD

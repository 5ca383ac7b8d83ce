"""The outbox worker: leases due jobs from the store and runs the handler of each job's kind.

Delivery is at least once. A job is leased for `lease_seconds`; its handler runs under a timeout a
little shorter than the lease (so a hung handler is cancelled before another worker may take the
job over); the outcome is recorded under the lease (store.complete_job / retry_job /
dead_letter_job with the job's lease_token), and a worker that lost its lease changes nothing.
A worker that dies mid-job leaves its lease to expire; the job is then claimed again.

Outcomes of a handler:

- returns: the job is done.
- raises RetryLater(error, after=None): retried `after` seconds later, or after the backoff.
- raises Permanent(error): dead-lettered at once (an operator may requeue it: store.requeue_job).
- raises anything else, or times out: retried after the backoff.
- after `max_attempts` attempts, a failing job is dead-lettered instead of retried; so is a job
  claimed for the (max_attempts + 1)th time, whose earlier attempts all ended without a result
  (its workers crashed or hung past their lease).

Backoff is exponential with full jitter: attempt n waits uniform(0, min(cap, base * 2**(n-1))).

Logs name the job's kind, id and attempt, and what went wrong, never its payload (which may
hold patient data): the error text of RetryLater and Permanent is recorded and logged as the
handler wrote it (handlers must keep patient data out of it); for any other exception only its
class and where it was raised (file, line, function) are, not its message, which may quote data.
"""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable, Mapping

from ..storage.base import OutboxJob

log = logging.getLogger("fhir_server.outbox")

Handler = Callable[[OutboxJob], Awaitable[None]]


class RetryLater(Exception):
    """The job could not be done now: try again `after` seconds later (None: the worker's backoff).
    `error` is recorded as the job's last_error and logged: no patient data in it."""

    def __init__(self, error: str, after: float | None = None):
        super().__init__(error)
        self.error = error
        self.after = after


class Permanent(Exception):
    """The job can never succeed as it is (the receiver rejected it): dead-letter it now.
    `error` is recorded as the job's last_error and logged: no patient data in it."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter (the delay is uniform between 0 and the exponential
    ceiling), so retries of many jobs that failed together spread out."""

    base: float = 2.0  # seconds: the ceiling of the first retry
    cap: float = 3600.0  # seconds: the ceiling never grows beyond this
    jitter: bool = True  # False: wait the ceiling itself

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The wait after failed attempt number `attempt` (1 for the first)."""
        ceiling = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        return rand() * ceiling if self.jitter else ceiling


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def describe(exc: BaseException) -> str:
    """An exception as class and place, without its message (which may quote patient data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in reversed(frames[-3:]))
    name = type(exc).__qualname__
    module = type(exc).__module__
    if module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    return f"{name} at {where}" if where else name


class OutboxWorker:
    def __init__(
        self,
        store,
        handlers: Mapping[str, Handler],
        *,
        lease_seconds: float = 60.0,
        poll_interval: float = 1.0,
        max_attempts: int = 10,
        backoff: Backoff = Backoff(),
        concurrency: int = 8,
        on_dead_letter: "Mapping[str, Callable[[OutboxJob, str], Awaitable[None]]] | None" = None,
        handler_timeout: float | None = None,
        clock: Callable[[], datetime] = _utc_now,
        rand: Callable[[], float] = random.random,
        stop_grace: float = 10.0,
    ):
        """`store`: the Store (its outbox methods). `handlers`: job kind -> async handler(job); only
        these kinds are claimed. `concurrency`: jobs run at once (and claimed per round trip).
        `handler_timeout` (default: 80% of the lease) cancels a handler that runs too long, before
        its lease could pass to another worker. `clock` and `rand` are for tests."""
        if lease_seconds <= 0 or poll_interval <= 0 or max_attempts < 1 or concurrency < 1:
            raise ValueError("lease_seconds and poll_interval must be positive, max_attempts and concurrency >= 1")
        self.store = store
        self.handlers = dict(handlers)
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        # kind -> what to do when a job of that kind is given up (however that happens: the
        # handler's Permanent, the last failed attempt, a job abandoned by crashes), e.g. mark the
        # delivery's Task dead-letter. Best effort: its failure is logged, the job stays dead.
        self.on_dead_letter = dict(on_dead_letter or {})
        self.backoff = backoff
        self.concurrency = concurrency
        self.handler_timeout = handler_timeout if handler_timeout is not None else lease_seconds * 0.8
        if not 0 < self.handler_timeout <= lease_seconds:
            raise ValueError("handler_timeout must be positive and no longer than the lease")
        self.clock = clock
        self.rand = rand
        self.stop_grace = stop_grace
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    # -- one round (tests, a CLI's --once) ---------------------------------------------------

    async def run_once(self) -> int:
        """Claim up to `concurrency` due jobs, run them all to their outcome; the number claimed."""
        jobs, deadline = await self._claim(self.concurrency)
        if jobs:
            await asyncio.gather(*(self._process(job, deadline) for job in jobs))
        return len(jobs)

    # -- as a background task ------------------------------------------------------------------

    def notify(self) -> None:
        """A job was just committed: look for due jobs now instead of at the next poll.
        Call it on the worker's event loop (after the unit of work that enqueued has committed)."""
        self._wake.set()

    def start(self) -> asyncio.Task:
        """Run the loop as a task of the running event loop (e.g. from the app's lifespan)."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("the outbox worker is already running")
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self.run_forever(), name="outbox-worker")
        return self._task

    async def stop(self) -> None:
        """Stop claiming, give running handlers `stop_grace` seconds, then cancel them (their jobs
        are put back as pending, due at once)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            finally:
                self._task = None

    async def run_forever(self) -> None:
        """Keep up to `concurrency` jobs running; claim again when one finishes, on notify(), or
        every `poll_interval` seconds (jobs retried later come due on their own)."""
        try:
            while not self._stopping:
                self._wake.clear()
                free = self.concurrency - len(self._running)
                claimed: list[OutboxJob] = []
                if free > 0:
                    try:
                        claimed, deadline = await self._claim(free)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - the store may be briefly unreachable: poll again
                        log.error("outbox: claiming jobs failed: %s", describe(exc))
                    for job in claimed:
                        task = asyncio.get_running_loop().create_task(
                            self._process(job, deadline), name=f"outbox-job-{job.id}")
                        self._running.add(task)
                        task.add_done_callback(self._finished)
                if claimed and len(claimed) == free:
                    continue  # every slot taken: the loop waits below for one to free up
                if self._stopping:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                except TimeoutError:
                    pass
        finally:
            await self._drain()
            self._stopping = False

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._wake.set()  # a slot is free

    async def _drain(self) -> None:
        if not self._running:
            return
        running = set(self._running)
        _, pending = await asyncio.wait(running, timeout=self.stop_grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one job ---------------------------------------------------------------------------------

    async def _claim(self, limit: int) -> tuple[list[OutboxJob], float]:
        """Due jobs, and the event-loop time their handlers must end by: measured from before the
        claim (whose `now` starts the lease), so time spent waiting for the store comes off it."""
        deadline = asyncio.get_running_loop().time() + self.handler_timeout
        jobs = await self.store.claim_jobs(list(self.handlers), limit=limit, lease_seconds=self.lease_seconds,
                                           now=self.clock())
        return jobs, deadline

    async def _process(self, job: OutboxJob, deadline: float) -> None:
        handler = self.handlers.get(job.kind)
        if handler is None:  # cannot happen: only the kinds of self.handlers are claimed
            return
        if job.attempts > self.max_attempts:
            await self._dead_letter(job, f"abandoned: {job.attempts - 1} attempts ended without a result "
                                         "(the worker stopped or the handler outlived its lease)")
            return
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                await handler(job)
        except Permanent as exc:
            await self._dead_letter(job, exc.error)
        except RetryLater as exc:
            await self._failed(job, exc.error, exc.after)
        except TimeoutError as exc:
            await self._failed(job, f"timed out after {self.handler_timeout:g} s" if timeout.expired()
                               else describe(exc), None)
        except asyncio.CancelledError:
            # stop(): put the job back at once rather than leaving it to its lease
            await self._release(job)
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a handler is a retry
            await self._failed(job, describe(exc), None)
        else:
            await self._record(job, "complete", self.store.complete_job(job.id, lease_token=job.lease_token,
                                                                         now=self.clock()))
            log.debug("outbox: %s job %s done (attempt %d)", job.kind, job.id, job.attempts)

    async def _failed(self, job: OutboxJob, error: str, after: float | None) -> None:
        if job.attempts >= self.max_attempts:
            await self._dead_letter(job, error)
            return
        delay = after if after is not None else self.backoff.delay(job.attempts, self.rand)
        now = self.clock()
        log.warning("outbox: %s job %s attempt %d failed, retry in %.1f s: %s",
                    job.kind, job.id, job.attempts, delay, error)
        await self._record(job, "retry", self.store.retry_job(
            job.id, lease_token=job.lease_token, available_at=now + timedelta(seconds=max(0.0, delay)),
            error=error, now=now))

    async def _dead_letter(self, job: OutboxJob, error: str) -> None:
        log.error("outbox: %s job %s dead-lettered after attempt %d: %s", job.kind, job.id, job.attempts, error)
        await self._record(job, "dead-letter", self.store.dead_letter_job(
            job.id, lease_token=job.lease_token, error=error, now=self.clock()))
        hook = self.on_dead_letter.get(job.kind)
        if hook is not None:
            try:
                await hook(job, error)
            except Exception as exc:  # noqa: BLE001 - the job is dead either way; say why the hook failed
                log.error("outbox: dead-letter hook of %s job %s failed: %s", job.kind, job.id, describe(exc))

    async def _release(self, job: OutboxJob) -> None:
        now = self.clock()
        try:
            await self.store.retry_job(job.id, lease_token=job.lease_token, available_at=now,
                                       error="interrupted: the worker stopped", now=now)
        except Exception as exc:  # noqa: BLE001 - the lease will expire anyway
            log.warning("outbox: could not release %s job %s: %s", job.kind, job.id, describe(exc))

    async def _record(self, job: OutboxJob, what: str, call: Awaitable[bool]) -> None:
        try:
            held = await call
        except Exception as exc:  # noqa: BLE001 - the lease will expire and the job run again
            log.error("outbox: could not record %s of %s job %s: %s", what, job.kind, job.id, describe(exc))
            return
        if not held:
            log.warning("outbox: %s job %s: lease lost before its %s was recorded (it outlived its lease; "
                        "another attempt may run)", job.kind, job.id, what)

"""The transactional outbox's worker (DESIGN.md, "outbox/"): jobs are enqueued by a storage unit
of work in the same commit as the change that needs them (UnitOfWork.enqueue, storage/base.py);
OutboxWorker leases them from the store and runs one handler per job kind, at least once, with
retries, backoff and a dead-letter state."""

from .worker import Backoff, Handler, OutboxWorker, Permanent, RetryLater

__all__ = ["Backoff", "Handler", "OutboxWorker", "Permanent", "RetryLater"]

"""`python -m fhir_server erx list|retry`: the e-prescribing outbox as an operator sees it.

- `erx list [--database URL] [--state pending|leased|done|dead] [--limit N]`: one tab-separated
  line per e-prescribing job ("erx.send" SCRIPT, "erx.fhir" FHIR pharmacies), newest first: id, kind, key (the SCRIPT MessageID), state, attempts,
  next (pending: when it is due; leased: when its lease ends; else "-"), last error ("-" if none).
  Never the payload (the message bytes hold patient data).
- `erx retry JOB_ID [--database URL]`: a dead job is sent again (same bytes, same MessageID): its
  transmission Task goes back to `retrying` (and the MedicationRequest its failure put on-hold back
  to active), then the job is requeued, due at once, with its attempts back to 0. A running server's
  worker picks it up at its next poll.

fhir_server/cli.py adds these with `add_commands(commands, default_database)`, as it does for
smart_auth/admin.py. A refused command prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from contextlib import asynccontextmanager
from datetime import datetime
from typing import AsyncIterator, Callable

from ..storage.sqlite.driver import DATABASE_ERRORS
from ..storage.base import DEAD, JOB_STATES, LEASED, PENDING, OutboxJob
from .delivery import JOB_KIND, reopen_transmission
from .fhir_pharmacy import JOB_KIND as FHIR_JOB_KIND

ERX_KINDS = (JOB_KIND, FHIR_JOB_KIND)  # SCRIPT through the gateway, FHIR to FHIR-native pharmacies

EXIT_REFUSED = 2
DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000


class AdminError(Exception):
    """A refused command; the message is one line for stderr."""


@asynccontextmanager
async def opened_store(database_url: str) -> AsyncIterator:
    from ..search.extract import extract_index  # writes (retry's Task) must keep the search index
    from ..storage import open_store

    try:
        store = open_store(database_url, indexer=extract_index)
    except ValueError as exc:
        raise AdminError(f"--database: {exc}") from None
    try:
        await store.open()
    except Exception as exc:  # noqa: BLE001 - sqlite3 / pymongo errors: one line, not a traceback
        raise AdminError(f"cannot open the database: {type(exc).__name__}: {exc}") from None
    try:
        yield store
    finally:
        await store.close()


def _time(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"


def _one_line(text: str | None) -> str:
    return " ".join(text.split()) if text else "-"


def job_line(job: OutboxJob) -> str:
    """id, kind, key, state, attempts, next, last error: tab-separated, never the payload."""
    upcoming = job.available_at if job.state == PENDING else job.leased_until if job.state == LEASED else None
    return "\t".join([job.id, job.kind, job.key, job.state, str(job.attempts), _time(upcoming),
                      _one_line(job.last_error)])


async def list_jobs(store, state: str | None = None, limit: int = DEFAULT_LIMIT) -> list[str]:
    if state is not None and state not in JOB_STATES:
        raise AdminError(f"--state must be one of {', '.join(JOB_STATES)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise AdminError(f"--limit must be between 1 and {MAX_LIMIT}")
    jobs = [job for kind in ERX_KINDS for job in await store.jobs(kind, [state] if state else None, limit)]
    jobs.sort(key=lambda job: job.created_at, reverse=True)
    return [job_line(job) for job in jobs[:limit]]


async def retry_job(store, job_id: str) -> str:
    job = await store.get_job(job_id)
    if job is None or job.kind not in ERX_KINDS:
        raise AdminError(f"no e-prescribing job {job_id!r}")
    if job.state != DEAD:
        raise AdminError(f"job {job_id} is {job.state}: only a dead job can be retried")
    reopened = await reopen_transmission(store, job)  # first: the resend's answers must be able to land
    requeued = await store.requeue_job(job_id)
    if requeued is None:
        raise AdminError(f"job {job_id} is no longer dead (another operator requeued it?)")
    task = f"; its Task is {reopened.after} again" if reopened is not None and reopened.written else ""
    return f"requeued job {job_id} (MessageID {job.key}): it will be sent again{task}"


# command line ----------------------------------------------------------------------------------

async def _list(args: argparse.Namespace) -> list[str]:
    async with opened_store(args.database) as store:
        return await list_jobs(store, args.state, args.limit)


async def _retry(args: argparse.Namespace) -> list[str]:
    async with opened_store(args.database) as store:
        return [await retry_job(store, args.job_id)]


async def _worker(args: argparse.Namespace) -> list[str]:
    from .config import ErxSettings
    from .standalone import run_worker

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ErxSettings(gateway_url=args.erx_gateway, sender_id=args.erx_sender_id,
                           max_attempts=args.erx_max_attempts)
    try:
        return await run_worker(args.database, settings, once=args.once)
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def _runner(action: Callable[[argparse.Namespace], object]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from pymongo.errors import PyMongoError

        try:
            lines = asyncio.run(action(args))
        except AdminError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except (*DATABASE_ERRORS, PyMongoError) as exc:  # the database failed mid-command (SQLite or SQLCipher)
            print(f"error: database: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        for line in lines:
            print(line)
        return 0

    return run


def add_commands(commands: argparse._SubParsersAction, default_database: str) -> None:
    """Add `erx list` and `erx retry`; each leaf sets `admin` to its handler (args -> exit status),
    which fhir_server/cli.py calls."""
    erx = commands.add_parser("erx", help="e-prescribing delivery: the outbox jobs that send SCRIPT messages")
    actions = erx.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="list e-prescribing jobs (erx.send, erx.fhir), newest first: id, kind, key (MessageID), "
                                              "state, attempts, next try, last error")
    listing.add_argument("--database", default=default_database, help="sqlite:/// or mongodb:// URL [FHIR_DATABASE]")
    listing.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="at most this many (default %(default)s)")
    listing.set_defaults(admin=_runner(_list))

    retry = actions.add_parser("retry", help="send a dead job again (same message, same MessageID)")
    retry.add_argument("job_id", metavar="JOB_ID")
    retry.add_argument("--database", default=default_database, help="sqlite:/// or mongodb:// URL [FHIR_DATABASE]")
    retry.set_defaults(admin=_runner(_retry))

    worker = actions.add_parser("worker", help="run the delivery worker without the HTTP server "
                                               "(Ctrl-C stops it; --once runs the due jobs and exits)")
    worker.add_argument("--database", default=default_database, help="sqlite:/// or mongodb:// URL [FHIR_DATABASE]")
    worker.add_argument("--erx-gateway", default=os.environ.get("FHIR_ERX_GATEWAY"),
                        help="the gateway URL [FHIR_ERX_GATEWAY]")
    worker.add_argument("--erx-sender-id", default=os.environ.get("FHIR_ERX_SENDER_ID", "TELEHEALTH"),
                        help="this system's account id at the gateway [FHIR_ERX_SENDER_ID]")
    worker.add_argument("--erx-max-attempts", type=int, default=int(os.environ.get("FHIR_ERX_MAX_ATTEMPTS", 8)),
                        help="deliveries tried before dead-lettering [FHIR_ERX_MAX_ATTEMPTS]")
    worker.add_argument("--once", action="store_true", help="run the jobs that are due, then exit")
    worker.set_defaults(admin=_runner(_worker))


def main(argv: list[str] | None = None) -> int:
    """`python -m fhir_server.erx.admin list|retry ...`: the same commands without the main CLI."""
    from ..config import Settings

    parser = argparse.ArgumentParser(prog="python -m fhir_server.erx.admin")
    add_commands(parser.add_subparsers(dest="command", required=True), Settings.from_env().database_url)
    args = parser.parse_args(["erx", *(argv if argv is not None else sys.argv[1:])])
    return args.admin(args)


if __name__ == "__main__":
    sys.exit(main())

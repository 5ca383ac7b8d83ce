"""Commands: `keys generate|rotate|list` (encryption keys), `backup`, `restore`; and the start-up
check of data at rest that `serve` runs (check_at_rest).

Each command sets `admin` to its handler (args -> exit status), which fhir_server/cli.py calls; a
refusal is one line on stderr and exit status 2, never a traceback. Key material is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Callable

from ..storage.sqlite import driver
from . import keyring
from .backup import BackupError, backup, restore
from .keyring import KeyRing, KeyRingError
from .offline import DatabaseInUse
from .rotate import rotate, sqlite_path

log = logging.getLogger("fhir_server")
EXIT_REFUSED = 2
_REFUSALS = (KeyRingError, BackupError, DatabaseInUse, driver.StoreKeyError, *driver.DATABASE_ERRORS)


def check_at_rest(settings) -> None:
    """Before serving: load the key ring, say whether data at rest is encrypted, and stop (exit 2,
    one line) when the store does not open with it."""
    try:
        ring = keyring.configure(settings.encryption_key_file)
        if ring is None:
            log.warning("data at rest is not encrypted: no --encryption-key-file (%s); "
                        "see `python -m fhir_server keys generate`", keyring.ENV_FILE)
        else:
            log.info("data at rest is encrypted: primary key %s (%d in the ring)", ring.primary, len(ring.keys))
        path = sqlite_path(settings.database_url)
        if path is not None:
            driver.check_opens(path)
        elif ring is not None:
            log.info("MongoDB: blobs in GridFS are encrypted; encrypt the documents with MongoDB's encrypted "
                     "storage engine or client-side field level encryption")
    except _REFUSALS as exc:
        log.error("cannot start: %s", exc)  # one line on stderr, no traceback
        raise SystemExit(EXIT_REFUSED) from None


def _runner(action: Callable[[argparse.Namespace], list[str]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            if getattr(args, "encryption_key_file", None):
                keyring.configure(args.encryption_key_file)
            lines = action(args)
        except _REFUSALS as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        for line in lines:
            print(line)
        return 0

    return run


def _generate(args: argparse.Namespace) -> list[str]:
    ring = KeyRing.generate()
    ring.write_new(args.file)
    return [f"wrote {args.file} (mode 0600): key {ring.primary}; keep a copy apart from the backups it opens"]


def _rotate(args: argparse.Namespace) -> list[str]:
    if not args.encryption_key_file:
        raise KeyRingError(f"keys rotate needs --encryption-key-file (or {keyring.ENV_FILE})")
    done = asyncio.run(rotate(args.database, args.encryption_key_file))
    return [f"new primary key {done.new_kid} in {args.encryption_key_file}",
            f"database: {done.database}",
            f"blobs: {done.blobs_rewritten} re-encrypted, {done.blobs_already} already under the new key",
            f"older keys kept in the ring: {', '.join(done.old_kids)}; remove them by hand once no backup "
            "made under them is wanted (a backup opens only with the key it was made under)"]


def _list(args: argparse.Namespace) -> list[str]:
    if not args.encryption_key_file:
        raise KeyRingError(f"keys list needs --encryption-key-file (or {keyring.ENV_FILE})")
    ring = KeyRing.load(args.encryption_key_file)
    return [f"{kid}\t{'primary' if kid == ring.primary else 'old'}" for kid in ring.keys]


def _backup(args: argparse.Namespace) -> list[str]:
    done = backup(args.database, args.to)
    state = f"encrypted under key {done.key_id}" if done.encrypted else "NOT encrypted (no key configured)"
    return [f"wrote {done.file}: database ({done.database_bytes} bytes, {state}) and {done.blobs} blobs"]


def _restore(args: argparse.Namespace) -> list[str]:
    done = restore(args.source, args.database, force=args.force)
    return [f"restored {args.database} from {done.file}: {done.blobs} blobs"
            + (f", encrypted under key {done.key_id}" if done.encrypted else "")]


def add_commands(commands: argparse._SubParsersAction, defaults) -> None:
    def key_file(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--encryption-key-file", default=defaults.encryption_key_file, metavar="FILE",
                            help=f"the key ring [{keyring.ENV_FILE}]")

    def database(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--database", default=defaults.database_url, help="sqlite:/// URL [FHIR_DATABASE]")

    keys = commands.add_parser("keys", help="encryption keys of data at rest").add_subparsers(
        dest="action", required=True)
    generate = keys.add_parser("generate", help="write a new key file (mode 0600; never overwrites)")
    generate.add_argument("file", metavar="FILE")
    generate.set_defaults(admin=_runner(_generate))
    rotating = keys.add_parser("rotate", help="add a new primary key; re-key the database and re-encrypt every "
                                              "blob under it (server stopped)")
    key_file(rotating)
    database(rotating)
    rotating.set_defaults(admin=_runner(_rotate))
    listing = keys.add_parser("list", help="list the key ids in a key file (never the keys)")
    key_file(listing)
    listing.set_defaults(admin=_runner(_list))

    making = commands.add_parser("backup", help="copy the database (online) and its blobs into a tar file")
    database(making)
    making.add_argument("--to", required=True, metavar="FILE", help="the backup file to write (never overwritten)")
    key_file(making)
    making.set_defaults(admin=_runner(_backup))
    restoring = commands.add_parser("restore", help="put a backup in place (server stopped)")
    restoring.add_argument("--from", dest="source", required=True, metavar="FILE")
    database(restoring)
    restoring.add_argument("--force", action="store_true", help="replace an existing database and its blobs")
    key_file(restoring)
    restoring.set_defaults(admin=_runner(_restore))

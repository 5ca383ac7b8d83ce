"""Is anything else using the database? Key rotation and restore need the server stopped.

In WAL mode every SQLite connection that has read the database keeps a SHARED lock on it for as
long as it is open (the server's writer and readers always have), so an attempt to write-lock the
SHARED byte range fails while any other process has it open. The probe looks at the locks only,
so it works on a database whatever its key. https://sqlite.org/lockingv3.html, os_unix.c.

Call it before this process opens the database itself: POSIX locks belong to the process, and
closing the probe's descriptor would drop locks the process's own connections hold.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

_PENDING_BYTE = 0x40000000
_SHARED_FIRST = _PENDING_BYTE + 2
_SHARED_SIZE = 510


class DatabaseInUse(Exception):
    """Another process has the database open."""


def ensure_not_in_use(path: str | Path, what: str) -> None:
    if not Path(path).exists():
        return
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, _SHARED_SIZE, _SHARED_FIRST)
        fcntl.lockf(fd, fcntl.LOCK_UN, _SHARED_SIZE, _SHARED_FIRST)
    except OSError:
        raise DatabaseInUse(f"{path} is open in another process (is the server running?): "
                            f"stop it before {what}") from None
    finally:
        os.close(fd)

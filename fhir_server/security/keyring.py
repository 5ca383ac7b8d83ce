"""The encryption key ring: which 256-bit keys exist, and which one new data is written under.

A key file is JSON, `{"primary": kid, "keys": {kid: base64 key, ...}}`, readable by its owner only.
The primary key encrypts the SQLCipher database and every new blob; older keys stay in the ring so
that blobs (and backups) written under them still decrypt, until the operator removes them after
`keys rotate` has re-encrypted everything.

The process has one ring, loaded once (configure(), or lazily from FHIR_ENCRYPTION_KEY_FILE, or
FHIR_ENCRYPTION_KEY holding the file's JSON for containers whose secrets arrive as variables), so
every command that opens the database (serve, reindex, export, clients, erx ...) honours it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

KEY_BYTES = 32  # AES-256, and SQLCipher's raw key length
ENV_FILE = "FHIR_ENCRYPTION_KEY_FILE"
ENV_JSON = "FHIR_ENCRYPTION_KEY"


class KeyRingError(Exception):
    """A key file that is missing, malformed or refused; the message is one line for stderr."""


@dataclass(frozen=True)
class KeyRing:
    primary: str
    keys: dict[str, bytes] = field(repr=False)  # repr=False: key material never reaches a log line

    def __post_init__(self) -> None:
        if self.primary not in self.keys:
            raise KeyRingError(f"the primary key {self.primary!r} is not in the key ring")
        for kid, key in self.keys.items():
            if not kid or len(kid.encode()) > 64 or not kid.isascii():
                raise KeyRingError(f"key id {kid!r}: 1-64 ASCII characters")
            if len(key) != KEY_BYTES:
                raise KeyRingError(f"key {kid}: {len(key)} bytes, expected {KEY_BYTES}")

    @property
    def primary_key(self) -> bytes:
        return self.keys[self.primary]

    def key(self, kid: str) -> bytes:
        try:
            return self.keys[kid]
        except KeyError:
            raise KeyRingError(f"key {kid!r} is not in the key ring (was it removed too early?)") from None

    def ordered(self) -> list[tuple[str, bytes]]:
        """The primary first, then the others: the order to try keys on data of unknown key."""
        return [(self.primary, self.primary_key)] + [(k, v) for k, v in self.keys.items() if k != self.primary]

    @classmethod
    def generate(cls) -> "KeyRing":
        kid = new_kid()
        return cls(kid, {kid: secrets.token_bytes(KEY_BYTES)})

    def with_new_primary(self) -> "KeyRing":
        kid = new_kid()
        while kid in self.keys:
            kid = new_kid()
        return KeyRing(kid, {**self.keys, kid: secrets.token_bytes(KEY_BYTES)})

    def to_json(self) -> str:
        return json.dumps({"primary": self.primary,
                           "keys": {kid: base64.b64encode(key).decode("ascii") for kid, key in self.keys.items()}},
                          indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "KeyRing":
        try:
            doc = json.loads(text)
            primary, keys = doc["primary"], doc["keys"]
            if not isinstance(primary, str) or not isinstance(keys, dict) or not keys:
                raise ValueError
            decoded = {str(kid): base64.b64decode(value, validate=True) for kid, value in keys.items()}
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise KeyRingError('not a key ring: expected {"primary": kid, "keys": {kid: base64 key}}') from None
        return cls(primary, decoded)

    @classmethod
    def load(cls, path: str | Path) -> "KeyRing":
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise KeyRingError(f"cannot read the key file {path}: {exc.strerror}") from None
        try:
            return cls.from_json(text)
        except KeyRingError as exc:
            raise KeyRingError(f"{path}: {exc}") from None

    def write_new(self, path: str | Path) -> None:
        """Write a new key file, mode 0600 from its first byte; an existing file is never overwritten."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyRingError(f"{path} exists: a key file is never overwritten (move it away first)") from None
        except OSError as exc:
            raise KeyRingError(f"cannot create {path}: {exc.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())

    def replace(self, path: str | Path) -> None:
        """Atomically replace a key file (rotation): a crash leaves either the old ring or the new."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        self.write_new(tmp)
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def new_kid() -> str:
    """Key ids say when the key was made (for the operator) plus a random part (for uniqueness)."""
    return f"{datetime.now(timezone.utc):%Y%m%d}-{secrets.token_hex(4)}"


# the process's ring ----------------------------------------------------------------------------

_UNSET = object()
_lock = threading.Lock()
_current: object = _UNSET


def configure(key_file: str | Path | None = None, *, ring: KeyRing | None | object = _UNSET) -> KeyRing | None:
    """Set the process's key ring: `ring` as given, else from `key_file`, else from the environment."""
    global _current
    with _lock:
        if ring is not _UNSET:
            _current = ring
        elif key_file:
            _current = KeyRing.load(key_file)
        else:
            _current = _from_env()
        return _current  # type: ignore[return-value]


def current() -> KeyRing | None:
    """The process's key ring (None: data at rest is not encrypted)."""
    if _current is _UNSET:
        return configure()
    return _current  # type: ignore[return-value]


def _from_env() -> KeyRing | None:
    if os.environ.get(ENV_FILE):
        return KeyRing.load(os.environ[ENV_FILE])
    if os.environ.get(ENV_JSON):
        try:
            return KeyRing.from_json(os.environ[ENV_JSON])
        except KeyRingError as exc:
            raise KeyRingError(f"{ENV_JSON}: {exc}") from None
    return None

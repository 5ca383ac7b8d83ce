"""User passwords and client secrets, hashed with argon2id (argon2-cffi's defaults, RFC 9106).

The store only ever holds the encoded hash (it carries its own salt and parameters), so a leaked
database does not hand out logins or client credentials. Verification never raises: a wrong
secret, an empty or corrupt hash, or one from an unknown scheme all simply fail to verify.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error

_hasher = PasswordHasher()


def hash_secret(plain: str) -> str:
    """The argon2id hash of a password or client secret, salted, in the PHC string form."""
    return _hasher.hash(plain)


def verify_secret(hash: str | None, plain: str | None) -> bool:
    """Whether `plain` matches `hash`; False (never an exception) for any mismatch or bad input."""
    if not isinstance(hash, str) or not hash or not isinstance(plain, str):
        return False
    try:
        return _hasher.verify(hash, plain)
    except (Argon2Error, ValueError, TypeError):  # mismatch, or a malformed hash (InvalidHashError is a ValueError)
        return False


def needs_rehash(hash: str) -> bool:
    """Whether a hash that just verified was made with weaker parameters than today's: the login
    flow then stores hash_secret(plain) in its place. The one place check_needs_rehash is called."""
    if not isinstance(hash, str):
        return True
    try:
        return _hasher.check_needs_rehash(hash)
    except (Argon2Error, ValueError, TypeError):
        return True

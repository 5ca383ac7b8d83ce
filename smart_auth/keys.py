"""The server's signing keys: created on first start, kept in the database, rotatable.

Access tokens and id_tokens are RS256 JWTs with a `kid` (OIDC and Inferno's id_token checks want
RS256 and a kid). Rotation adds a new key that signs from then on; retired keys stay in the JWKS
so tokens they signed keep verifying until they expire.
"""

from __future__ import annotations

import time
import uuid

from joserfc.jwk import KeySet, RSAKey

from .store.records import AuthRecords, SigningKey

ALGORITHM = "RS256"
RETIRED_KEYS_PUBLISHED_FOR = 24 * 3600  # longer than any access token or id_token lives


def _new_key() -> SigningKey:
    kid = uuid.uuid4().hex
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": ALGORITHM, "use": "sig"})
    return SigningKey(kid=kid, private_jwk=key.as_dict(private=True))


class KeyRing:
    """The current signing key and every key a token may still be verified with."""

    def __init__(self, records: AuthRecords):
        self.records = records
        self._signing: RSAKey | None = None
        self._verifying = KeySet([])
        self._public_jwks: dict = {"keys": []}

    def load(self) -> None:
        """Read the keys from the store, creating the first one if there is none."""
        keys = self.records.signing_keys()
        if not any(k.retired_at is None for k in keys):
            self.records.add_signing_key(_new_key())
            keys = self.records.signing_keys()
        now = time.time()
        live = [k for k in keys if k.retired_at is None]
        published = [k for k in keys if k.retired_at is None or now - k.retired_at < RETIRED_KEYS_PUBLISHED_FOR]
        newest = max(live, key=lambda k: (k.created_at, k.kid))
        imported = [RSAKey.import_key(k.private_jwk) for k in published]
        # Verifying keys first: a request in another thread never sees a signing key it cannot verify.
        self._verifying = KeySet(imported)
        self._public_jwks = {"keys": [k.as_dict(private=False) for k in imported]}
        self._signing = RSAKey.import_key(newest.private_jwk)

    def rotate(self) -> str:
        """Make a new signing key and retire the others; returns the new kid."""
        fresh = _new_key()
        self.records.add_signing_key(fresh)
        for key in self.records.signing_keys():
            if key.kid != fresh.kid and key.retired_at is None:
                key.retired_at = time.time()
                self.records.put_signing_key(key)
        self.load()
        return fresh.kid

    def kid_known(self, kid: str | None) -> bool:
        return any(k.kid == kid for k in self._verifying.keys)

    @property
    def signing_key(self) -> RSAKey:
        assert self._signing is not None, "KeyRing.load() first"
        return self._signing

    @property
    def verifying_keys(self) -> KeySet:
        return self._verifying

    @property
    def public_jwks(self) -> dict:
        return self._public_jwks

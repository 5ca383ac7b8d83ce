"""smart_auth/passwords.py: argon2id hashes of passwords and client secrets; verification never raises."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from smart_auth.passwords import hash_secret, needs_rehash, verify_secret


def test_hash_and_verify():
    hashed = hash_secret("correct horse battery staple")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert verify_secret(hashed, "correct horse battery staple") is True
    assert verify_secret(hashed, "correct horse battery stapl") is False
    assert verify_secret(hashed, "") is False


def test_hashes_are_salted():
    assert hash_secret("same") != hash_secret("same")


def test_unicode_secrets():
    hashed = hash_secret("pässwörd-密码")
    assert verify_secret(hashed, "pässwörd-密码") is True
    assert verify_secret(hashed, "passwort-密码") is False


@pytest.mark.parametrize("bad_hash", [
    "", None, 123, "not a hash", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$", "$2b$12$abcdefghijklmnopqrstuvwxyz0123",
    "$argon2id$v=19$m=65536,t=3,p=4$ÿÿÿ$ÿÿÿ",
])
def test_a_bad_hash_never_verifies_and_never_raises(bad_hash):
    assert verify_secret(bad_hash, "anything") is False


def test_a_truncated_hash_never_verifies():
    hashed = hash_secret("secret")
    assert verify_secret(hashed[:-4], "secret") is False


def test_bad_plain_values():
    hashed = hash_secret("secret")
    assert verify_secret(hashed, None) is False
    assert verify_secret(hashed, b"secret") is False  # str only: no implicit encodings


def test_needs_rehash():
    assert needs_rehash(hash_secret("x")) is False
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("x")
    assert verify_secret(weak, "x") is True  # old hashes keep working ...
    assert needs_rehash(weak) is True  # ... and the login flow upgrades them
    assert needs_rehash("garbage") is True

"""Safeguards of data at rest: the encryption key ring, key rotation, backups (issue 11)."""

"""Inbound transport security at start-up: HTTPS through uvicorn's ssl options, or plain HTTP only
where nobody else can listen in (HIPAA transmission security, 45 CFR 164.312(e)).

- `--tls-cert/--tls-key`: uvicorn serves HTTPS (each worker of `--workers N` loads the same files);
  the security-headers middleware then sends HSTS on every response.
- No TLS on a loopback address: plain HTTP (development, tests, a proxy on the same host).
- No TLS on any other address: refused, unless `--insecure-http` says a TLS-terminating proxy is in
  front; that is logged as a warning at every start.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path

from .config import Settings

log = logging.getLogger("fhir_server")

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class TransportRefused(Exception):
    """The server must not start with these transport settings (the message says why and how)."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; any other name or address (0.0.0.0, ::, a LAN
    address, a hostname that might resolve anywhere) is treated as public."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_pair(cert: str, key: str) -> None:
    """Load the pair once here, so a wrong path or a key that does not match the certificate is a
    one-line message at start-up instead of a traceback from every worker."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise TransportRefused(f"{flag} {path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TransportRefused(f"--tls-cert/--tls-key cannot be used: {exc}") from None


def listen_options(settings: Settings) -> dict[str, str]:
    """uvicorn's ssl options for these settings ({} for plain HTTP), or TransportRefused."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise TransportRefused("--tls-cert and --tls-key go together (FHIR_TLS_CERT, FHIR_TLS_KEY)")
    if settings.tls_cert and settings.tls_key:
        _check_pair(settings.tls_cert, settings.tls_key)
        log.info("serving HTTPS (certificate %s); Strict-Transport-Security is on", settings.tls_cert)
        return {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
    if is_loopback(settings.host):
        return {}
    if not settings.insecure_http:
        raise TransportRefused(
            f"refusing to serve plain HTTP on {settings.host}, a non-loopback address: patient data would "
            "cross the network unencrypted. Give --tls-cert FILE --tls-key FILE (FHIR_TLS_CERT, FHIR_TLS_KEY), "
            "or, only when a TLS-terminating proxy is in front, --insecure-http (FHIR_INSECURE_HTTP=1)")
    log.warning("PLAIN HTTP on %s (--insecure-http): only safe behind a TLS-terminating proxy that alone "
                "can reach this port", settings.host)
    return {}

"""Outbound HTTPS: the one place that decides how this server verifies the servers it calls
(e-prescribing gateways, FHIR pharmacies, subscription rest-hooks, clients' JWKS URLs).

Certificates are always verified (HIPAA transmission security: a prescription or a notification
must not go to whoever answers). The trust store is certifi's public roots, as httpx uses by
default, plus an optional bundle of private CAs named by FHIR_OUTBOUND_CA_FILE (a gateway or an
EHR on an internal PKI). The private CAs are added to the public roots, never instead of them.
The clients built here set trust_env=False: SSL_CERT_FILE, proxies and .netrc from the
environment do not change who gets patient data; this module does.
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any

import certifi
import httpx

CA_FILE_ENV = "FHIR_OUTBOUND_CA_FILE"


@functools.lru_cache(maxsize=4)
def _context(ca_file: str | None) -> ssl.SSLContext:
    # create_default_context: CERT_REQUIRED, hostname checks, TLS 1.2 or later
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def ca_file() -> str | None:
    """The private CA bundle configured for outbound calls, if any."""
    return os.environ.get(CA_FILE_ENV) or None


def ssl_context() -> ssl.SSLContext:
    """The verifying SSL context for every outbound call (built once per CA file)."""
    return _context(ca_file())


def check_configuration() -> str | None:
    """None when outbound TLS is usable; otherwise why not (checked at start-up, so a wrong
    FHIR_OUTBOUND_CA_FILE stops the server instead of failing the first prescription)."""
    try:
        ssl_context()
    except (OSError, ssl.SSLError) as exc:
        return f"{CA_FILE_ENV}={ca_file()} cannot be loaded as a CA bundle ({type(exc).__name__}: {exc})"
    return None


def async_client(**kwargs: Any) -> httpx.AsyncClient:
    """An httpx.AsyncClient that verifies certificates against the configured trust store."""
    kwargs.setdefault("trust_env", False)
    return httpx.AsyncClient(verify=ssl_context(), **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    """A synchronous GET (JWKS fetches run in the token endpoint's worker thread)."""
    kwargs.setdefault("trust_env", False)
    return httpx.get(url, verify=ssl_context(), **kwargs)

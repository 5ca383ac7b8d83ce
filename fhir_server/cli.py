"""Command line: `python -m fhir_server serve|reindex|clients|users|keys|erx ...`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import replace

from .config import Settings, parse_required_profiles

log = logging.getLogger("fhir_server")


def _parser(defaults: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fhir_server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the FHIR server (uvicorn)")
    serve.add_argument("--host", default=defaults.host, help="interface to listen on [FHIR_HOST]")
    serve.add_argument("--port", type=int, default=defaults.port, help="TCP port [FHIR_PORT]")
    serve.add_argument(
        "--database", default=defaults.database_url,
        help="sqlite:///path/to/file.db (embedded, the default: %(default)s) or "
             "mongodb://host/dbname?replicaSet=rs0 (add fhirTransactions=off for a standalone mongod) "
             "[FHIR_DATABASE]",
    )
    serve.add_argument("--base-url", default=defaults.base_url, help="public FHIR base URL [FHIR_BASE_URL]")
    serve.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes,
                       help="largest accepted request body [FHIR_MAX_BODY_BYTES]")
    serve.add_argument("--max-image-bytes", type=int, default=defaults.max_image_bytes,
                       help="largest photo accepted by POST /Binary (default %(default)s) [FHIR_MAX_IMAGE_BYTES]")
    serve.add_argument("--max-video-bytes", type=int, default=defaults.max_video_bytes,
                       help="largest video accepted by POST /Binary (default %(default)s) [FHIR_MAX_VIDEO_BYTES]")
    serve.add_argument("--workers", type=int, default=defaults.workers,
                       help="worker processes (default %(default)s) [FHIR_WORKERS]")
    serve.add_argument("--no-auth", action="store_true", default=not defaults.auth_enabled,
                       help="serve without authorization: local experiments and tests only [FHIR_NO_AUTH=1]")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--erx-gateway", default=defaults.erx_gateway,
                       help="e-prescribing gateway URL: MedicationRequests sent as NCPDP SCRIPT [FHIR_ERX_GATEWAY]")
    serve.add_argument("--erx-sender-id", default=defaults.erx_sender_id,
                       help="this system's account id at the gateway [FHIR_ERX_SENDER_ID]")
    serve.add_argument("--erx-inbound-token", default=defaults.erx_inbound_token,
                       help="bearer secret the gateway presents on /erx/inbound [FHIR_ERX_INBOUND_TOKEN]")
    serve.add_argument("--erx-max-attempts", type=int, default=defaults.erx_max_attempts,
                       help="deliveries tried before a transmission is dead-lettered [FHIR_ERX_MAX_ATTEMPTS]")
    serve.add_argument("--require-profile", action="append", metavar="TYPE=URL", default=None,
                       help="a profile every write of TYPE must meet (repeatable; default none) "
                            "[FHIR_REQUIRED_PROFILES, space-separated]")
    serve.add_argument("--prescribing-rules", default=defaults.prescribing_rules, metavar="FILE",
                       help="the deployment's prescribing rules (default profiles/prescribing-rules.json) "
                            "[FHIR_PRESCRIBING_RULES]")
    serve.add_argument("--visit-fee", default=defaults.visit_fee,
                       help="flat fee of an asynchronous visit, amount and ISO 4217 currency [FHIR_VISIT_FEE]")
    serve.add_argument("--encryption-key-file", default=defaults.encryption_key_file, metavar="FILE",
                       help="key ring that encrypts the store and blobs at rest (`keys generate FILE`) "
                            "[FHIR_ENCRYPTION_KEY_FILE, or FHIR_ENCRYPTION_KEY holding its JSON]")
    serve.add_argument("--tls-cert", default=defaults.tls_cert, metavar="FILE",
                       help="PEM certificate (chain): serve HTTPS, with HSTS [FHIR_TLS_CERT]")
    serve.add_argument("--tls-key", default=defaults.tls_key, metavar="FILE",
                       help="PEM private key of --tls-cert [FHIR_TLS_KEY]")
    serve.add_argument("--insecure-http", action="store_true", default=defaults.insecure_http,
                       help="allow plain HTTP on a non-loopback --host: only behind a TLS-terminating proxy "
                            "[FHIR_INSECURE_HTTP=1]")
    reindex = commands.add_parser("reindex", help="recompute the search index of every resource "
                                                  "(after the search-parameter registry changed)")
    reindex.add_argument("--database", default=defaults.database_url, help="sqlite:/// or mongodb:// URL [FHIR_DATABASE]")
    reindex.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    from smart_auth.admin import add_commands

    add_commands(commands, defaults.database_url)  # clients, users, keys: smart_auth/admin.py
    from .erx.admin import add_commands as add_erx_commands

    add_erx_commands(commands, defaults.database_url)  # erx list|retry: fhir_server/erx/admin.py
    from .exchange.bulk.cli import add_commands as add_export_commands

    add_export_commands(commands, defaults.database_url)  # export: fhir_server/exchange/bulk/cli.py
    from .audit.cli import add_commands as add_audit_commands

    add_audit_commands(commands, defaults.database_url)  # audit verify|export|purge: fhir_server/audit/cli.py
    from .security.cli import add_commands as add_security_commands

    add_security_commands(commands, defaults)  # keys generate|rotate|list, backup, restore: fhir_server/security/cli.py
    return parser


def main(argv: list[str] | None = None) -> int:
    defaults = Settings.from_env()
    args = _parser(defaults).parse_args(argv)
    if hasattr(args, "admin"):  # an administration command (smart_auth/admin.py): prints, returns its status
        return args.admin(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every outbound URL at INFO and httpcore headers at DEBUG: a subscriber's endpoint or
    # a pharmacy's address is not ours to print
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "serve":
        return serve(replace(
            defaults, host=args.host, port=args.port, database_url=args.database, base_url=args.base_url,
            max_body_bytes=args.max_body_bytes, max_image_bytes=args.max_image_bytes,
            max_video_bytes=args.max_video_bytes, auth_enabled=not args.no_auth, workers=args.workers,
            erx_gateway=args.erx_gateway, erx_sender_id=args.erx_sender_id,
            erx_inbound_token=args.erx_inbound_token, erx_max_attempts=args.erx_max_attempts,
            required_profiles=(parse_required_profiles(args.require_profile) if args.require_profile is not None
                               else defaults.required_profiles),
            visit_fee=args.visit_fee, prescribing_rules=args.prescribing_rules,
            encryption_key_file=args.encryption_key_file,
            tls_cert=args.tls_cert, tls_key=args.tls_key, insecure_http=args.insecure_http,
        ), args.log_level)
    if args.command == "reindex":
        return asyncio.run(reindex(args.database))
    return 2


async def reindex(database_url: str) -> int:
    from .search.extract import extract_index
    from .storage import open_store

    store = open_store(database_url, indexer=extract_index)
    await store.open()
    try:
        count = await store.reindex()
    finally:
        await store.close()
    log.info("re-indexed %d resources", count)
    return 0


def serve(settings: Settings, log_level: str) -> int:
    import uvicorn

    from . import outbound
    from .tls import TransportRefused, listen_options

    try:  # refuse to start rather than serve patient data in the clear or with a bad configuration
        tls = listen_options(settings)
        settings.auth_lifetimes  # raises ValueError for an access token over an hour, ...
    except (TransportRefused, ValueError) as refused:
        log.error("not starting: %s", refused)
        return 2
    if outbound_problem := outbound.check_configuration():
        log.error("not starting: %s", outbound_problem)
        return 2
    from .api.app import create_app
    from .security.cli import check_at_rest

    check_at_rest(settings)  # warns when data at rest is not encrypted; exits 2 when the key does not fit
    if not settings.auth_enabled:
        log.warning("AUTHORIZATION IS OFF (--no-auth): every client can read and write everything")
    options = dict(host=settings.host, port=settings.port, log_level=log_level, access_log=False, server_header=False,
                   **tls)
    if settings.workers > 1:
        # Worker processes import the app by name and read their settings from the environment.
        os.environ.update(settings.to_env())
        # /metrics counts visit steps in every worker: prometheus-client's multiprocess mode sums
        # them over the workers' files in this folder (set before a worker imports the library)
        metrics_dir = tempfile.mkdtemp(prefix="fhir-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            uvicorn.run("fhir_server.api.app:app_from_env", factory=True, workers=settings.workers, **options)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        uvicorn.run(create_app(settings), **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())

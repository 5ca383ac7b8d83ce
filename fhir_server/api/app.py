"""The ASGI application: routes, error handling and the store's lifetime."""

from __future__ import annotations

import asyncio
import gc
import logging
import traceback
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from profiles.guide import load_guide
from smart_auth.access import set_security_officers
from smart_auth.routes import ROUTES as SMART_ROUTES
from smart_auth.server import SmartAuthorizationServer
from smart_auth.service import AuthService

from ..audit import disclosures
from ..audit.middleware import AuditMiddleware
from ..audit.security import SecurityEventRecorder
from ..audit.store import AuditingStore, refuse_prepare
from ..audit.trail import AuditTrail
from ..config import Settings
from ..erx.service import erx_components
from ..errors import FhirError, InvalidRequest, MethodNotAllowed, NotFound
from ..exchange.bulk.install import bulk_components
from ..exchange.document import register_document_hooks
from ..exchange.subscriptions import subscription_components
from ..interactions.profile_check import ValidatingStore
from ..interactions.write_hooks import HookedStore, WriteHooks
from ..interactions.validation import warm_up
from ..search.extract import extract_index
from ..storage import Store, open_store
from ..security import keyring
from ..storage.blobs import BlobStore, blob_store_for
from ..media.ingest import MediaIngest
from ..media.sweep import sweep_orphans
from ..validation.service import Validation
from ..visit.access import VisitAccess
from ..visit.metrics import VisitMetrics
from ..visit.prescribing import load_rule_set
from ..visit.prescribing_hook import PrescribingHook
from ..visit.submit import VisitFee
from ..visit.transitions import VisitTransitions
from .access_log import AccessLog
from .security_headers import SecurityHeaders, secured
from .patient_directory import StorePatientDirectory
from .responses import error_response
from .binary_routes import BINARY_ROUTES
from .document_routes import ROUTES as DOCUMENT_ROUTES
from .metrics_route import ROUTES as METRICS_ROUTES
from .routes import ROUTES

log = logging.getLogger("fhir_server")


def create_app(settings: Settings, store: Store | None = None, auth: "AuthService | None" = None,
               blobs: BlobStore | None = None) -> FastAPI:
    """Build the app; the store (from settings.database_url unless given) opens with the app, and
    so does the SMART authorization server's state (in the same database) unless auth is off."""
    store = store or open_store(settings.database_url, synchronous=settings.sqlite_synchronous, indexer=extract_index)
    keyring.configure(settings.encryption_key_file)  # data at rest: the store's and the blobs' key ring
    blobs = blobs or blob_store_for(store)  # photos' and videos' bytes: beside the database, or GridFS (encrypted)
    raw_store = store
    if settings.auth_enabled and auth is None:
        auth = AuthService.from_url(settings.database_url, settings.auth_lifetimes)
    # work that writes cause, in the same unit of work: the visit's steps, and e-prescribing
    hooks = WriteHooks()
    metrics = VisitMetrics()
    transitions = VisitTransitions(metrics)
    hooks.register("Task", transitions.on_task)
    hooks.register("Communication", transitions.on_communication)
    hooks.register("Encounter", transitions.on_encounter)
    rules = load_rule_set(Path(settings.prescribing_rules) if settings.prescribing_rules else None)
    hooks.register("MedicationRequest", PrescribingHook(rules))  # before e-Rx: refused, never sent
    register_document_hooks(hooks)  # a correction after completion: a new version of the consult note
    erx = erx_components(settings.erx, HookedStore(store, hooks), hooks)  # e-prescribing, when a gateway is configured
    subs = subscription_components(erx.store, hooks, settings)  # subscriptions: their hooks after the visit's
    # every write is validated (base definition, claimed and required profiles, Questionnaire)
    # inside its unit of work; the implementation guide's resources are read-only
    validation = Validation(load_guide(), settings.required_profiles_by_type())
    ingest = MediaIngest(blobs, settings.max_image_bytes, settings.max_video_bytes)
    # the audit trail: a request's writes commit with their AuditEvents; reads are recorded in batches
    # (fhir_server/audit/); AuditEvents go to the bare store, and through the API they are read-only
    trail = (AuditTrail(raw_store, server=settings.base_url or "fhir-async-telehealth",
                        flush_seconds=settings.audit_flush_seconds) if settings.audit_enabled else None)
    audited = AuditingStore(erx.store, trail) if trail is not None else erx.store
    store = ValidatingStore(audited, validation, prepare={"Binary": ingest.binary, "Media": ingest.media,
                                                          "Task": transitions.stamp_task,
                                                          "Subscription": subs.prepare,
                                                          "AuditEvent": refuse_prepare})
    bulk = bulk_components(store, settings)  # Bulk Data export: its routes, worker and file sweep

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm_up()
        await store.open()
        await blobs.open()
        sweep = asyncio.create_task(_sweep_blobs(blobs, store))
        seeded = await store.seed_guide()
        if seeded:
            log.info("implementation guide: %d conformance resources stored", seeded)
        if auth is not None:
            await auth.open()
        # The models, tables and registry loaded above are ~300k long-lived objects: without this,
        # every full collection walks them all and stalls every request in flight for 100+ ms.
        gc.collect()
        gc.freeze()
        if trail is not None:
            trail.start()
        else:
            log.warning("THE AUDIT TRAIL IS OFF (FHIR_AUDIT=off): accesses are not recorded")
        erx.start()
        subs.start()
        bulk.start()
        try:
            yield
        finally:
            await bulk.stop()
            await subs.stop()
            await erx.stop()
            if trail is not None:
                await trail.stop()  # what is buffered is committed before the store closes
            if auth is not None:
                await auth.close()
            sweep.cancel()
            await blobs.close()
            await store.close()

    app = FastAPI(
        title="FHIR R4 server for asynchronous telehealth",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # The routes are the app's own (not an included router), so the CapabilityStatement can
        # read their interaction names from app.routes.
        # SMART's routes first: /auth/token would otherwise match /{resource_type}/{id}.
        routes=[*(SMART_ROUTES if auth is not None else []), *erx.routes, *subs.routes, *METRICS_ROUTES, *BINARY_ROUTES, *DOCUMENT_ROUTES,
                *bulk.routes, *ROUTES],
    )
    app.state.settings = settings
    app.state.store = store
    app.state.blobs = blobs
    app.state.bulk = bulk
    app.state.media_ingest = ingest
    app.state.validation = validation
    app.state.visit_fee = VisitFee.parse(settings.visit_fee)
    app.state.metrics = metrics
    # who sees which visit: the clinician's licensed states, the parties of a message (visit/access.py)
    app.state.visit_access = VisitAccess(store)
    app.state.visit_access.install()
    app.state.auth = auth  # None with --no-auth: every request is served unrestricted
    app.state.erx_settings = settings.erx
    if auth is not None:
        app.state.authorization_server = SmartAuthorizationServer(auth)
        app.state.patient_directory = StorePatientDirectory(store)
    app.state.capability_cache = {}
    app.state.subscription_events_scan = subs.settings.events_scan
    _install_error_handlers(app)
    app.add_middleware(AccessLog)
    if trail is not None:
        app.add_middleware(AuditMiddleware, trail=trail)  # an AuditEvent for every FHIR request (audit/middleware.py)
    app.state.audit_trail = trail
    disclosures.install(trail)  # what the e-Rx and subscription workers send out (audit/disclosures.py)
    app.state.security_events = SecurityEventRecorder(trail) if trail is not None else None  # sign-ins, tokens
    set_security_officers(settings.security_officers)  # user/ scopes that may read the trail (smart_auth/access.py)
    # Browser apps (SMART public clients) call the FHIR API, the token endpoint and discovery from
    # other origins. Bearer tokens, not cookies, authorise those calls, so any origin may ask
    # (credentials stay off: the login session cookie never travels cross-origin).
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"],
                       expose_headers=["Location", "Content-Location", "ETag", "Last-Modified"], max_age=600)
    app.add_middleware(SecurityHeaders)  # no-store, nosniff, CSP, HSTS ... on every response (security_headers.py)
    return app


async def _sweep_blobs(blobs: BlobStore, store: Store) -> None:
    """Remove blobs left by a crash between writing them and their Binary (media/sweep.py)."""
    try:
        await sweep_orphans(blobs, store)
    except Exception as exc:  # a failed sweep must not stop the server; it runs again next start
        log.warning("blob sweep failed: %s", type(exc).__name__)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        return error_response(exc, request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(NotFound("No FHIR interaction is served at this URL"), request)
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(f"{request.method} is not allowed at this URL"), request)
        error = FhirError(str(exc.detail))
        error.status = exc.status_code
        return error_response(error, request)

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(InvalidRequest("The request is malformed"), request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # Log the exception type and where (its stack frames), never its message, the request body or
        # a resource: an exception's message can quote a value, and values are patient data.
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unhandled %s in %s %s\n%s", type(exc).__name__, request.method, _route_template(request),
                  frames)
        response = error_response(FhirError("Internal server error"), request)
        # this answer leaves through Starlette's outermost error middleware, outside SecurityHeaders
        response.raw_headers[:] = secured(response.raw_headers, request.url.path, request.url.scheme == "https")
        return response


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "?")


def app_from_env() -> FastAPI:
    """The app of one worker process (`serve --workers N`): settings from FHIR_* variables."""
    return create_app(Settings.from_env())

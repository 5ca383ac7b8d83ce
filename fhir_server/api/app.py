"""The ASGI application: routes, error handling and the store's lifetime."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..config import Settings
from ..errors import FhirError, InvalidRequest, MethodNotAllowed, NotFound
from ..interactions.validation import warm_up
from ..search.extract import extract_index
from ..storage import Store, open_store
from .access_log import AccessLog
from .responses import error_response
from .routes import ROUTES

log = logging.getLogger("fhir_server")


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """Build the app; the store (from settings.database_url unless given) opens with the app."""
    store = store or open_store(settings.database_url, synchronous=settings.sqlite_synchronous, indexer=extract_index)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm_up()
        await store.open()
        # The models, tables and registry loaded above are ~300k long-lived objects: without this,
        # every full collection walks them all and stalls every request in flight for 100+ ms.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await store.close()

    app = FastAPI(
        title="FHIR R4 server for asynchronous telehealth",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # The routes are the app's own (not an included router), so the CapabilityStatement can
        # read their interaction names from app.routes.
        routes=list(ROUTES),
    )
    app.state.settings = settings
    app.state.store = store
    app.state.capability_cache = {}
    _install_error_handlers(app)
    app.add_middleware(AccessLog)
    return app


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
        # Log the exception type and where, never the request body or resource (patient data).
        log.error("unhandled %s in %s %s", type(exc).__name__, request.method, _route_template(request),
                  exc_info=exc)
        return error_response(FhirError("Internal server error"), request)


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "?")


def app_from_env() -> FastAPI:
    """The app of one worker process (`serve --workers N`): settings from FHIR_* variables."""
    return create_app(Settings.from_env())

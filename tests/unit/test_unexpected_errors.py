"""An unexpected exception: a 500 OperationOutcome that still carries the security headers, and a
log line with the exception's type and frames but never its message (which can quote patient data)."""

from __future__ import annotations

import logging

from starlette.routing import Route
from starlette.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.config import Settings


def test_a_500_has_the_security_headers_and_its_log_line_no_message(tmp_path, caplog):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'fhir.db'}", auth_enabled=False))

    async def boom(request):
        raise RuntimeError(f"no record for {request.query_params['name']}")  # a value in the message

    app.router.routes.insert(0, Route("/boom", boom))
    with caplog.at_level(logging.ERROR, logger="fhir_server"), TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", params={"name": "Zed-Marker-Patient"})
    assert r.status_code == 500
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "unhandled RuntimeError" in logged and "boom" in logged  # the type and the frame
    assert "Zed-Marker-Patient" not in logged

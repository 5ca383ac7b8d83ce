"""Bulk Data Access 2.0 export over HTTP (fhir_server/exchange/bulk): kick-off at `/$export`,
`/Patient/$export` and `/Group/{id}/$export` (GET, or POST with a Parameters body), status at
`/$export-status/{job}` (GET polls, DELETE cancels), files at `/$export-file/{job}/{file}`.

Only the client that started a job sees it (others get 404); with --no-auth every request is the
same "no-auth" client. Mounted before the generic routes (app.state.bulk is the BulkComponents).

The kick-off's unit of work is the export's transactionTime (exchange/bulk/cutoff.py): it holds
the store's write lock until the clock has passed its stamp. "Polled too fast" (429) is judged
from a marker file in the job's folder, so it holds across server processes.
"""

from __future__ import annotations

import uuid
from email.utils import formatdate

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import Response, StreamingResponse

from smart_auth.access import READ, allowed

from ..audit import disclosures
from ..audit.context import current as current_audit
from ..errors import FhirError, InvalidRequest, NotFound, OutcomeIssue, operation_outcome
from ..exchange.bulk import files, sealed
from ..exchange.bulk.cutoff import hold_past
from ..exchange.bulk.jobs import JOB_KIND, ExportRequest, view
from ..exchange.bulk.kickoff import (
    check_headers, group_members, not_found_group, parameters_from_body, parse_kickoff,
)
from .authorization import request_principal
from .capability import FhirRoute, route_table
from .negotiation import read_json
from .responses import fhir_response
from .routes import base_url

ROUTES: list[FhirRoute] = []
NDJSON = "application/fhir+ndjson"


class TooManyRequests(FhirError):
    status = 429
    issue_code = "throttled"

    def __init__(self, retry_after: int):
        super().__init__(f"Polled too often: wait {retry_after} s between status requests")
        self.headers = {"Retry-After": str(retry_after)}


_route = route_table(ROUTES)


def _bulk(request: Request):
    return request.app.state.bulk


async def _kickoff(request: Request, level: str, group_id: str | None = None) -> Response:
    principal = await request_principal(request)
    lenient = check_headers(request.headers)
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        body = await read_json(request, request.app.state.settings.max_body_bytes)
        params += parameters_from_body(body)
    store = request.app.state.store
    members = None
    if group_id is not None:
        if allowed(principal, "Group", READ) is None:
            raise not_found_group(group_id)
        group = await store.read("Group", group_id)
        if group is None or group.body is None:
            raise not_found_group(group_id)
        members = group_members(orjson.loads(group.body))
    export = parse_kickoff(level, params, principal, lenient=lenient, group_members=members, method=request.method)
    base = base_url(request)
    export.group = group_id
    export.base = base
    export.request_url = f"{base}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
    async with store.unit_of_work() as uow:  # its stamp (job.created_at) is the export's transactionTime
        job = await uow.enqueue(JOB_KIND, uuid.uuid4().hex, export.to_payload())
        await hold_past(job.created_at)  # every later unit of work is stamped after transactionTime
    _bulk(request).worker.notify()
    outcome = operation_outcome([OutcomeIssue("information", "informational", "Export accepted")])
    return fhir_response(orjson.dumps(outcome), request, status=202,
                         headers={"Content-Location": f"{base}/$export-status/{job.id}"})


@_route("GET", "/$export", "operation-export")
async def export_system(request: Request) -> Response:
    return await _kickoff(request, "system")


@_route("POST", "/$export", "operation-export")
async def export_system_post(request: Request) -> Response:
    return await _kickoff(request, "system")


@_route("GET", "/Patient/$export", "operation-export")
async def export_patient(request: Request) -> Response:
    return await _kickoff(request, "patient")


@_route("POST", "/Patient/$export", "operation-export")
async def export_patient_post(request: Request) -> Response:
    return await _kickoff(request, "patient")


@_route("GET", "/Group/{id}/$export", "operation-export")
async def export_group(request: Request, id: str) -> Response:
    return await _kickoff(request, "group", id)


@_route("POST", "/Group/{id}/$export", "operation-export")
async def export_group_post(request: Request, id: str) -> Response:
    return await _kickoff(request, "group", id)


async def _own_job(request: Request, job_id: str):
    principal = await request_principal(request)
    bulk = _bulk(request)
    if not files.JOB_ID.match(job_id):
        raise NotFound("No such export")
    job = await bulk.store.get_job(job_id)
    if job is None or job.kind != JOB_KIND:
        raise NotFound("No such export")
    if ExportRequest.from_payload(job.payload).client_id != principal.client_id:
        raise NotFound("No such export")  # another client's job: not even its existence shows
    return principal, bulk, job


@_route("GET", "/$export-status/{job_id}", "operation-export-status")
async def export_status(request: Request, job_id: str) -> Response:
    _, bulk, job = await _own_job(request, job_id)
    state = view(job, bulk.folder(job_id))
    if state.status == "gone":
        raise NotFound("This export was deleted or has expired")
    if state.status == "complete":
        expires = bulk.folder(job_id).joinpath(files.MANIFEST).stat().st_mtime + bulk.settings.retention_seconds
        return Response(orjson.dumps(state.manifest), status_code=200, media_type="application/json",
                        headers={"Expires": formatdate(expires, usegmt=True)})
    if state.status == "failed":
        error = FhirError("The export failed; start a new one")
        error.issue_code = "exception"
        return fhir_response(orjson.dumps(error.outcome()), request, status=500)
    retry_after = max(1, int(round(bulk.settings.retry_after)))
    if files.polled_too_soon(bulk.folder(job_id), bulk.settings.retry_after * 0.5):
        raise TooManyRequests(retry_after)
    written = (state.progress or {}).get("written", 0)
    kind = (state.progress or {}).get("type") or "queued"
    progress = f"{written} resources written ({kind})" if state.progress else "queued"
    return Response(status_code=202, headers={"X-Progress": progress[:99], "Retry-After": str(retry_after)})


@_route("DELETE", "/$export-status/{job_id}", "operation-export-cancel")
async def export_cancel(request: Request, job_id: str) -> Response:
    _, bulk, job = await _own_job(request, job_id)
    folder = bulk.folder(job_id)
    if files.cancelled(folder):
        raise NotFound("This export was already deleted")
    files.cancel(folder)
    outcome = operation_outcome([OutcomeIssue("information", "informational", "Export deleted")])
    return fhir_response(orjson.dumps(outcome), request, status=202)


@_route("GET", "/$export-file/{job_id}/{name}", "operation-export-file")
async def export_file(request: Request, job_id: str, name: str) -> Response:
    principal, bulk, job = await _own_job(request, job_id)
    if not files.FILE_NAME.match(name):
        raise InvalidRequest("Not an export file name")
    folder = bulk.folder(job_id)
    path = folder / name
    if files.cancelled(folder) or not (folder / files.MANIFEST).exists() or not path.exists():
        raise NotFound("No such file (the export was deleted, has expired, or is not complete)")
    # once the whole file went out: a disclosure to the exporting client, for the accounting of
    # disclosures (the patients it holds are read from the file after the response)
    audit = current_audit.get()
    disclosed = BackgroundTask(
        disclosures.export_file_sent, path, recipient_client=principal.client_id, user=principal.fhir_user,
        subject=principal.subject, address=audit.address if audit else None,
        request_id=audit.request_id if audit else None, file_name=name)
    headers = {"Cache-Control": "no-store", "Content-Length": str(sealed.plain_size(path))}
    return StreamingResponse(iterate_in_threadpool(sealed.chunks(path)), media_type=NDJSON, headers=headers,
                             background=disclosed)  # decrypted as it goes out (sealed.py)

"""FHIR Bulk Data Access 2.0 export (hl7.fhir.uv.bulkdata 2.0.0): system, Patient and Group level.

- kickoff.py: the kick-off request's parameters, parsed and checked, into an ExportRequest;
- jobs.py: the outbox job ("bulk.export") and how its state shows (status, manifest, cancel);
- runner.py: the export itself, streaming stored bytes into NDJSON files, page by page, up to the
  transactionTime cut-off;
- cutoff.py: how transactionTime is chosen so that the cut-off loses no change;
- checkpoint.py: the log of completed files an interrupted job goes on from;
- deleted.py: resources deleted since `_since` (the manifest's `deleted` files);
- files.py: where a job's files live (`<db file>.exports/<job id>/`), atomic writes, the sweep;
- install.py: `bulk_components(store, settings)`: the worker and routes the app mounts;
- cli.py: `python -m fhir_server export ...` (the same runner, in process, with a progress bar).
"""

from .jobs import JOB_KIND

__all__ = ["JOB_KIND"]

"""Turnaround of asynchronous visits as Prometheus metrics (`GET /metrics`, prometheus-client).

Patients are promised an answer within hours, so the operator watches:
  visit_queue_depth{state}             review Tasks by state (submitted: waiting for a clinician;
                                       in-review; awaiting-patient), counted in the store at scrape time
  visit_steps_total{step}              steps accepted (submit, triage-decline, claim, ask, answer,
                                       decline, refer, complete)
  visit_time_to_claim_seconds          submitted -> claimed (Task.authoredOn to the claim)
  visit_time_to_completion_seconds     submitted -> completed
No label carries patient data: steps and states are fixed vocabularies. Steps are counted when the
hook accepts them inside the write's unit of work; a commit that then fails (rare: the checks are
done) would have been counted. With --workers N the CLI turns on prometheus-client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR): steps and durations are summed over the workers at each scrape.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ..search.parse import parse_search
from ..storage import ResourceReader
from .lifecycle import REVIEW_STATUS, STEPS, TASK_CODE

__all__ = ["VisitMetrics"]

_HOURS = [h * 3600 for h in (0.25, 0.5, 1, 2, 4, 8, 12, 24, 48, 72)]
_QUEUE = {"submitted": "requested", "in-review": "in-progress", "awaiting-patient": "in-progress"}


def _parse_instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class VisitMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.steps = Counter("visit_steps", "Visit steps accepted", ["step"], registry=self.registry)
        for step in STEPS:
            self.steps.labels(step)  # every step shows, at 0, from the start
        self.to_claim = Histogram("visit_time_to_claim_seconds", "Submitted to claimed", buckets=_HOURS,
                                  registry=self.registry)
        self.to_completion = Histogram("visit_time_to_completion_seconds", "Submitted to completed",
                                       buckets=_HOURS, registry=self.registry)
        # counted at each scrape by the process that answers it: kept apart from the summed metrics
        self.queue_registry = CollectorRegistry()
        self.queue = Gauge("visit_queue_depth", "Review Tasks by state", ["state"], registry=self.queue_registry)

    def step(self, name: str, task: dict | None = None) -> None:
        self.steps.labels(name).inc()
        submitted = _parse_instant((task or {}).get("authoredOn"))
        if submitted is None:
            return
        elapsed = max(0.0, (datetime.now(timezone.utc) - submitted).total_seconds())
        if name == "claim":
            self.to_claim.observe(elapsed)
        elif name == "complete":
            self.to_completion.observe(elapsed)

    async def render(self, reader: ResourceReader) -> bytes:
        """The exposition text, with the queue depth counted now (indexed count queries)."""
        for business, status in _QUEUE.items():
            query = parse_search(["Task"], [
                ("code", f"{TASK_CODE['system']}|{TASK_CODE['code']}"), ("status", status),
                ("business-status", f"{REVIEW_STATUS}|{business}"), ("_summary", "count"), ("_total", "accurate"),
            ])
            page = await reader.search(query)
            self.queue.labels(business).set(page.total or 0)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            steps = generate_latest(merged)
        else:
            steps = generate_latest(self.registry)
        return steps + generate_latest(self.queue_registry)

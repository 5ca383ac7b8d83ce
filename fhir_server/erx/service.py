"""Wiring e-prescribing into the app when a gateway is configured: the trigger as a write hook on
MedicationRequest, the outbox worker with the delivery handler, and the gateway's inbound route."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..interactions.write_hooks import HookedStore, WriteHooks
from ..outbox import OutboxWorker
from ..storage import Store
from .config import ErxSettings

if TYPE_CHECKING:
    from .delivery import ErxDelivery
    from .fhir_pharmacy import FhirPharmacyDelivery


@dataclass
class ErxComponents:
    store: Store  # the app's store: units of work run the trigger
    worker: OutboxWorker | None = None
    routes: list = field(default_factory=list)
    delivery: "ErxDelivery | None" = None
    fhir_delivery: "FhirPharmacyDelivery | None" = None

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self.delivery is not None:
            await self.delivery.aclose()
        if self.fhir_delivery is not None:
            await self.fhir_delivery.aclose()


def erx_components(settings: ErxSettings, store: Store, hooks: WriteHooks | None = None) -> ErxComponents:
    """With `hooks`, `store` is already a HookedStore over them (the app's: other features hook
    writes too) and e-prescribing registers its hooks there; without, it wraps `store` itself."""
    if not settings.enabled:
        return ErxComponents(store)
    from .delivery import ErxDelivery
    from .fhir_pharmacy import JOB_KIND as FHIR_JOB_KIND
    from .fhir_pharmacy import FhirPharmacyDelivery
    from .inbound import ROUTES
    from .renewal import RenewalAnswer
    from .trigger import JOB_KIND, ErxTrigger

    if hooks is None:
        hooks = WriteHooks()
        store = HookedStore(store, hooks)
    hooks.register("MedicationRequest", ErxTrigger(settings))  # NewRx, CancelRx
    hooks.register("Task", RenewalAnswer(settings))  # a clinician's answer to a renewal request
    hooked = store
    delivery = ErxDelivery(hooked, settings)
    fhir_delivery = FhirPharmacyDelivery(hooked, settings)  # FHIR-native pharmacies: "erx.fhir" jobs
    # One attempt limit for both: the worker dead-letters the job when delivery marks the Task so.
    worker = OutboxWorker(hooked, {JOB_KIND: delivery.handle, FHIR_JOB_KIND: fhir_delivery.handle},
                          max_attempts=settings.max_attempts,
                          on_dead_letter={JOB_KIND: delivery.dead_lettered, FHIR_JOB_KIND: fhir_delivery.dead_lettered})
    return ErxComponents(hooked, worker, list(ROUTES), delivery, fhir_delivery)

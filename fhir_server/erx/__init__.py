"""E-prescribing: MedicationRequests that reach a sendable state become NCPDP SCRIPT messages
(mappers/ncpdp) queued in the outbox with their transmission Task (trigger.py), delivered to the
gateway by the outbox worker (delivery.py), answered asynchronously through /erx/inbound
(inbound.py), and administered with `python -m fhir_server erx list|retry` (admin.py)."""

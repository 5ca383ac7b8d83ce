"""The audit trail (HIPAA Security Rule 164.312(b) audit controls): IHE BALP AuditEvents for every
access and security event, hash-chained, committed with writes and batched for reads.

context.py (what a request did) -> middleware.py and store.py (record it) -> trail.py (commit it,
chain.py seals it) ; events.py shapes the resources; cli.py verifies and exports the trail.
"""

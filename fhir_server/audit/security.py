"""The authorization server's security events (smart_auth/security_events.py) as AuditEvents.

Sign-in and sign-out are DICOM "User Authentication" (110114) with Login/Logout subtypes, as BALP
and ATNA record them; token issuance, refusal and revocation and consent decisions have no
standard subtype, so they are coded in this server's security-event CodeSystem.
"""

from __future__ import annotations

from smart_auth.security_events import CONSENT, LOGIN, LOGOUT, REVOCATION, TOKEN, SecurityEvent

from ..storage.serialization import now_instant
from . import context
from .events import (LOGIN as LOGIN_CODE, LOGOUT as LOGOUT_CODE, MINOR_FAILURE, SECURITY_EVENT, SUCCESS,
                     USER_AUTHENTICATION, AuditRecord)
from .trail import AuditTrail

_SUBTYPES = {
    LOGIN: LOGIN_CODE,
    LOGOUT: LOGOUT_CODE,
    TOKEN: {"system": SECURITY_EVENT, "code": "token", "display": "Access token request"},
    REVOCATION: {"system": SECURITY_EVENT, "code": "revocation", "display": "Token or grant revocation"},
    CONSENT: {"system": SECURITY_EVENT, "code": "consent", "display": "Authorization consent decision"},
}
_ACTIONS = {LOGIN: "E", LOGOUT: "E", TOKEN: "C", REVOCATION: "D", CONSENT: "E"}


class SecurityEventRecorder:
    """app.state.security_events: each event into the trail's next batch."""

    def __init__(self, trail: AuditTrail):
        self._trail = trail

    def __call__(self, event: SecurityEvent) -> None:
        request = context.current.get()  # the HTTP request that caused it, when there is one
        self._trail.record(AuditRecord(
            type=USER_AUTHENTICATION,
            subtype=[_SUBTYPES[event.kind]],
            action=_ACTIONS[event.kind],
            outcome=SUCCESS if event.success else MINOR_FAILURE,
            recorded=now_instant(),
            user=event.fhir_user,
            subject=event.username,
            client_id=event.client_id,
            address=event.address,
            grant_id=event.grant_id,
            patients=[event.fhir_user.partition("/")[2]] if event.fhir_user and event.fhir_user.startswith("Patient/") else [],
            description=event.detail,
            request_id=request.request_id if request is not None else None,  # joins the response and the log line
        ))

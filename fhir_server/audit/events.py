"""AuditEvents shaped on the IHE Basic Audit Log Patterns (BALP 1.1, FHIR R4):
https://profiles.ihe.net/ITI/BALP/

An AuditRecord says what happened in plain fields; `audit_event` turns it into the R4 resource:
type and subtype (the RESTful interaction, or the security event), action (C/R/U/D/E), recorded,
outcome, agents (the user by fhirUser, the client app by client_id with the network address, this
server), source, and entities (the patient when the data is about one, each resource touched,
the query with its result count, the request id). Never a resource's content: a search's query
string is kept (base64, as BALP's Query pattern does) because it is what was asked.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Iterable

from profiles.canonical import CANONICAL_BASE

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_AGENT = "https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
OPERATION_URL = "urn:ietf:rfc:3986"  # an operation subtype is coded by its OperationDefinition's URL
SECURITY_EVENT = f"{CANONICAL_BASE}/CodeSystem/security-event"  # token issuance and the like (no standard code)

# AuditEvent.type codes
REST = {"system": EVENT_TYPE, "code": "rest", "display": "Restful Operation"}
USER_AUTHENTICATION = {"system": DCM, "code": "110114", "display": "User Authentication"}
SECURITY_ALERT = {"system": DCM, "code": "110113", "display": "Security Alert"}
EXPORT = {"system": DCM, "code": "110106", "display": "Export"}  # a disclosure, at its source (BALP PrivacyDisclosure.Source)
DISCLOSURE_TYPE = f"{DCM}|110106"  # what the accounting of disclosures searches by

LOGIN = {"system": DCM, "code": "110122", "display": "Login"}
LOGOUT = {"system": DCM, "code": "110123", "display": "Logout"}
DISCLOSE = {"system": LIFECYCLE, "code": "disclose", "display": "Disclose Record Lifecycle Event"}

SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"

_INTERACTION_ACTION = {
    "read": "R", "vread": "R", "history-instance": "R", "history-type": "R", "history-system": "R",
    "search-type": "E", "search-system": "E", "search": "E",
    "create": "C", "update": "U", "patch": "U", "delete": "D",
    "transaction": "E", "batch": "E", "operation": "E", "capabilities": "E",
}
_METHOD_INTERACTION = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def interaction_of_method(method: str) -> str:
    """The RESTful interaction a stored version's HTTP method made (create, update, patch, delete)."""
    return _METHOD_INTERACTION.get(method, "update")


def action_of(interaction: str) -> str:
    return _INTERACTION_ACTION.get(interaction, "E")


def outcome_of(status: int) -> str:
    if status < 400:
        return SUCCESS
    return MINOR_FAILURE if status < 500 else SERIOUS_FAILURE


@dataclass
class AuditRecord:
    """One audited event in plain fields (the request's, or a worker's disclosure)."""

    type: dict  # one of the type Codings above
    subtype: list[dict]
    action: str  # C R U D E
    outcome: str  # 0 success, 4 minor failure, 8 serious failure
    recorded: str  # FHIR instant
    status: int | None = None  # the HTTP status answered, when there was a request
    user: str | None = None  # the user's fhirUser ("Practitioner/1"), or None for a backend service
    subject: str | None = None  # the user's login name, or the backend client's id
    client_id: str | None = None
    address: str | None = None  # the client's network address
    grant_id: str | None = None  # the authorization (token grant) used: BALP puts it in agent.policy
    purpose_of_use: list[dict] = field(default_factory=list)  # Codings carried by the token
    resources: list[str] = field(default_factory=list)  # "Type/id/_history/n" or "Type/id" touched
    patients: list[str] = field(default_factory=list)  # patient ids the data is about
    query: str | None = None  # the search asked (path and query string)
    result_count: int | None = None  # resources returned
    total: int | None = None  # the search's total, when known
    request_id: str | None = None
    recipient: str | None = None  # a disclosure's recipient: an endpoint URL or an Organization reference
    description: str | None = None  # free text without patient data (an error class, an operation name)


def rest_subtype(interaction: str, operation_url: str | None = None) -> list[dict]:
    codings = [{"system": RESTFUL, "code": interaction}]
    if operation_url:
        codings.append({"system": OPERATION_URL, "code": operation_url})
    return codings


def audit_event(record: AuditRecord, event_id: str, server: str) -> dict:
    """The AuditEvent resource of `record` (without id-independent meta: the store adds meta)."""
    event: dict = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": record.type,
    }
    if record.subtype:
        event["subtype"] = record.subtype
    event["action"] = record.action
    event["recorded"] = record.recorded
    event["outcome"] = record.outcome
    if record.status is not None:
        event["outcomeDesc"] = str(record.status)
    if record.purpose_of_use:
        event["purposeOfEvent"] = [{"coding": [c]} for c in record.purpose_of_use]
    event["agent"] = _agents(record, server)
    event["source"] = {
        "site": server,
        "observer": {"display": "fhir-async-telehealth"},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    entities = _entities(record)
    if entities:
        event["entity"] = entities
    return event


def _agents(record: AuditRecord, server: str) -> list[dict]:
    agents: list[dict] = []
    if record.user or (record.subject and record.subject != record.client_id):
        user: dict = {
            "type": {"coding": [{"system": BALP_AGENT, "code": "UserOauthAgent", "display": "User OAuth Agent participant"}]},
            "who": {},
            "requestor": True,
        }
        if record.user:
            user["who"]["reference"] = record.user
        if record.subject:
            user["who"]["identifier"] = {"value": record.subject}
        if record.grant_id:
            user["policy"] = [record.grant_id]
        agents.append(user)
    client: dict = {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"value": record.client_id or "unknown"}},
        "requestor": not agents,
    }
    if record.grant_id and not agents:
        client["policy"] = [record.grant_id]
    if record.address:
        client["network"] = {"address": record.address, "type": "2"}
    agents.append(client)
    destination: dict = {
        "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": server},
        "requestor": False,
    }
    if server.startswith(("http://", "https://")):
        destination["network"] = {"address": server, "type": "5"}
    if record.recipient:
        # a disclosure: the data left for the recipient (a pharmacy, an EHR's endpoint)
        destination = {
            "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
            "who": _recipient(record.recipient),
            "requestor": False,
        }
        if record.recipient.startswith(("http://", "https://")):
            destination["network"] = {"address": record.recipient, "type": "5"}
    agents.append(destination)
    return agents


def _recipient(recipient: str) -> dict:
    if recipient.startswith(("http://", "https://")):
        return {"display": recipient}
    return {"reference": recipient}


def _entities(record: AuditRecord) -> list[dict]:
    entities: list[dict] = []
    for patient in record.patients:
        entities.append({
            "what": {"reference": f"Patient/{patient}"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        })
    for reference in record.resources:
        entities.append({
            "what": {"reference": reference},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        })
    if record.query is not None:
        query: dict = {
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
            "query": base64.b64encode(record.query.encode("utf-8")).decode("ascii"),
        }
        details = []
        if record.result_count is not None:
            details.append({"type": "returned", "valueString": str(record.result_count)})
        if record.total is not None:
            details.append({"type": "total", "valueString": str(record.total)})
        if details:
            query["detail"] = details
        entities.append(query)
    if record.description:
        entities.append({
            "type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"},
            "description": record.description,
        })
    if record.request_id:
        entities.append({
            "what": {"identifier": {"value": record.request_id}},
            "type": {"system": BALP_ENTITY, "code": "XrequestId",
                     "display": "transport specific unique identifier where http X-Request-Id is used"},
        })
    return entities


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))

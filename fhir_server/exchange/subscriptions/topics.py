"""The server's subscription topics (Subscriptions R5 Backport IG 1.1.0 on R4).

R4 has no SubscriptionTopic resource: per the IG (1.1.0, exchange.md A.6) an R4 server supports
pre-defined topics with fixed canonical URLs, advertised with the
`capabilitystatement-subscriptiontopic-canonical` extension on the CapabilityStatement's
Subscription entry (`capability_extensions()`). They are modelled here the way R4B/R5
SubscriptionTopic would (resource trigger, filters, shape); clients cannot define topics.

    consultation-completed   focus Encounter; fires on the transition to finished (a review Task
                             completed, which finishes its Encounter, or a direct Encounter write
                             to finished); context: the Patient.  filters: patient, subject,
                             service-provider, participant, _id
    visit-submitted          focus Task (the visit's review Task); fires when $submit creates it
                             requested/submitted (clinician queues); context: Encounter, Patient.
                             filters: patient, subject, owner, focus, _id
    prescription-status-changed  focus MedicationRequest; fires on create and on every change of
                             status; context: the Patient.  filters: patient, subject, requester,
                             status, intent, _id
"""

from __future__ import annotations

from dataclasses import dataclass

TOPIC_BASE = "http://fhir-async-telehealth.example/SubscriptionTopic"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC_CANONICAL_EXT = f"{BACKPORT}/capabilitystatement-subscriptiontopic-canonical"


@dataclass(frozen=True)
class Topic:
    url: str
    name: str
    title: str
    description: str
    resource_type: str  # the focus's type
    filters: frozenset[str]  # search parameters of resource_type a subscriber may filter on


CONSULTATION_COMPLETED = Topic(
    f"{TOPIC_BASE}/consultation-completed", "consultation-completed", "Consultation completed",
    "An asynchronous visit's review was completed: its Encounter became finished.",
    "Encounter", frozenset({"patient", "subject", "service-provider", "participant", "_id"}))
VISIT_SUBMITTED = Topic(
    f"{TOPIC_BASE}/visit-submitted", "visit-submitted", "Visit submitted",
    "A patient submitted an asynchronous visit: its review Task was created (requested/submitted).",
    "Task", frozenset({"patient", "subject", "owner", "focus", "_id"}))
PRESCRIPTION_STATUS_CHANGED = Topic(
    f"{TOPIC_BASE}/prescription-status-changed", "prescription-status-changed", "Prescription status changed",
    "A MedicationRequest was created or its status changed.",
    "MedicationRequest", frozenset({"patient", "subject", "requester", "status", "intent", "_id"}))

TOPICS: dict[str, Topic] = {t.url: t for t in (CONSULTATION_COMPLETED, VISIT_SUBMITTED, PRESCRIPTION_STATUS_CHANGED)}


def capability_extensions() -> list[dict]:
    """For CapabilityStatement.rest.resource(type=Subscription).extension: one per topic."""
    return [{"url": TOPIC_CANONICAL_EXT, "valueCanonical": url} for url in TOPICS]

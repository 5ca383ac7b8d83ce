"""The consultation summary: when a visit completes, a FHIR document about it (R4 composition.html,
documents.html) and a US Core clinical-note DocumentReference pointing at it, written in the same
unit of work as the completion (visit/transitions.py calls compose_consultation), so the document
exists exactly when the visit is completed.

The Composition: status final, type LOINC 11488-4 "Consult note", subject, encounter, author and
legal attester = the reviewing clinician (the review Task's owner), one section each for the reason
for visit, the intake answers, the photos, the assessment (Conditions), the plan (CarePlans), the
medications (MedicationRequests) and the follow-up messages (Communications), each with a generated
XHTML narrative (narrative.py) and `entry` references to the resources it summarises. An empty
section says so (text "None recorded.", emptyReason nilknown).

The DocumentReference: status current, type 11488-4, category clinical-note, context.encounter;
content[0] = the document (`Composition/{id}/$document`, application/fhir+json), content[1] = an
HTML page of the section narratives stored as a Binary whose securityContext is the Patient, with
its `size` and `hash` (SHA-1) so a client can check what it downloaded (the document has neither:
its bytes differ on every request, see compose_consultation).

Corrections (register_document_hooks): a Condition, CarePlan or MedicationRequest of a completed
visit that is created, changed or deleted afterwards makes a new Composition that `replaces` the
current one (relatesTo), and a new DocumentReference that replaces the old, which becomes
`superseded`. The old Composition stays as it was (final): a correction is never a silent edit.
A change that alters nothing the document shows (an e-Rx delivery detail, a note) makes no version.
"""

from __future__ import annotations

import base64
import hashlib
import uuid

import orjson

from ..interactions.resource_reads import read_resource, reference_of, search_resources
from ..storage import StoredVersion, UnitOfWork
from ..storage.serialization import now_instant
from ..visit.lifecycle import review_task_id
from . import narrative as n

__all__ = ["compose_consultation", "current_composition", "register_document_hooks", "DocumentCorrections",
           "attachment_integrity", "CONSULT_NOTE", "CLINICAL_NOTE", "SECTION_TITLES"]

LOINC = "http://loinc.org"
CONSULT_NOTE = {"system": LOINC, "code": "11488-4", "display": "Consult note"}
CLINICAL_NOTE = {"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                 "code": "clinical-note", "display": "Clinical Note"}
EMPTY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "nilknown",
                     "display": "Nil Known"}]}

# section key -> (title, LOINC code or None where no code fits for sure)
SECTION_TITLES: dict[str, tuple[str, dict | None]] = {
    "reason": ("Reason for visit", {"system": LOINC, "code": "29299-5", "display": "Reason for visit Narrative"}),
    "intake": ("Intake answers", None),
    "photos": ("Photos", None),
    "assessment": ("Assessment and diagnosis", {"system": LOINC, "code": "51848-0", "display": "Evaluation note"}),
    "plan": ("Plan", {"system": LOINC, "code": "18776-5", "display": "Plan of care note"}),
    "medications": ("Medications prescribed", None),
    "follow-up": ("Follow-up and messages", None),
}


def _section(key: str, narrative: str, entries: list[str]) -> dict:
    title, code = SECTION_TITLES[key]
    section: dict = {"title": title}
    if code is not None:
        section["code"] = {"coding": [code], "text": title}
    section["text"] = {"status": "generated", "div": narrative}
    if entries:
        section["entry"] = [{"reference": r} for r in entries]
    else:
        section["emptyReason"] = EMPTY
    return section


# -- the sections ----------------------------------------------------------------------------------


def _reason(encounter: dict, intakes: list[dict]) -> dict:
    reasons = [t for t in (n.codeable_text(c) for c in encounter.get("reasonCode") or []) if t]
    reasons += [r["display"] for r in encounter.get("reasonReference") or [] if isinstance(r, dict) and r.get("display")]
    if not reasons:  # the guide's intake asks it in its own words (linkId "reason")
        for intake in intakes:
            for item in _walk(intake.get("item") or []):
                if item.get("linkId") == "reason":
                    reasons += [t for t in (n.answer_text(a) for a in item.get("answer") or []) if t]
    return _section("reason", n.div(*(n.paragraph(r) for r in reasons)), [])


def _walk(items: list) -> list[dict]:
    out: list[dict] = []
    for item in items:
        if isinstance(item, dict):
            out.append(item)
            out += _walk(item.get("item") or [])
            for answer in item.get("answer") or []:
                out += _walk((answer or {}).get("item") or [])
    return out


async def _question_texts(uow: UnitOfWork, intake: dict) -> dict[str, str]:
    """linkId -> the Questionnaire's item text, when the intake's Questionnaire is stored here."""
    canonical = intake.get("questionnaire")
    if not isinstance(canonical, str) or not canonical:
        return {}
    url, _, version = canonical.partition("|")
    params = [("url", url)] + ([("version", version)] if version else [])
    try:
        found = await search_resources(uow, "Questionnaire", params)
    except Exception:  # an unusable canonical: the answers keep their own texts
        return {}
    texts: dict[str, str] = {}
    for questionnaire in found[:1]:
        for item in _walk(questionnaire.get("item") or []):
            if isinstance(item.get("linkId"), str) and isinstance(item.get("text"), str):
                texts[item["linkId"]] = item["text"]
    return texts


def _intake_items(items: list, texts: dict[str, str]) -> str:
    rows: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        question = texts.get(item.get("linkId")) or item.get("text") or item.get("linkId") or ""
        answers = [t for t in (n.answer_text(a) for a in item.get("answer") or [] if isinstance(a, dict)) if t]
        nested = "".join(_intake_items((a or {}).get("item") or [], texts) for a in item.get("answer") or [])
        children = _intake_items(item.get("item") or [], texts)
        if answers:
            rows.append(n.labelled(question, "; ".join(answers)) + nested)
        elif children or nested:
            rows.append(f"<b>{n.esc(question)}</b>{children}{nested}")
    return n.bullet_list(rows)


async def _intake(uow: UnitOfWork, intakes: list[dict]) -> dict:
    blocks = []
    for intake in intakes:
        blocks.append(_intake_items(intake.get("item") or [], await _question_texts(uow, intake)))
    return _section("intake", n.div(*blocks), [f"QuestionnaireResponse/{q['id']}" for q in intakes])


def _photos(media: list[dict]) -> dict:
    rows = []
    for number, m in enumerate(media, 1):
        content = m.get("content") or {}
        what = content.get("title") or n.codeable_text(m.get("bodySite")) or n.codeable_text(m.get("type")) or "Photo"
        when = m.get("createdDateTime")
        label = "Video" if content.get("contentType", "").startswith("video/") else "Photo"
        rows.append(n.esc(f"{label} {number}: {what}" + (f" ({when})" if when else "")))
    return _section("photos", n.div(n.bullet_list(rows)), [f"Media/{m['id']}" for m in media])


def _assessment(conditions: list[dict]) -> dict:
    rows = []
    for c in conditions:
        text = n.codeable_text(c.get("code")) or "Diagnosis"
        codes = [f"{g['code']}" for g in (c.get("code") or {}).get("coding") or [] if isinstance(g, dict) and g.get("code")]
        sites = [t for t in (n.codeable_text(s) for s in c.get("bodySite") or []) if t]
        status = n.codeable_text(c.get("verificationStatus"))
        detail = ", ".join(p for p in (", ".join(codes), ", ".join(sites), status) if p)
        rows.append(n.esc(text + (f" ({detail})" if detail else "")))
    return _section("assessment", n.div(n.bullet_list(rows)), [f"Condition/{c['id']}" for c in conditions])


def _plan(careplans: list[dict]) -> dict:
    blocks = []
    for p in careplans:
        if p.get("title"):
            blocks.append(f"<p><b>{n.esc(p['title'])}</b></p>")
        if p.get("description"):
            blocks.append(n.paragraph(p["description"]))
        activities = [((a or {}).get("detail") or {}).get("description") for a in p.get("activity") or []]
        blocks.append(n.bullet_list(n.esc(a) for a in activities if isinstance(a, str) and a))
    return _section("plan", n.div(*blocks), [f"CarePlan/{p['id']}" for p in careplans])


def _medications(requests: list[dict]) -> dict:
    rows = []
    for mr in requests:
        name = n.codeable_text(mr.get("medicationCodeableConcept")) or (mr.get("medicationReference") or {}).get("display") \
            or "Medication"
        sigs = [d["text"] for d in mr.get("dosageInstruction") or [] if isinstance(d, dict) and d.get("text")]
        status = mr.get("status")
        rows.append(n.esc(name + (f": {'; '.join(sigs)}" if sigs else "") + (f" ({status})" if status else "")))
    return _section("medications", n.div(n.bullet_list(rows)), [f"MedicationRequest/{m['id']}" for m in requests])


def _follow_up(messages: list[dict], task: dict | None) -> dict:
    patient, clinician = reference_of((task or {}).get("for")), reference_of((task or {}).get("owner"))
    rows = []
    for m in messages:
        sender = reference_of(m.get("sender"))
        who = "Patient" if sender == patient else "Clinician" if sender == clinician else "Care team"
        texts = [p["contentString"] for p in m.get("payload") or [] if isinstance(p, dict) and p.get("contentString")]
        if not texts:
            texts = ["(attachment)"]
        when = f" ({m['sent']})" if m.get("sent") else ""
        rows.append(n.labelled(who + when, " ".join(texts)))
    return _section("follow-up", n.div(n.bullet_list(rows)), [f"Communication/{m['id']}" for m in messages])


# -- composing --------------------------------------------------------------------------------------


def _by_date(resources: list[dict], *fields: str) -> list[dict]:
    def key(r: dict) -> str:
        return next((r[f] for f in fields if isinstance(r.get(f), str)), "") or (r.get("meta") or {}).get("lastUpdated", "")
    return sorted(resources, key=key)


async def current_composition(uow: UnitOfWork, encounter_ref: str) -> dict | None:
    """The encounter's consultation document now: the final consult note no other one replaces."""
    found = [c for c in await search_resources(uow, "Composition", [("encounter", encounter_ref), ("status", "final")])
             if any(g.get("code") == CONSULT_NOTE["code"] for g in (c.get("type") or {}).get("coding") or [])]
    replaced = {reference_of(r.get("targetReference")) for c in found for r in c.get("relatesTo") or [] if r.get("code") == "replaces"}
    current = [c for c in found if f"Composition/{c['id']}" not in replaced]
    return _by_date(current, "date")[-1] if current else None


async def _visit(uow: UnitOfWork, encounter_ref: str) -> dict:
    """What the document is made of: the visit's resources read through `uow`, and its sections."""
    encounter = await read_resource(uow, encounter_ref)
    if encounter is None:
        raise ValueError("compose_consultation: the Encounter is not stored")
    encounter_id = encounter_ref.split("/", 1)[1]
    task = await read_resource(uow, f"Task/{review_task_id(encounter_id)}")
    subject = reference_of(encounter.get("subject")) or reference_of((task or {}).get("for"))
    on_visit = [("encounter", encounter_ref)]
    intakes = [q for q in await search_resources(uow, "QuestionnaireResponse", on_visit) if q.get("status") in ("completed", "amended")]
    media = _by_date(await search_resources(uow, "Media", on_visit), "createdDateTime")
    conditions = _by_date(await search_resources(uow, "Condition", on_visit), "recordedDate")
    careplans = _by_date(await search_resources(uow, "CarePlan", on_visit), "created")
    prescriptions = _by_date(await search_resources(uow, "MedicationRequest", on_visit), "authoredOn")
    messages = _by_date(await search_resources(uow, "Communication", on_visit), "sent")
    author = reference_of((task or {}).get("owner")) or next(
        (r for r in (reference_of(c.get("recorder")) for c in conditions) if r), None) or next(
        (r for r in (reference_of(p.get("individual")) for p in encounter.get("participant") or []) if r), None)
    if author is None:
        raise ValueError("compose_consultation: the visit has no clinician to author its note")
    sections = [_reason(encounter, intakes), await _intake(uow, intakes), _photos(media), _assessment(conditions),
                _plan(careplans), _medications(prescriptions), _follow_up(messages, task)]
    return {"encounter": encounter, "subject": subject, "author": author, "sections": sections}


async def compose_consultation(uow: UnitOfWork, encounter_ref: str, *, replaces: str | None = None) -> StoredVersion:
    """Write the visit's consultation document (Composition), its HTML rendering (Binary) and the
    DocumentReference to both; with `replaces` ("Composition/id"), as the next version of that one."""
    visit = await _visit(uow, encounter_ref)
    encounter, subject, author, sections = visit["encounter"], visit["subject"], visit["author"], visit["sections"]
    clinician = await read_resource(uow, author)

    now = now_instant()
    title = "Consultation summary: asynchronous telehealth visit"
    composition_id, binary_id, docref_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    signer = _person_name(clinician)
    composition: dict = {
        "resourceType": "Composition",
        "text": {"status": "generated", "div": n.div(
            f"<p><b>{n.esc(title)}</b></p>",
            n.paragraph(f"Signed by {signer} on {now}") if signer else n.paragraph(f"Signed on {now}"))},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{composition_id}"},
        "status": "final",
        "type": {"coding": [CONSULT_NOTE], "text": "Consult note"},
        "category": [{"coding": [CLINICAL_NOTE]}],
        "subject": {"reference": subject} if subject else None,
        "encounter": {"reference": encounter_ref},
        "date": now,
        "author": [{"reference": author}],
        "title": title,
        "attester": [{"mode": "legal", "time": now, "party": {"reference": author}}],
        "section": sections,
    }
    if replaces:
        composition["relatesTo"] = [{"code": "replaces", "targetReference": {"reference": replaces}}]
    composition = {k: v for k, v in composition.items() if v is not None}
    stored = await uow.write("Composition", composition_id, composition, method="POST", must_not_exist=True)

    page = n.html_page(title, [(s["title"], s["text"]["div"]) for s in sections]).encode("utf-8")
    binary = {"resourceType": "Binary", "contentType": "text/html", "data": base64.b64encode(page).decode("ascii")}
    if subject:
        binary["securityContext"] = {"reference": subject}
    await uow.write("Binary", binary_id, binary, method="POST", must_not_exist=True)

    previous = await _current_document_reference(uow, encounter_ref, replaces) if replaces else None
    docref: dict = {
        "resourceType": "DocumentReference",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{docref_id}"}],
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [CONSULT_NOTE], "text": "Consult note"},
        "category": [{"coding": [CLINICAL_NOTE]}],
        "subject": {"reference": subject} if subject else None,
        "date": now,
        "author": [{"reference": author}],
        "description": title,
        "content": [
            # No size or hash here: `$document` assembles the Bundle on every request, with a fresh
            # identifier and timestamp (api/document_routes.py), so no two downloads have the same
            # bytes and any hash would be wrong. Pointing at a persisted Bundle instead would fix the
            # bytes, but a patient could not read it (stored Bundles are never patient-accessible:
            # smart_auth/access.py), and its fullUrls need the public base URL, which a write hook
            # does not know. So the document's integrity is left to the EHR's own copy.
            {"attachment": {"contentType": "application/fhir+json", "url": f"Composition/{composition_id}/$document",
                            "title": title, "creation": now}},
            # The HTML page's bytes are fixed (the server writes this Binary once; a correction writes
            # a new one): size and hash are of exactly what `GET Binary/{id}` returns raw.
            {"attachment": {"contentType": "text/html", "url": f"Binary/{binary_id}", "title": title, "creation": now,
                            **attachment_integrity(page)}},
        ],
        "context": {"encounter": [{"reference": encounter_ref}],
                    "related": [{"reference": f"Composition/{composition_id}"}]},
    }
    period = encounter.get("period")
    if isinstance(period, dict) and period:
        docref["context"]["period"] = period
    if previous is not None:
        docref["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/{previous['id']}"}}]
        old = {k: v for k, v in previous.items() if k != "meta"}
        await uow.write("DocumentReference", previous["id"], {**old, "status": "superseded"}, method="PUT")
    docref = {k: v for k, v in docref.items() if v is not None}
    await uow.write("DocumentReference", docref_id, docref, method="POST", must_not_exist=True)
    return stored


def attachment_integrity(content: bytes) -> dict:
    """R4 Attachment.size (bytes) and Attachment.hash (base64 of the SHA-1 of the bytes) of `content`."""
    return {"size": len(content), "hash": base64.b64encode(hashlib.sha1(content).digest()).decode("ascii")}


def _person_name(person: dict | None) -> str | None:
    for name in (person or {}).get("name") or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return name["text"]
        parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family")]
        text = " ".join(p for p in parts if isinstance(p, str) and p)
        if text:
            return text
    return None


async def _current_document_reference(uow: UnitOfWork, encounter_ref: str, composition_ref: str) -> dict | None:
    """The current DocumentReference whose document is `composition_ref`."""
    url = f"{composition_ref}/$document"
    for docref in await search_resources(uow, "DocumentReference", [("encounter", encounter_ref), ("status", "current")]):
        if any(((c or {}).get("attachment") or {}).get("url") == url for c in docref.get("content") or []):
            return docref
    return None


# -- corrections after completion -------------------------------------------------------------------


def _clinical(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k not in ("meta", "text")}


class DocumentCorrections:
    """Write hook (Condition, CarePlan, MedicationRequest): a change to a completed visit's record
    composes the next version of its consultation document, replacing the current one."""

    async def __call__(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        from ..visit.transitions import _lifecycle, task_state  # (transitions imports this module)

        if _lifecycle.get():
            return
        old = orjson.loads(previous.body) if previous is not None and previous.body is not None else None
        new = orjson.loads(stored.body) if stored.body is not None else None
        if old is not None and new is not None and _clinical(old) == _clinical(new):
            return
        encounter_refs = {r for r in (reference_of((x or {}).get("encounter")) for x in (old, new)) if r}
        for encounter_ref in sorted(encounter_refs):
            if not encounter_ref.startswith("Encounter/") or encounter_ref.count("/") != 1:
                continue
            task = await read_resource(uow, f"Task/{review_task_id(encounter_ref.split('/', 1)[1])}")
            if task is None or task_state(task)[0] != "completed":
                continue
            current = await current_composition(uow, encounter_ref)
            if current is not None and current.get("section") == (await _visit(uow, encounter_ref))["sections"]:
                continue  # nothing the document shows has changed (a delivery detail, a coding tweak)
            await compose_consultation(uow, encounter_ref,
                                       replaces=f"Composition/{current['id']}" if current else None)


def register_document_hooks(hooks) -> None:
    """Register the correction hooks (fhir_server.interactions.write_hooks.WriteHooks)."""
    corrections = DocumentCorrections()
    for resource_type in ("Condition", "CarePlan", "MedicationRequest"):
        hooks.register(resource_type, corrections)

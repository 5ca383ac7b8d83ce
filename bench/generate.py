"""Deterministic generator of a realistic telehealth data set, scaled from the Synthea sample.

Used by bench/search_bench.py; also runs on its own to write NDJSON:

    .venv/bin/python bench/generate.py --resources 50000 --out /tmp/fhir-data.ndjson [--seed 1] [--anchor 2026-05-01]

What it makes (every id new, every reference literal and pointing at a resource made earlier in the
stream, so a prefix of the stream is consistent on its own):

- Organizations (1 per ~200 patients) and Practitioners (1 per ~20 patients), first; shaped like the
  Synthea ones (identifiers, names, e-mails, phones re-drawn digit for digit / letter for letter);
- per patient, in this order: the Patient (a Synthea Patient with new identifiers, names, birth date,
  address line, phone; managingOrganization and generalPractitioner set), its Encounters (~8 on
  average, heavy-tailed; ~40% virtual "VR" consultations, the rest AMB/EMER/HH with Synthea's
  encounter types; 90% spread over the 5 years before the anchor, 10% in its last 30 days), then for
  those encounters ~4 QuestionnaireResponses (completed, authored, canonical questionnaire),
  ~4 MedicationRequests (Synthea medications and dosages, requester = the encounter's Practitioner),
  ~25 Observations (vital signs with LOINC codes and UCUM valueQuantity, blood pressure as a
  component panel, plus a few rarer laboratory / score codes) and a CarePlan for ~25% of the finished
  virtual consultations.

Resources per patient ≈ 1 + 8 + 4 + 4 + 25 + ~0.8; the stream stops at exactly `--resources`.

All times are UTC ("Z"); every encounter starts between 00:00 and 22:00 and lasts at most 90 minutes,
so it never crosses midnight and a day-precision date search has one obvious answer (the benchmark
checks result counts against the `Summary` collected while generating).
The anchor (default 2026-05-01T12:00:00Z, fixed so that a seed always gives the same bytes) is "now"
for the data: nothing is dated after it, and "since yesterday" means since the day before it.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import random
import re
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import orjson

from bench_support import reshape  # bench/bench_support.py

ROOT = Path(__file__).resolve().parent.parent
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea-10-patients"
DEFAULT_ANCHOR = "2026-05-01T12:00:00+00:00"
RECENT_DAYS = 30  # 10% of encounters fall in the last RECENT_DAYS before the anchor
HISTORY_DAYS = 5 * 365

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SYNTHEA_ID = "https://github.com/synthetichealth/synthea"
NPI = "http://hl7.org/fhir/sid/us-npi"

# (weight, code, display, unit, ucum code, low, high, decimals, category) -- vital signs and a few rarer ones
_OBS_KINDS = [
    (3.0, "8867-4", "Heart rate", "/min", "/min", 50, 120, 0, "vital-signs"),
    (2.0, "9279-1", "Respiratory rate", "/min", "/min", 10, 24, 0, "vital-signs"),
    (2.0, "8310-5", "Body temperature", "Cel", "Cel", 35.8, 39.5, 1, "vital-signs"),
    (3.0, "29463-7", "Body weight", "kg", "kg", 40, 130, 1, "vital-signs"),
    (2.0, "8302-2", "Body height", "cm", "cm", 140, 200, 1, "vital-signs"),
    (2.0, "39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2", 17, 40, 1, "vital-signs"),
    (2.0, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%", 88, 100, 0, "vital-signs"),
    (3.0, "85354-9", "Blood pressure panel with all children optional", None, None, 0, 0, 0, "vital-signs"),
    (0.5, "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported", "{score}", "{score}", 0, 10, 0,
     "survey"),
    (0.3, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "%", 4.5, 11, 1, "laboratory"),
    (0.2, "2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", "mg/dL", 60, 250, 0, "laboratory"),
    (0.1, "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 120, 300, 0, "laboratory"),
]
OBS_CODES = [k[1] for k in _OBS_KINDS]
COMMON_OBS_CODES = [k[1] for k in _OBS_KINDS if k[0] >= 2]
RARE_OBS_CODES = [k[1] for k in _OBS_KINDS if k[0] < 1]

_QUESTIONNAIRES = [
    ("http://example.org/fhir/Questionnaire/phq-9", "1.0.0", "PHQ-9", 9),
    ("http://example.org/fhir/Questionnaire/gad-7", "1.0.0", "GAD-7", 7),
    ("http://example.org/fhir/Questionnaire/telehealth-intake", "2.1.0", "Telehealth intake", 5),
    ("http://example.org/fhir/Questionnaire/symptom-checker", "3.0.0", "Symptom checker", 6),
]
QUESTIONNAIRE_CANONICALS = [f"{url}|{version}" for url, version, _, _ in _QUESTIONNAIRES]

_VR_TYPES = [
    (SNOMED, "448337001", "Telemedicine consultation with patient (procedure)"),
    (SNOMED, "390906007", "Follow-up encounter (procedure)"),
    (SNOMED, "185389009", "Follow-up visit (procedure)"),
]
_CAREPLAN_ACTIVITIES = [
    ("409002", "Food allergy diet"),
    ("229065009", "Exercise therapy"),
    ("386463000", "Prescribed activity/exercise education"),
    ("698360004", "Diabetes self management plan"),
    ("736376001", "Infectious disease care plan (record artifact)"),
    ("183051005", "Recommendation to rest"),
]


# -- what the benchmark needs to know about the data (to draw parameters and check counts) --------


@dataclass
class Summary:
    anchor: str = DEFAULT_ANCHOR
    seed: int = 1
    resources: int = 0
    by_type: Counter = field(default_factory=Counter)
    # per patient: id, name words (normalised: every given/family/prefix), families, encounter indexes
    patient_ids: list = field(default_factory=list)
    patient_names: list = field(default_factory=list)  # list[list[str]] lower-cased name parts
    patient_families: list = field(default_factory=list)  # list[list[str]] as written
    patient_obs: list = field(default_factory=list)  # observations per patient
    patient_mr: list = field(default_factory=list)  # medication requests per patient
    patient_codes: list = field(default_factory=list)  # list[list[str]] distinct observation codes
    # per encounter
    enc_ids: list = field(default_factory=list)
    enc_patient: list = field(default_factory=list)  # index into patient_ids
    enc_status: list = field(default_factory=list)
    enc_class: list = field(default_factory=list)
    enc_day: list = field(default_factory=list)  # "YYYY-MM-DD" of the start (UTC)
    enc_mr: list = field(default_factory=list)  # medication requests per encounter
    enc_careplans: list = field(default_factory=list)
    obs_by_code: Counter = field(default_factory=Counter)

    def to_json(self) -> bytes:
        return orjson.dumps({k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()})

    @classmethod
    def from_json(cls, data: bytes) -> "Summary":
        raw = orjson.loads(data)
        s = cls(**{k: v for k, v in raw.items() if k not in ("by_type", "obs_by_code")})
        s.by_type = Counter(raw["by_type"])
        s.obs_by_code = Counter(raw["obs_by_code"])
        return s


# -- seed data -----------------------------------------------------------------------------------

_DIGITS = re.compile(r"\d+$")


def _read(name: str) -> list[dict]:
    with open(SYNTHEA / f"{name}.000.ndjson", "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


class Seeds:
    def __init__(self) -> None:
        patients = _read("Patient")
        practitioners = _read("Practitioner")
        organizations = _read("Organization")
        encounters = _read("Encounter")
        meds = _read("MedicationRequest")
        for p in patients:  # a deceased date would be far off the shifted birth dates
            p.pop("deceasedDateTime", None)
            p.pop("deceasedBoolean", None)
        self.patients = patients
        self.practitioners = practitioners
        self.organizations = organizations
        families: set[str] = set()
        givens: set[str] = set()
        for r in patients + practitioners:
            for n in r.get("name", []):
                if n.get("family"):
                    families.add(_DIGITS.sub("", n["family"]))
                for g in n.get("given", []):
                    givens.add(_DIGITS.sub("", g))
        for p in patients:
            for ext in p.get("extension", []):
                if ext.get("url", "").endswith("patient-mothersMaidenName"):
                    for word in ext["valueString"].split():
                        families.add(_DIGITS.sub("", word))
        self.families = sorted(f for f in families if f)
        self.givens = sorted(g for g in givens if g)
        # encounter (class, type coding) pairs and reasons, from Synthea; IMP (multi-day stays) left out
        kinds: dict[tuple, int] = Counter()
        reasons: set[bytes] = set()
        for e in encounters:
            cls = e["class"]["code"]
            if cls == "IMP":
                continue
            coding = e["type"][0]["coding"][0]
            kinds[(cls, coding["system"], coding["code"], coding["display"])] += 1
            if e.get("reasonCode"):
                reasons.add(orjson.dumps(e["reasonCode"]))
        self.encounter_kinds = sorted(kinds.items())
        self.reasons = [orjson.loads(r) for r in sorted(reasons)]
        # medications: (category, medicationCodeableConcept, dosageInstruction or None)
        seen: dict[bytes, tuple] = {}
        for m in meds:
            key = orjson.dumps(m["medicationCodeableConcept"])
            if key not in seen or (seen[key][2] is None and m.get("dosageInstruction")):
                seen[key] = (m["category"], m["medicationCodeableConcept"], m.get("dosageInstruction"))
        self.medications = [seen[k] for k in sorted(seen)]


# -- helpers ---------------------------------------------------------------------------------------


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Generator:
    def __init__(self, total: int, seed: int = 1, anchor: str = DEFAULT_ANCHOR, seeds: Seeds | None = None):
        self.total = total
        self.rnd = random.Random(seed)
        self.seeds = seeds or Seeds()
        self.anchor = dt.datetime.fromisoformat(anchor).astimezone(dt.timezone.utc)
        self.summary = Summary(anchor=self.anchor.isoformat(), seed=seed)
        self.obs_weights = [k[0] for k in _OBS_KINDS]
        self.kind_weights = [n for _, n in self.seeds.encounter_kinds]

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rnd.getrandbits(128), version=4))

    def _person_name(self) -> tuple[str, str]:
        r = self.rnd
        return f"{r.choice(self.seeds.families)}{r.randint(1, 999)}", f"{r.choice(self.seeds.givens)}{r.randint(1, 999)}"

    # -- resources --------------------------------------------------------------------------------

    def organization(self) -> dict:
        r = self.rnd
        o = copy.deepcopy(r.choice(self.seeds.organizations))
        oid = self._id()
        o["id"] = oid
        o["identifier"] = [{"system": SYNTHEA_ID, "value": oid}]
        o["name"] = f"{o['name']} {r.choice(['CLINIC', 'TELEHEALTH', 'HEALTH CENTER', 'MEDICAL GROUP'])} {r.randint(1, 99)}"
        for t in o.get("telecom", []):
            t["value"] = reshape(t["value"], r)
        for a in o.get("address", []):
            a["line"] = [reshape(line, r) for line in a.get("line", [])]
        return o

    def practitioner(self) -> dict:
        r = self.rnd
        p = copy.deepcopy(r.choice(self.seeds.practitioners))
        p["id"] = self._id()
        p["identifier"] = [{"system": NPI, "value": reshape("9999999999", r)}]
        family, given = self._person_name()
        p["name"] = [{"family": family, "given": [given], "prefix": ["Dr."]}]
        for t in p.get("telecom", []):
            if t.get("system") == "email":
                t["value"] = f"{given}.{family}@example.com"
            else:
                t["value"] = reshape(t["value"], r)
        p["gender"] = r.choice(["male", "female"])
        return p

    def patient(self, org: dict, gp: dict) -> dict:
        r = self.rnd
        p = copy.deepcopy(r.choice(self.seeds.patients))
        pid = self._id()
        p["id"] = pid
        family, given = self._person_name()
        given2 = f"{r.choice(self.seeds.givens)}{r.randint(1, 999)}"
        maiden = f"{r.choice(self.seeds.families)}{r.randint(1, 999)}"
        gender = r.choice(["male", "female"])
        p["gender"] = gender
        prefix = "Mr." if gender == "male" else r.choice(["Mrs.", "Ms."])
        names = [{"use": "official", "family": family, "given": [given, given2], "prefix": [prefix]}]
        if gender == "female" and r.random() < 0.3:
            names.append({"use": "maiden", "family": maiden, "given": [given, given2], "prefix": [prefix]})
        p["name"] = names
        for ident in p.get("identifier", []):
            if ident.get("system") in (SYNTHEA_ID, "http://hospital.smarthealthit.org"):
                ident["value"] = pid
            else:
                ident["value"] = reshape(ident["value"], r)
        for ext in p.get("extension", []):
            if ext.get("url", "").endswith("patient-mothersMaidenName"):
                ext["valueString"] = f"{r.choice(self.seeds.givens)}{r.randint(1, 999)} {r.choice(self.seeds.families)}{r.randint(1, 999)}"
            elif ext.get("url", "").endswith("us-core-birthsex"):
                ext["valueCode"] = "M" if gender == "male" else "F"
        born = dt.date(1940, 1, 1) + dt.timedelta(days=r.randrange(0, 80 * 365))
        p["birthDate"] = born.isoformat()
        for t in p.get("telecom", []):
            t["value"] = reshape(t["value"], r)
        for a in p.get("address", []):
            a["line"] = [reshape(line, r) for line in a.get("line", [])]
        p["managingOrganization"] = {"reference": f"Organization/{org['id']}", "display": org["name"]}
        p["generalPractitioner"] = [{"reference": f"Practitioner/{gp['id']}"}]
        s = self.summary
        s.patient_ids.append(pid)
        words = [w.lower() for n in names for w in (n["family"], *n["given"], *n["prefix"])]
        s.patient_names.append(sorted(set(words)))
        s.patient_families.append(sorted({n["family"] for n in names}))
        s.patient_obs.append(0)
        s.patient_mr.append(0)
        s.patient_codes.append([])
        return p

    def encounter(self, patient: dict, p_index: int, practitioner: dict, org: dict) -> tuple[dict, dt.datetime]:
        r = self.rnd
        if r.random() < 0.9:
            day = self.anchor.date() - dt.timedelta(days=r.randrange(RECENT_DAYS, HISTORY_DAYS))
        else:
            day = self.anchor.date() - dt.timedelta(days=r.randrange(0, RECENT_DAYS))
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc) + dt.timedelta(
            seconds=r.randrange(0, 22 * 3600))
        if start > self.anchor:
            start = self.anchor - dt.timedelta(seconds=r.randrange(60, 6 * 3600))
            if start.date() != day:
                start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        end = min(start + dt.timedelta(minutes=r.randint(10, 90)), max(self.anchor, start))
        if r.random() < 0.4:
            cls = "VR"
            system, code, display = r.choice(_VR_TYPES)
        else:
            (cls, system, code, display), = r.choices([k for k, _ in self.seeds.encounter_kinds], self.kind_weights)
        u = r.random()
        recent = (self.anchor - start) < dt.timedelta(days=2)
        status = "cancelled" if u < 0.05 else "in-progress" if (recent and u < 0.25) else "finished"
        eid = self._id()
        name = patient["name"][0]
        pname = f"{name['prefix'][0]} {name['given'][0]} {name['family']}"
        dr = practitioner["name"][0]
        period = {"start": _iso(start)} if status == "in-progress" else {"start": _iso(start), "end": _iso(end)}
        e = {
            "resourceType": "Encounter",
            "id": eid,
            "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-encounter"]},
            "identifier": [{"use": "official", "system": SYNTHEA_ID, "value": eid}],
            "status": status,
            "class": {"system": ACT_CODE, "code": cls},
            "type": [{"coding": [{"system": system, "code": code, "display": display}], "text": display}],
            "subject": {"reference": f"Patient/{patient['id']}", "display": pname},
            "participant": [{
                "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                      "code": "PPRF", "display": "primary performer"}], "text": "primary performer"}],
                "period": dict(period),
                "individual": {"reference": f"Practitioner/{practitioner['id']}",
                               "display": f"Dr. {dr['given'][0]} {dr['family']}"},
            }],
            "period": period,
            "serviceProvider": {"reference": f"Organization/{org['id']}", "display": org["name"]},
        }
        if self.seeds.reasons and r.random() < 0.4:
            e["reasonCode"] = copy.deepcopy(r.choice(self.seeds.reasons))
        s = self.summary
        s.enc_ids.append(eid)
        s.enc_patient.append(p_index)
        s.enc_status.append(status)
        s.enc_class.append(cls)
        s.enc_day.append(start.date().isoformat())
        s.enc_mr.append(0)
        s.enc_careplans.append(0)
        return e, start

    def questionnaire_response(self, patient: dict, enc: dict, start: dt.datetime) -> dict:
        r = self.rnd
        url, version, title, n_items = r.choice(_QUESTIONNAIRES)
        items = []
        for n in range(1, n_items + 1):
            if title in ("PHQ-9", "GAD-7"):
                answer = {"valueInteger": r.randint(0, 3)}
            elif n % 3 == 0:
                answer = {"valueBoolean": r.random() < 0.5}
            else:
                answer = {"valueString": r.choice(["none", "mild", "moderate", "severe", "since last week",
                                                   "after meals", "in the morning"])}
            items.append({"linkId": f"q{n}", "text": f"{title} question {n}", "answer": [answer]})
        return {
            "resourceType": "QuestionnaireResponse",
            "id": self._id(),
            "questionnaire": f"{url}|{version}",
            "status": "completed",
            "subject": {"reference": f"Patient/{patient['id']}"},
            "encounter": {"reference": f"Encounter/{enc['id']}"},
            "authored": _iso(start + dt.timedelta(minutes=r.randint(0, 9))),
            "author": {"reference": f"Patient/{patient['id']}"},
            "item": items,
        }

    def medication_request(self, patient: dict, p_index: int, enc: dict, e_index: int, start: dt.datetime) -> dict:
        r = self.rnd
        category, med, dosage = r.choice(self.seeds.medications)
        u = r.random()
        status = "active" if u < 0.3 else "completed" if u < 0.8 else "stopped" if u < 0.95 else "cancelled"
        individual = enc["participant"][0]["individual"]
        m = {
            "resourceType": "MedicationRequest",
            "id": self._id(),
            "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-medicationrequest"]},
            "status": status,
            "intent": "order",
            "category": copy.deepcopy(category),
            "medicationCodeableConcept": copy.deepcopy(med),
            "subject": {"reference": f"Patient/{patient['id']}"},
            "encounter": {"reference": f"Encounter/{enc['id']}"},
            "authoredOn": _iso(start + dt.timedelta(minutes=r.randint(1, 20))),
            "requester": dict(individual),
        }
        if dosage:
            m["dosageInstruction"] = copy.deepcopy(dosage)
        self.summary.patient_mr[p_index] += 1
        self.summary.enc_mr[e_index] += 1
        return m

    def observation(self, patient: dict, p_index: int, enc: dict, start: dt.datetime) -> dict:
        r = self.rnd
        (_, code, display, unit, ucum, low, high, decimals, category), = r.choices(_OBS_KINDS, self.obs_weights)
        when = _iso(start + dt.timedelta(minutes=r.randint(0, 9), seconds=r.randint(0, 59)))
        o: dict = {
            "resourceType": "Observation",
            "id": self._id(),
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": category,
                                      "display": category.replace("-", " ").title()}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{patient['id']}"},
            "encounter": {"reference": f"Encounter/{enc['id']}"},
            "effectiveDateTime": when,
            "issued": when.replace("Z", ".000Z"),
        }
        if code == "59408-5":
            o["code"]["coding"].append({"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"})
        if code == "85354-9":
            o["component"] = [
                {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}],
                          "text": "Systolic blood pressure"},
                 "valueQuantity": {"value": r.randint(95, 170), "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}],
                          "text": "Diastolic blood pressure"},
                 "valueQuantity": {"value": r.randint(55, 110), "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}},
            ]
        else:
            value = round(r.uniform(low, high), decimals)
            o["valueQuantity"] = {"value": int(value) if decimals == 0 else value, "unit": unit, "system": UCUM,
                                  "code": ucum}
        s = self.summary
        s.patient_obs[p_index] += 1
        codes = s.patient_codes[p_index]
        if code not in codes:
            codes.append(code)
        s.obs_by_code[code] += 1
        return o

    def care_plan(self, patient: dict, enc: dict, e_index: int, start: dt.datetime) -> dict:
        r = self.rnd
        code, display = r.choice(_CAREPLAN_ACTIVITIES)
        self.summary.enc_careplans[e_index] += 1
        return {
            "resourceType": "CarePlan",
            "id": self._id(),
            "status": r.choice(["active", "active", "completed"]),
            "intent": "plan",
            "category": [{"coding": [{"system": SNOMED, "code": "734163000", "display": "Care plan"}]}],
            "subject": {"reference": f"Patient/{patient['id']}"},
            "encounter": {"reference": f"Encounter/{enc['id']}"},
            "period": {"start": _iso(start)},
            "activity": [{"detail": {"code": {"coding": [{"system": SNOMED, "code": code, "display": display}],
                                              "text": display},
                                     "status": "in-progress"}}],
        }

    # -- the stream -------------------------------------------------------------------------------

    def _full(self) -> bool:
        """The stream is complete: checked before making each resource, so that the Summary only
        describes resources that were actually emitted."""
        return self.summary.resources >= self.total

    def _all(self) -> Iterator[dict]:
        r = self.rnd
        patients_expected = max(1, round(self.total / 43.1))
        orgs = [self.organization() for _ in range(max(1, round(patients_expected / 200)))]
        practitioners = [self.practitioner() for _ in range(max(2, round(patients_expected / 20)))]
        for resource in orgs + practitioners:
            if self._full():
                return
            yield resource
        while not self._full():
            p_index = len(self.summary.patient_ids)
            org = r.choice(orgs)
            gp = r.choice(practitioners)
            yield (patient := self.patient(org, gp))
            n_enc = min(60, max(1, round(r.expovariate(1 / 7.5) + 0.5)))
            encs = []
            for _ in range(n_enc):
                if self._full():
                    return
                doctor = gp if r.random() < 0.5 else r.choice(practitioners)
                e, start = self.encounter(patient, p_index, doctor, org)
                encs.append((e, start, len(self.summary.enc_ids) - 1))
                yield e
            done = [x for x in encs if x[0]["status"] != "cancelled"] or encs
            for _ in range(self._around(n_enc * 4 / 8)):
                if self._full():
                    return
                e, start, _ = r.choice(done)
                yield self.questionnaire_response(patient, e, start)
            for _ in range(self._around(n_enc * 4 / 8)):
                if self._full():
                    return
                e, start, ei = r.choice(done)
                yield self.medication_request(patient, p_index, e, ei, start)
            for _ in range(self._around(n_enc * 25 / 8)):
                if self._full():
                    return
                e, start, _ = r.choice(done)
                yield self.observation(patient, p_index, e, start)
            for e, start, ei in encs:
                if e["class"]["code"] == "VR" and e["status"] == "finished" and r.random() < 0.25:
                    if self._full():
                        return
                    yield self.care_plan(patient, e, ei, start)

    def _around(self, mean: float) -> int:
        """mean, randomly rounded so the long-run ratio is exact."""
        whole = int(mean)
        return whole + (1 if self.rnd.random() < mean - whole else 0)

    def __iter__(self) -> Iterator[dict]:
        for resource in self._all():
            self.summary.resources += 1
            self.summary.by_type[resource["resourceType"]] += 1
            yield resource


def validate_sample(samples: dict[str, list[dict]]) -> list[str]:
    """Validate the sampled resources with the server's structural validator; returns the problems."""
    from fhir_server.validation.structure import StructureError, validate_resource

    problems = []
    for rtype, resources in samples.items():
        for res in resources:
            try:
                validate_resource(res, rtype)
            except StructureError as exc:
                problems.append(f"{rtype}/{res.get('id')}: {exc}")
    return problems


class Sampler:
    """Keeps the first `first` resources of each type and then every `every`-th (deterministic)."""

    def __init__(self, first: int = 5, every: int = 5000, cap: int = 40):
        self.first, self.every, self.cap = first, every, cap
        self.seen: Counter = Counter()
        self.kept: dict[str, list[dict]] = defaultdict(list)

    def offer(self, resource: dict) -> None:
        t = resource["resourceType"]
        n = self.seen[t]
        self.seen[t] += 1
        if (n < self.first or n % self.every == 0) and len(self.kept[t]) < self.cap:
            self.kept[t].append(resource)


def write_dataset(total: int, out: Path, seed: int = 1, anchor: str = DEFAULT_ANCHOR, validate: bool = True,
                  progress: bool = True) -> Summary:
    """Write the NDJSON stream to `out` and its Summary to `out` + '.summary.json' (written last, so its
    presence says the data file is complete)."""
    gen = Generator(total, seed, anchor)
    sampler = Sampler()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    started = time.perf_counter()
    with open(tmp, "wb") as f:
        for n, resource in enumerate(gen, 1):
            sampler.offer(resource)
            f.write(orjson.dumps(resource))
            f.write(b"\n")
            if progress and n % 100_000 == 0:
                print(f"  generated {n:,} / {total:,} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if validate:
        problems = validate_sample(sampler.kept)
        checked = sum(len(v) for v in sampler.kept.values())
        if problems:
            raise SystemExit("generated resources are not valid FHIR R4:\n  " + "\n  ".join(problems[:20]))
        if progress:
            print(f"  validated a sample of {checked} resources ({', '.join(f'{t} {len(v)}' for t, v in sorted(sampler.kept.items()))}): ok",
                  file=sys.stderr)
    tmp.rename(out)
    summary_path = out.with_name(out.name + ".summary.json")
    summary_path.write_bytes(gen.summary.to_json())
    return gen.summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--anchor", default=DEFAULT_ANCHOR, help="'now' for the data (ISO dateTime with offset)")
    ap.add_argument("--out", type=Path, required=True, help="NDJSON file to write (summary beside it)")
    ap.add_argument("--no-validate", action="store_true")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    summary = write_dataset(args.resources, args.out, args.seed, args.anchor, validate=not args.no_validate)
    took = time.perf_counter() - started
    print(f"{summary.resources:,} resources in {took:.1f} s ({summary.resources / took:,.0f}/s) -> {args.out}")
    print("  " + ", ".join(f"{t} {n:,}" for t, n in summary.by_type.most_common()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())

"""FHIR -> NCPDP SCRIPT NewRx (2017071), research/ncpdp.md sections 3, 4 and 11.

Two steps. `map_prescription` reads a PrescriptionContext into plain SCRIPT values, deciding every
FHIR -> SCRIPT mapping in one place and collecting every reason the message cannot be sent
(refusals.py); only when there is none does `build_newrx` write XML, through lxml, in the element
order of the published samples (ncpdp.md 5.4). CancelRx and RxRenewalResponse repeat NewRx's
Patient, Pharmacy, Prescriber and MedicationPrescribed, so they reuse the writers below.

Mapping choices where ncpdp.md leaves options are marked [choice] in the comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from lxml import etree

from . import codes
from .envelope import DEFAULT_VERSION, Header, build_message, new_message_id, sub
from .refusals import Refusals, is_dea_number, is_ncpdpid, is_npi
from .resources import (PrescriptionContext, identifier_value, identifier_with_type, pick_address, pick_name,
                        pick_telecom)
from .validate import validate_message

SUPPORTED_VERSIONS = ("2017071",)  # one writer per version; 2023011 restructures names and drugs

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ICD10 = re.compile(r"[A-Z][0-9][0-9A-Z]{1,5}")
_STATE = re.compile(r"[A-Z]{2}")
_ZIP = re.compile(r"\d{5}(\d{4})?")
_RXCUI = re.compile(r"\d{1,8}")


# --- the values a message carries ----------------------------------------------------------------

@dataclass(frozen=True)
class Name:
    last: str
    first: str
    middle: str | None = None
    suffix: str | None = None
    prefix: str | None = None


@dataclass(frozen=True)
class Address:
    line1: str
    line2: str | None
    city: str
    state: str
    postal_code: str
    country_code: str = "US"


@dataclass(frozen=True)
class Phones:
    primary: str | None = None
    extension: str | None = None
    email: str | None = None
    fax: str | None = None


@dataclass(frozen=True)
class PatientValues:
    name: Name
    gender: str
    birth_date: str
    medical_record_number: str | None
    address: Address | None
    phones: Phones


@dataclass(frozen=True)
class PharmacyValues:
    ncpdpid: str
    npi: str | None
    business_name: str
    address: Address | None
    phones: Phones


@dataclass(frozen=True)
class PrescriberValues:
    npi: str
    dea_number: str | None
    state_license: str | None
    specialty: str | None
    name: Name
    address: Address
    phones: Phones


@dataclass(frozen=True)
class Strength:
    value: str
    unit_code: str
    form_code: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    code: str  # ICD-10-CM without the dot
    description: str | None


@dataclass(frozen=True)
class MedicationValues:
    description: str
    rxcui: str
    drug_db_qualifier: str
    ndc: str | None
    strength: Strength | None
    dea_schedule: str | None
    quantity: str
    quantity_unit: str
    days_supply: int
    written_date: str
    substitutions: str
    refills: int
    diagnoses: tuple[Diagnosis, ...]
    note: str | None
    sig: str
    other_dates: tuple[tuple[str, str], ...] = ()  # (OtherMedicationDateQualifier, date)


@dataclass(frozen=True)
class Prescription:
    order_number: str  # Header/PrescriberOrderNumber
    patient: PatientValues
    pharmacy: PharmacyValues
    prescriber: PrescriberValues
    medication: MedicationValues


# --- FHIR context -> values ------------------------------------------------------------------------

def map_prescription(ctx: PrescriptionContext, refusals: Refusals, *, prescribing_rules: bool = True,
                     refills: int | None = None) -> Prescription | None:
    """The SCRIPT values of one prescription, or None with `refusals` listing every problem.

    `prescribing_rules` adds the rules for a fillable prescription (controlled substances: DEA
    number, refill limits); a CancelRx or a denial carries the same data but fills nothing.
    `refills` overrides numberOfRepeatsAllowed (a renewal approval's granted refills)."""
    mr = ctx.medication_request
    order_number = _order_number(mr, refusals)
    patient = _patient(ctx, refusals)
    pharmacy = _pharmacy(ctx, refusals)
    prescriber = _prescriber(ctx, refusals)
    medication, schedule, granted_refills = _medication(ctx, refusals, refills)
    dea = _controlled_substance_rules(ctx, schedule, granted_refills, refusals, prescribing_rules)
    if prescriber is not None:
        prescriber = replace(prescriber, dea_number=dea)
    if refusals.issues:
        return None
    assert order_number and patient and pharmacy and prescriber and medication
    return Prescription(order_number, patient, pharmacy, prescriber, medication)


def _order_number(mr: dict, refusals: Refusals) -> str | None:
    """MedicationRequest.identifier is the R4 spec's own map to PrescriberOrderNumber; the official
    one first, then the first, then the resource id [choice: ncpdp.md 3 and 11 step 3]."""
    identifiers = [i for i in mr.get("identifier") or [] if isinstance(i, dict) and isinstance(i.get("value"), str)
                   and i["value"].strip()]
    identifiers.sort(key=lambda i: i.get("use") != "official")
    for candidate in [i["value"].strip() for i in identifiers] + [mr.get("id")]:
        if isinstance(candidate, str) and 0 < len(candidate) <= codes.MAX_ORDER_NUMBER and candidate.isprintable():
            return candidate
    refusals.add("MedicationRequest.identifier",
                 f"a prescriber order number of at most {codes.MAX_ORDER_NUMBER} characters is required "
                 "(the MedicationRequest's identifier, or failing that its id)")
    return None


def _name(name: dict | None, path: str, who: str, refusals: Refusals) -> Name | None:
    if name is None:
        refusals.add(path, f"{who} has no current name")
        return None
    given = [g for g in name.get("given") or [] if isinstance(g, str) and g.strip()]
    last = refusals.text(name.get("family"), f"{path}.family", f"{who}'s family name",
                         max_length=codes.MAX_NAME_PART, required=True)
    first = refusals.text(given[0] if given else None, f"{path}.given", f"{who}'s given name",
                          max_length=codes.MAX_NAME_PART, required=True)
    middle = refusals.text(" ".join(g.strip() for g in given[1:]) or None, f"{path}.given", f"{who}'s middle name",
                           max_length=codes.MAX_NAME_PART)
    suffix = refusals.text((name.get("suffix") or [None])[0], f"{path}.suffix", f"{who}'s name suffix",
                           max_length=codes.MAX_NAME_PART)
    prefix = refusals.text((name.get("prefix") or [None])[0], f"{path}.prefix", f"{who}'s name prefix",
                           max_length=codes.MAX_NAME_PART)
    if last is None or first is None:
        return None
    return Name(last, first, middle, suffix, prefix)


def _address(address: dict | None, path: str, who: str, refusals: Refusals, *, required: bool) -> Address | None:
    """A US street address. An optional one that is incomplete or not US-shaped is left out
    [choice]; a required one is refused element by element."""
    if address is None:
        if required:
            refusals.add(path, f"{who}'s address is required for this message and is missing")
        return None
    probe = Refusals(refusals.message_type) if not required else refusals
    before = len(probe.issues)
    lines = [line.strip() for line in address.get("line") or [] if isinstance(line, str) and line.strip()]
    line1 = probe.text(lines[0] if lines else None, f"{path}.line", f"{who}'s street address",
                       max_length=codes.MAX_ADDRESS_LINE, required=True)
    line2 = probe.text(" ".join(lines[1:]) or None, f"{path}.line", f"{who}'s second address line",
                       max_length=codes.MAX_ADDRESS_LINE)
    city = probe.text(address.get("city"), f"{path}.city", f"{who}'s city", max_length=codes.MAX_CITY, required=True)
    state = probe.text(address.get("state"), f"{path}.state", f"{who}'s state", required=True)
    if state is not None and not _STATE.fullmatch(state.upper()):
        probe.add(f"{path}.state", f"{who}'s state must be a two-letter USPS code")
        state = None
    postal = probe.text(address.get("postalCode"), f"{path}.postalCode", f"{who}'s ZIP code", required=True)
    if postal is not None:
        postal = postal.replace("-", "").replace(" ", "")
        if not _ZIP.fullmatch(postal):
            probe.add(f"{path}.postalCode", f"{who}'s ZIP code must be 5 or 9 digits")
            postal = None
    country = (address.get("country") or "US").strip().upper()
    if country not in ("US", "USA", "UNITED STATES"):
        probe.add(f"{path}.country", f"{who}'s address must be in the United States")
    if len(probe.issues) > before or not (line1 and city and state and postal):
        return None
    return Address(line1, line2, city, state.upper(), postal, "US")


def _phone_number(value: str | None) -> tuple[str | None, str | None]:
    """(10 digits, extension) of a US phone number written any common way; (None, None) if not one."""
    if not value:
        return None, None
    text = value.lower().replace("tel:", "")
    extension = None
    for marker in ("ext.", "ext", "x"):
        if marker in text:
            text, _, extension = text.partition(marker)
            extension = "".join(ch for ch in extension if ch.isdigit()) or None
            break
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return (digits, extension) if len(digits) == 10 else (None, None)


def _patient(ctx: PrescriptionContext, refusals: Refusals) -> PatientValues | None:
    patient = ctx.patient
    if patient is None:
        refusals.add("MedicationRequest.subject", "the subject must be a Patient this server can read")
        return None
    name = _name(pick_name(patient.get("name")), "Patient.name", "the patient", refusals)
    gender = codes.GENDER.get(patient.get("gender"))  # type: ignore[arg-type]
    if gender is None:
        refusals.add("Patient.gender", f"the patient's administrative gender is required for a {refusals.message_type}")
    birth_date = patient.get("birthDate")
    if not isinstance(birth_date, str) or not _DATE.fullmatch(birth_date):
        refusals.add("Patient.birthDate", "the patient's full date of birth (year, month and day) is required")
        birth_date = None
    mrn = refusals.text(identifier_with_type(patient, codes.V2_IDENTIFIER_TYPE, ("MR",)), "Patient.identifier",
                        "the patient's medical record number", max_length=codes.MAX_ORDER_NUMBER)
    address = _address(pick_address(patient.get("address"), "home"), "Patient.address", "the patient", refusals,
                       required=False)
    number, extension = _phone_number(pick_telecom(patient, system="phone", preferred_use="home"))
    if name is None or gender is None or birth_date is None:
        return None
    return PatientValues(name, gender, birth_date, mrn, address, Phones(number, extension))


def _pharmacy(ctx: PrescriptionContext, refusals: Refusals) -> PharmacyValues | None:
    org = ctx.pharmacy
    if org is None:
        refusals.add("MedicationRequest.dispenseRequest.performer",
                     "the pharmacy is required: an Organization identified by its NCPDP Provider ID")
        return None
    ncpdpid = identifier_value(org, codes.NCPDP_PROVIDER_ID)
    if ncpdpid is None:
        refusals.add("Organization.identifier", "the pharmacy has no NCPDP Provider ID "
                     "(identifier system http://terminology.hl7.org/NamingSystem/NCPDPProviderIdentificationNumber)")
    elif not is_ncpdpid(ncpdpid):
        refusals.add("Organization.identifier", "the pharmacy's NCPDP Provider ID must be 7 digits")
        ncpdpid = None
    npi = identifier_value(org, codes.NPI)
    if npi is not None and not is_npi(npi):
        refusals.add("Organization.identifier", "the pharmacy's NPI is not a valid NPI (10 digits with a check digit)")
    business_name = refusals.text(org.get("name"), "Organization.name", "the pharmacy's name",
                                  max_length=codes.MAX_BUSINESS_NAME, required=True)
    address = _address(pick_address(org.get("address"), "work"), "Organization.address", "the pharmacy", refusals,
                       required=False)
    number, extension = _phone_number(pick_telecom(org, system="phone", preferred_use="work"))
    fax, _ = _phone_number(pick_telecom(org, system="fax", preferred_use="work"))
    if ncpdpid is None or business_name is None:
        return None
    return PharmacyValues(ncpdpid, npi, business_name, address, Phones(number, extension, fax=fax))


def _prescriber(ctx: PrescriptionContext, refusals: Refusals) -> PrescriberValues | None:
    role, practitioner = ctx.practitioner_role, ctx.practitioner
    if practitioner is None:
        if role is not None:
            refusals.add("PractitionerRole.practitioner", "the requester's PractitionerRole must name a Practitioner "
                         "this server can read")
        else:
            refusals.add("MedicationRequest.requester", "the requester must be a Practitioner, or a PractitionerRole "
                         "with a practitioner, that this server can read")
        return None
    npi = identifier_value(practitioner, codes.NPI) or identifier_value(role, codes.NPI)
    if npi is None:
        refusals.add("Practitioner.identifier", "the prescriber has no NPI (identifier system http://hl7.org/fhir/sid/us-npi)")
    elif not is_npi(npi):
        refusals.add("Practitioner.identifier", "the prescriber's NPI is not a valid NPI (10 digits with a check digit)")
        npi = None
    # The DEA number is read, checked and set by _controlled_substance_rules: a PractitionerRole's
    # first (registrations are per state and location) [choice], and only for a controlled drug.
    dea = None
    licence = (identifier_with_type(role, codes.V2_IDENTIFIER_TYPE, codes.STATE_LICENSE_TYPES)
               or identifier_with_type(practitioner, codes.V2_IDENTIFIER_TYPE, codes.STATE_LICENSE_TYPES)
               or _qualification_identifier(practitioner))
    licence = refusals.text(licence, "Practitioner.identifier", "the prescriber's state licence number",
                            max_length=codes.MAX_ORDER_NUMBER)
    specialty = _nucc_specialty(role)
    name = _name(pick_name(practitioner.get("name")), "Practitioner.name", "the prescriber", refusals)
    address = _address(pick_address(practitioner.get("address"), "work"), "Practitioner.address", "the prescriber",
                       refusals, required=True)
    number, extension = _phone_number(pick_telecom(role, practitioner, system="phone", preferred_use="work"))
    if number is None:
        refusals.add("Practitioner.telecom", "the prescriber's phone number (a 10-digit US number) is required")
    fax, _ = _phone_number(pick_telecom(role, practitioner, system="fax", preferred_use="work"))
    email = refusals.text(pick_telecom(role, practitioner, system="email", preferred_use="work"),
                          "Practitioner.telecom", "the prescriber's email address", max_length=80)
    if npi is None or name is None or address is None or number is None:
        return None
    return PrescriberValues(npi, dea, licence, specialty, name, address, Phones(number, extension, email, fax))


def _qualification_identifier(practitioner: dict) -> str | None:
    for qualification in practitioner.get("qualification") or []:
        for identifier in qualification.get("identifier") or []:
            if isinstance(identifier.get("value"), str) and identifier["value"].strip():
                return identifier["value"].strip()
    return None


def _nucc_specialty(role: dict | None) -> str | None:
    for specialty in (role or {}).get("specialty") or []:
        for coding in specialty.get("coding") or []:
            code = coding.get("code")
            if coding.get("system") == codes.NUCC_TAXONOMY and isinstance(code, str) and re.fullmatch(r"[0-9A-Z]{9}X", code):
                return code
    return None


def _medication(ctx: PrescriptionContext, refusals: Refusals, refills_override: int | None
                ) -> tuple[MedicationValues | None, str | None, int | None]:
    """(MedicationPrescribed values or None, DEA schedule, refills): the last two also when the
    rest is refused, so the controlled-substance rules still add their problems to the list."""
    mr = ctx.medication_request
    concept, base = _drug_concept(ctx, refusals)
    drug, schedule = _drug_codes(ctx, concept, base, refusals) if concept is not None else (None, None)
    dispense = mr.get("dispenseRequest") or {}
    quantity, unit = _quantity(dispense.get("quantity"), refusals)
    days_supply = _days_supply(dispense.get("expectedSupplyDuration"), refusals)
    written_date = mr.get("authoredOn")
    # WrittenDate is the prescriber's local date: the date as written in authoredOn, before any
    # conversion to UTC [choice: Surescripts asks for local dates, ncpdp.md 3].
    if not isinstance(written_date, str) or not _DATE.match(written_date):
        refusals.add("MedicationRequest.authoredOn", "the date the prescription was written (authoredOn) is required")
        written_date = None
    else:
        written_date = written_date[:10]
    substitutions = _substitutions(mr.get("substitution"))
    refills = refills_override if refills_override is not None else dispense.get("numberOfRepeatsAllowed", 0)
    if not isinstance(refills, int) or isinstance(refills, bool) or refills < 0:
        refusals.add("MedicationRequest.dispenseRequest.numberOfRepeatsAllowed", "refills must be a whole number, 0 or more")
        refills = None
    sig = _sig(mr.get("dosageInstruction"), refusals)
    notes = [n.get("text") for n in mr.get("note") or [] if isinstance(n, dict) and isinstance(n.get("text"), str)]
    note = refusals.text("; ".join(t.strip() for t in notes if t.strip()) or None, "MedicationRequest.note",
                         "the note to the pharmacist", max_length=codes.MAX_NOTE)
    diagnoses = _diagnoses(ctx, refusals)
    other_dates = _validity_dates(dispense.get("validityPeriod"), refusals)
    if None in (drug, quantity, unit, days_supply, written_date, refills, sig):
        return None, schedule, refills
    description, rxcui, qualifier, ndc, strength = drug  # type: ignore[misc]
    values = MedicationValues(description, rxcui, qualifier, ndc, strength, schedule, quantity, unit,  # type: ignore[arg-type]
                              days_supply, written_date, substitutions, refills, diagnoses, note, sig,  # type: ignore[arg-type]
                              other_dates)
    return values, schedule, refills


def _validity_dates(period: object, refusals: Refusals) -> tuple[tuple[str, str], ...]:
    """dispenseRequest.validityPeriod -> OtherMedicationDate EffectiveDate (do not fill before) and
    ExpirationDate (ncpdp.md 4.4; VAX maps 10.6's EffectiveDate/ExpirationDate there)."""
    dates = []
    for key, qualifier in (("start", "EffectiveDate"), ("end", "ExpirationDate")):
        value = (period or {}).get(key) if isinstance(period, dict) else None
        if value is None:
            continue
        if not isinstance(value, str) or not _DATE.match(value):
            refusals.add(f"MedicationRequest.dispenseRequest.validityPeriod.{key}", "the validity period needs full dates")
            continue
        dates.append((qualifier, value[:10]))
    return tuple(dates)


def _drug_concept(ctx: PrescriptionContext, refusals: Refusals) -> tuple[dict | None, str]:
    mr = ctx.medication_request
    if isinstance(mr.get("medicationCodeableConcept"), dict):
        return mr["medicationCodeableConcept"], "MedicationRequest.medicationCodeableConcept"
    if "medicationReference" in mr:
        if ctx.medication is None:
            refusals.add("MedicationRequest.medicationReference", "the medication must be a Medication this server can read")
            return None, ""
        code = ctx.medication.get("code")
        if not isinstance(code, dict):
            kind = "a compounded medication" if len(ctx.medication.get("ingredient") or []) > 1 else "a medication"
            refusals.add("Medication.code", f"{kind} without an RxNorm code cannot be sent electronically")
            return None, ""
        return code, "Medication.code"
    refusals.add("MedicationRequest.medication[x]", "the drug is required (medicationCodeableConcept or medicationReference)")
    return None, ""


def _drug_codes(ctx: PrescriptionContext, concept: dict, base: str, refusals: Refusals):
    """((DrugDescription, RxCUI, DrugDBCode qualifier, NDC, Strength) or None, DEASchedule)."""
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    rxnorm = next((c for c in codings if c.get("system") == codes.RXNORM and isinstance(c.get("code"), str)), None)
    problems_before = len(refusals.issues)
    qualifier = None
    if rxnorm is None:
        what = "compounded medications and free-text drugs" if ctx.medication and len(ctx.medication.get("ingredient") or []) > 1 \
            else "free-text drugs"
        refusals.add(f"{base}.coding", f"the drug must be coded in RxNorm (system {codes.RXNORM}); {what} cannot be sent")
    elif not _RXCUI.fullmatch(rxnorm["code"].strip()):
        refusals.add(f"{base}.coding", "the RxNorm code must be an RxCUI (digits only)")
    else:
        tty = _stated_tty(rxnorm) or codes.rxnorm_tty(rxnorm["code"].strip(), rxnorm.get("display") or concept.get("text"))
        qualifier = codes.DRUG_DB_QUALIFIER_BY_TTY.get(tty or "")
        if qualifier is None:
            refusals.add(f"{base}.coding", "the RxNorm concept must be a prescribable drug "
                         "(term type SCD, SBD, GPCK or BPCK), not an ingredient or a brand name")
    # The prescriber's own wording first, else the RxNorm name (DV) [choice].
    description = refusals.text(concept.get("text") or (rxnorm or {}).get("display"), f"{base}.text",
                                "the drug description (code text or RxNorm display)",
                                max_length=codes.MAX_DRUG_DESCRIPTION, required=True)
    ndc = None
    ndc_coding = next((c for c in codings if c.get("system") == codes.NDC and isinstance(c.get("code"), str)), None)
    if ndc_coding is not None:
        ndc = normalise_ndc(ndc_coding["code"])
        if ndc is None:
            refusals.add(f"{base}.coding", "the NDC must be an 11-digit NDC or a hyphenated 10-digit one (4-4-2, 5-3-2, 5-4-1)")
    schedule = _dea_schedule(ctx, rxnorm["code"].strip() if rxnorm else None, refusals)
    if len(refusals.issues) > problems_before or description is None or rxnorm is None:
        return None, schedule
    return (description, rxnorm["code"].strip(), qualifier, ndc, _strength(ctx.medication)), schedule


def _stated_tty(coding: dict) -> str | None:
    for extension in coding.get("extension") or []:
        if extension.get("url") == codes.RXNORM_TTY_EXTENSION and isinstance(extension.get("valueCode"), str):
            return extension["valueCode"].strip().upper()
    return None


def normalise_ndc(value: str) -> str | None:
    """The 11-digit 5-4-2 form SCRIPT wants (NISTS): hyphenated 10-digit NDCs are zero-padded in the
    segment that is short [K: the usual padding rule]; an unhyphenated 10-digit NDC is ambiguous."""
    text = value.strip()
    parts = text.split("-")
    if len(parts) == 1:
        return text if re.fullmatch(r"\d{11}", text) else None
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    labeler, product, package = parts
    shape = (len(labeler), len(product), len(package))
    if shape == (5, 4, 2):
        return text.replace("-", "")
    if shape == (4, 4, 2):
        return "0" + labeler + product + package
    if shape == (5, 3, 2):
        return labeler + "0" + product + package
    if shape == (5, 4, 1):
        return labeler + product + "0" + package
    return None


def _dea_schedule(ctx: PrescriptionContext, rxcui: str | None, refusals: Refusals) -> str | None:
    """The stated schedule (extension on the MedicationRequest, then the Medication), else the
    local RxCUI table; None when unknown, and then DEASchedule is left out [ncpdp.md 11 step 4]."""
    for resource, path in ((ctx.medication_request, "MedicationRequest"), (ctx.medication, "Medication")):
        for extension in (resource or {}).get("extension") or []:
            if extension.get("url") != codes.DEA_SCHEDULE_EXTENSION:
                continue
            value = next((extension[k] for k in ("valueCoding", "valueCode", "valueString") if k in extension), None)
            code = codes.dea_schedule_code(value)
            if code is None:
                refusals.add(f"{path}.extension", "the DEA schedule extension must hold a schedule I-V "
                             "(or the NCI DEASchedule code)")
            elif code == "C48672":
                refusals.add(f"{path}.extension", "a Schedule I substance cannot be prescribed")
            return code
    return codes.DEA_SCHEDULE_BY_RXCUI.get(rxcui or "")


def _strength(medication: dict | None) -> Strength | None:
    """DrugCoded/Strength from a single-ingredient Medication whose strength is an amount per unit
    of the dose form (5 mg per tablet). Concentrations (mg/mL) and unmapped units are left to the
    RxNorm code, which carries the strength anyway [choice]."""
    ingredients = (medication or {}).get("ingredient") or []
    if len(ingredients) != 1:
        return None
    ratio = ingredients[0].get("strength") or {}
    numerator, denominator = ratio.get("numerator") or {}, ratio.get("denominator")
    value, unit = numerator.get("value"), (numerator.get("code") or numerator.get("unit") or "")
    unit_code = codes.STRENGTH_UNIT_BY_UCUM.get(unit.strip().lower()) if isinstance(unit, str) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0 or unit_code is None:
        return None
    if denominator:
        per = str(denominator.get("code") or denominator.get("unit") or "").strip().lower()
        if denominator.get("value") != 1 or per in ("ml", "l", "g", "mg", "mcg", "ug", "[iu]"):
            return None
    form_code = None
    for coding in ((medication or {}).get("form") or {}).get("coding") or []:
        if coding.get("system") == codes.NCI_THESAURUS and re.fullmatch(r"C\d+", str(coding.get("code"))):
            form_code = coding["code"]
    return Strength(_decimal_text(value), unit_code, form_code)


def _decimal_text(value: int | float | Decimal) -> str:
    """30 -> "30", 8.50 -> "8.5": no exponent, no trailing zeros."""
    number = Decimal(str(value)).normalize()
    return format(number, "f")


def _quantity(quantity: object, refusals: Refusals) -> tuple[str | None, str | None]:
    path = "MedicationRequest.dispenseRequest.quantity"
    if not isinstance(quantity, dict) or quantity.get("value") is None:
        refusals.add(path, "the quantity to dispense (dispenseRequest.quantity with a value and unit) is required")
        return None, None
    value = quantity.get("value")
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        number = Decimal(0)
    if isinstance(value, bool) or not number.is_finite() or number <= 0:
        refusals.add(f"{path}.value", "the quantity to dispense must be a number greater than zero")
        value = None
    unit = codes.quantity_unit_code(quantity)
    if unit is None:
        refusals.add(f"{path}.code", "the quantity's unit has no NCPDP QuantityUnitOfMeasure code (tablet, capsule, mL, g, "
                     "patch ...); 'each' and 'unspecified' are not accepted by the networks")
    return (_decimal_text(number) if value is not None else None), unit


def _days_supply(duration: object, refusals: Refusals) -> int | None:
    path = "MedicationRequest.dispenseRequest.expectedSupplyDuration"
    if not isinstance(duration, dict) or duration.get("value") is None:
        refusals.add(path, "the days supply (dispenseRequest.expectedSupplyDuration) is required")
        return None
    unit = str(duration.get("code") or duration.get("unit") or "").strip().lower()
    factor = codes.DAYS_PER_UNIT.get(unit)
    try:
        days = Decimal(str(duration["value"])) * factor if factor else None
    except (InvalidOperation, ValueError):
        days = None
    if days is None or days != days.to_integral_value() or days <= 0:
        refusals.add(path, "the days supply must come out as a whole number of days greater than zero "
                     "(units d, wk or mo)")
        return None
    return int(days)


def _substitutions(substitution: object) -> str:
    """allowedBoolean false -> 1 (dispense as written); an allowedCodeableConcept of N (none) -> 1;
    anything else, or no substitution element, -> 0 (ncpdp.md 7.3)."""
    if not isinstance(substitution, dict):
        return codes.SUBSTITUTION_ALLOWED
    if substitution.get("allowedBoolean") is False:
        return codes.DISPENSE_AS_WRITTEN
    concept = substitution.get("allowedCodeableConcept") or {}
    if any(c.get("code") in codes.V3_NO_SUBSTITUTION for c in concept.get("coding") or []):
        return codes.DISPENSE_AS_WRITTEN
    return codes.SUBSTITUTION_ALLOWED


def _sig(dosages: object, refusals: Refusals) -> str | None:
    """SigText: every dosageInstruction's text, in order, joined with "; " [choice: DV sends only
    the first; dropping later ones would lose directions]. A dosage without text is refused
    rather than rendered from its structure."""
    if not isinstance(dosages, list) or not dosages:
        refusals.add("MedicationRequest.dosageInstruction", "directions for use (dosageInstruction.text) are required")
        return None
    ordered = sorted(enumerate(d for d in dosages if isinstance(d, dict)), key=lambda p: (p[1].get("sequence", 0), p[0]))
    texts = []
    for index, dosage in ordered:
        text = refusals.text(dosage.get("text"), f"MedicationRequest.dosageInstruction[{index}].text",
                             "the sig (directions for use)", required=True)
        if text:
            texts.append(text)
    if len(texts) != len(ordered):
        return None
    return refusals.text("; ".join(texts), "MedicationRequest.dosageInstruction.text", "the sig (directions for use)",
                         max_length=codes.MAX_SIG, required=True)


def _diagnoses(ctx: PrescriptionContext, refusals: Refusals) -> tuple[Diagnosis, ...]:
    """ICD-10-CM codes from reasonCode, then from the reasonReference Conditions, without the dot
    (NISTM, CYP); SCRIPT has a Primary and a Secondary slot, so a third is not sent."""
    found: list[Diagnosis] = []
    sources = [(c, "MedicationRequest.reasonCode") for c in ctx.medication_request.get("reasonCode") or []]
    sources += [(condition.get("code"), "Condition.code") for condition in ctx.conditions]
    for concept, path in sources:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("system") != codes.ICD10CM or not isinstance(coding.get("code"), str):
                continue
            code = coding["code"].strip().upper().replace(".", "")
            if not _ICD10.fullmatch(code):
                refusals.add(path, "an ICD-10-CM code is not in ICD-10-CM form (a letter, a digit, then up to 5 characters)")
                continue
            description = coding.get("display") if isinstance(coding.get("display"), str) else None
            description = refusals.text(description, path, "the diagnosis display", max_length=100)
            if all(d.code != code for d in found):
                found.append(Diagnosis(code, description))
    return tuple(found[:2])


def _controlled_substance_rules(ctx: PrescriptionContext, schedule: str | None, refills: int | None,
                                refusals: Refusals, prescribing_rules: bool) -> str | None:
    """ncpdp.md 4.5 item 7: a controlled substance needs the prescriber's DEA number; Schedule II
    has no refills, III-V at most 5 (OEMRH). Returns the DEA number to send: one goes out only
    with a controlled substance [choice: it is a registration for controlled substances, not a
    general identifier of the prescriber]."""
    if schedule is None or schedule == codes.DEA_SCHEDULE_UNSPECIFIED:
        return None
    roman = codes.DEA_SCHEDULE_CODES.get(schedule, "?")
    role, practitioner = ctx.practitioner_role, ctx.practitioner
    path = "PractitionerRole.identifier" if identifier_value(role, codes.DEA_NUMBER) else "Practitioner.identifier"
    dea = identifier_value(role, codes.DEA_NUMBER) or identifier_value(practitioner, codes.DEA_NUMBER)
    dea = dea.upper() if dea else None
    if dea is not None and not is_dea_number(dea):
        refusals.add(path, "the prescriber's DEA number is not valid (two letters, seven digits, check digit)")
        dea = None
    elif dea is None and prescribing_rules and practitioner is not None:
        refusals.add(path, f"a Schedule {roman} controlled substance needs the prescriber's DEA "
                     "number (identifier system http://terminology.hl7.org/NamingSystem/USDEANumber)")
    limit = codes.MAX_REFILLS_BY_SCHEDULE.get(schedule)
    if prescribing_rules and limit is not None and refills is not None and refills > limit:
        rule = "cannot have refills" if limit == 0 else f"can have at most {limit} refills"
        refusals.add("MedicationRequest.dispenseRequest.numberOfRepeatsAllowed",
                     f"a Schedule {roman} controlled substance {rule}")
    return dea


# --- values -> XML ------------------------------------------------------------------------------

def write_name(parent: etree._Element, name: Name) -> None:
    element = sub(parent, "Name")
    sub(element, "LastName", name.last)
    sub(element, "FirstName", name.first)
    for tag, value in (("MiddleName", name.middle), ("Suffix", name.suffix), ("Prefix", name.prefix)):
        if value:
            sub(element, tag, value)


def write_address(parent: etree._Element, address: Address | None) -> None:
    if address is None:
        return
    element = sub(parent, "Address")
    sub(element, "AddressLine1", address.line1)
    if address.line2:
        sub(element, "AddressLine2", address.line2)
    sub(element, "City", address.city)
    sub(element, "StateProvince", address.state)
    sub(element, "PostalCode", address.postal_code)
    sub(element, "CountryCode", address.country_code)


def write_communication_numbers(parent: etree._Element, phones: Phones) -> None:
    if not (phones.primary or phones.email or phones.fax):
        return
    element = sub(parent, "CommunicationNumbers")
    if phones.primary:
        primary = sub(element, "PrimaryTelephone")
        sub(primary, "Number", phones.primary)
        if phones.extension:
            sub(primary, "Extension", phones.extension)
    if phones.email:
        sub(element, "ElectronicMail", phones.email)
    if phones.fax:
        sub(sub(element, "Fax"), "Number", phones.fax)


def write_patient(parent: etree._Element, patient: PatientValues) -> None:
    human = sub(sub(parent, "Patient"), "HumanPatient")
    if patient.medical_record_number:
        sub(sub(human, "Identification"), "MedicalRecordIdentificationNumberEHR", patient.medical_record_number)
    write_name(human, patient.name)
    sub(human, "Gender", patient.gender)
    sub(sub(human, "DateOfBirth"), "Date", patient.birth_date)
    write_address(human, patient.address)
    write_communication_numbers(human, patient.phones)


def write_pharmacy(parent: etree._Element, pharmacy: PharmacyValues) -> None:
    element = sub(parent, "Pharmacy")
    identification = sub(element, "Identification")
    sub(identification, "NCPDPID", pharmacy.ncpdpid)
    if pharmacy.npi:
        sub(identification, "NPI", pharmacy.npi)
    sub(element, "BusinessName", pharmacy.business_name)
    write_address(element, pharmacy.address)
    write_communication_numbers(element, pharmacy.phones)


def write_prescriber(parent: etree._Element, prescriber: PrescriberValues) -> None:
    element = sub(sub(parent, "Prescriber"), "NonVeterinarian")
    identification = sub(element, "Identification")
    # Order as in the Surescripts-generated CYP sample: StateLicenseNumber, DEANumber, NPI.
    if prescriber.state_license:
        sub(identification, "StateLicenseNumber", prescriber.state_license)
    if prescriber.dea_number:
        sub(identification, "DEANumber", prescriber.dea_number)
    sub(identification, "NPI", prescriber.npi)
    if prescriber.specialty:
        sub(element, "Specialty", prescriber.specialty)
    write_name(element, prescriber.name)
    write_address(element, prescriber.address)
    write_communication_numbers(element, prescriber.phones)


def write_medication_prescribed(parent: etree._Element, medication: MedicationValues) -> None:
    element = sub(parent, "MedicationPrescribed")
    sub(element, "DrugDescription", medication.description)
    coded = sub(element, "DrugCoded")
    if medication.ndc:
        product = sub(coded, "ProductCode")
        sub(product, "Code", medication.ndc)
        sub(product, "Qualifier", codes.NDC_QUALIFIER)
    if medication.strength:
        strength = sub(coded, "Strength")
        sub(strength, "StrengthValue", medication.strength.value)
        if medication.strength.form_code:
            sub(sub(strength, "StrengthForm"), "Code", medication.strength.form_code)
        sub(sub(strength, "StrengthUnitOfMeasure"), "Code", medication.strength.unit_code)
    db_code = sub(coded, "DrugDBCode")
    sub(db_code, "Code", medication.rxcui)
    sub(db_code, "Qualifier", medication.drug_db_qualifier)
    if medication.dea_schedule:
        sub(sub(coded, "DEASchedule"), "Code", medication.dea_schedule)
    quantity = sub(element, "Quantity")
    sub(quantity, "Value", medication.quantity)
    sub(quantity, "CodeListQualifier", codes.QUANTITY_CODE_LIST_QUALIFIER)
    sub(sub(quantity, "QuantityUnitOfMeasure"), "Code", medication.quantity_unit)
    sub(element, "DaysSupply", str(medication.days_supply))
    sub(sub(element, "WrittenDate"), "Date", medication.written_date)
    sub(element, "Substitutions", medication.substitutions)
    sub(element, "NumberOfRefills", str(medication.refills))
    if medication.diagnoses:
        diagnosis = sub(element, "Diagnosis")
        sub(diagnosis, "ClinicalInformationQualifier", codes.CLINICAL_INFORMATION_QUALIFIER)
        for slot, entry in zip(("Primary", "Secondary"), medication.diagnoses):
            coded_diagnosis = sub(diagnosis, slot)
            sub(coded_diagnosis, "Code", entry.code)
            sub(coded_diagnosis, "Qualifier", codes.ICD10_QUALIFIER)
            if entry.description:
                sub(coded_diagnosis, "Description", entry.description)
    if medication.note:
        sub(element, "Note", medication.note)
    sub(sub(element, "Sig"), "SigText", medication.sig)
    for qualifier, date in medication.other_dates:
        other = sub(element, "OtherMedicationDate")
        sub(sub(other, "OtherMedicationDate"), "Date", date)
        sub(other, "OtherMedicationDateQualifier", qualifier)


def write_prescription(parent: etree._Element, prescription: Prescription) -> None:
    """Patient, Pharmacy, Prescriber, MedicationPrescribed: the order NewRx, CancelRx and
    RxRenewalResponse share (ncpdp.md 4)."""
    write_patient(parent, prescription.patient)
    write_pharmacy(parent, prescription.pharmacy)
    write_prescriber(parent, prescription.prescriber)
    write_medication_prescribed(parent, prescription.medication)


def check_version(version: str) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"SCRIPT version {version} has no writer (supported: {', '.join(SUPPORTED_VERSIONS)})")


def check_sender(sender_id: str) -> None:
    check_message_id(sender_id, "sender_id (this system's id at the gateway)")


def check_message_id(value: object, what: str) -> None:
    """An id that goes into the Header as is: 1-35 characters, no spaces (an..35, VAXSD)."""
    if not isinstance(value, str) or not re.fullmatch(r"\S{1,%d}" % codes.MAX_ORDER_NUMBER, value.strip()):
        raise ValueError(f"{what} must be 1-{codes.MAX_ORDER_NUMBER} characters without spaces")


def build_newrx(ctx: PrescriptionContext, *, sender_id: str, message_id: str | None = None,
                sent_time: datetime | None = None, version: str = DEFAULT_VERSION, validate: bool = True) -> bytes:
    """The NewRx for `ctx`, or UnprocessableEntity (422) listing every reason it cannot be sent.

    Deterministic when `message_id` and `sent_time` are given. With `validate` (the default) the
    message is checked against the project's structural schema before it is returned."""
    check_version(version)
    check_sender(sender_id)
    if message_id is not None:
        check_message_id(message_id, "message_id")
    refusals = Refusals("NewRx")
    prescription = map_prescription(ctx, refusals)
    refusals.raise_if_any()
    assert prescription is not None
    header = Header(to=prescription.pharmacy.ncpdpid, from_=sender_id.strip(), message_id=message_id or new_message_id(),
                    sent_time=sent_time or datetime.now(timezone.utc),
                    prescriber_order_number=prescription.order_number)
    body = etree.Element("NewRx")
    write_prescription(body, prescription)
    xml = build_message(header, body, version=version)
    if validate:
        validate_message(xml, version=version)
    return xml

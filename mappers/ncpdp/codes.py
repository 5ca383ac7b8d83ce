"""Code tables the FHIR -> SCRIPT mappers need, each with its source (research/ncpdp.md section 7).

Evidence tags follow ncpdp.md: [S] seen in a cited source, [K] background knowledge to be checked
against the licensed NCPDP material before go-live, [I] inferred. Refresh the NCI subsets from
NCI EVS (https://evs.nci.nih.gov/ftp1/NCPDP/About.html) when NCPDP sunsets codes.
"""

from __future__ import annotations

from profiles.canonical import CANONICAL_BASE

# --- FHIR systems (ncpdp.md 7.2, THO NamingSystem pages) ---------------------------------------
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
NCI_THESAURUS = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
NPI = "http://hl7.org/fhir/sid/us-npi"
# Both spellings are in use: the NamingSystem URI (the acceptance check) and the CodeSystem URI
# (THO, the PDMP IG). ncpdp.md 4.2: accept both.
NCPDP_PROVIDER_ID = frozenset({
    "http://terminology.hl7.org/NamingSystem/NCPDPProviderIdentificationNumber",
    "http://terminology.hl7.org/CodeSystem/NCPDPProviderIdentificationNumber",
})
# THO spells it USDEANumber; the PDMP IG uses usdeanumber (ncpdp.md 4.3): accept both.
DEA_NUMBER = frozenset({
    "http://terminology.hl7.org/NamingSystem/USDEANumber",
    "http://terminology.hl7.org/NamingSystem/usdeanumber",
})
V2_IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
STATE_LICENSE_TYPES = frozenset({"SL", "MD"})  # v2-0203: SL state licence, MD medical licence number
NUCC_TAXONOMY = "http://nucc.org/provider-taxonomy"
V3_SUBSTITUTION = "http://terminology.hl7.org/CodeSystem/v3-substanceAdminSubstitution"
V2_CONTROLLED_SCHEDULE = "http://terminology.hl7.org/CodeSystem/v2-0477"

# This project's own extensions. No core R4 element holds the DEA schedule or the RxNorm term
# type (ncpdp.md 7.2, 7.4), so a client may state them; the canonical base is the project's.
EXTENSION_BASE = f"{CANONICAL_BASE}/StructureDefinition"
DEA_SCHEDULE_EXTENSION = f"{EXTENSION_BASE}/dea-schedule"  # on Medication or MedicationRequest
RXNORM_TTY_EXTENSION = f"{EXTENSION_BASE}/rxnorm-tty"  # on the RxNorm Coding: valueCode SCD|SBD|GPCK|BPCK

# --- NCPDP QuantityUnitOfMeasure (NCI subset C89510), ncpdp.md 7.1 -----------------------------
# Active codes [S: DV code comments, SCHOLZ, EMP]. Terms are the NCI preferred names.
QUANTITY_UNIT_OF_MEASURE: dict[str, str] = {
    "C48542": "Tablet",
    "C48480": "Capsule",
    "C28254": "Milliliter",
    "C48155": "Gram",
    "C69071": "Disintegrating Tablet",
    "C64696": "Caplet",
    "C48524": "Patch",
    "C48539": "Suppository",
    "C48521": "Packet",
    "C48504": "Kit",
    "C53499": "Film",
    "C48506": "Lozenge",
    "C48548": "Troche",
    "C48538": "Strip",
    "C120263": "Lancet",
    "C120216": "Pen Needle",
    "C62412": "Applicator",
    "C54564": "Blister",
    "C69124": "Gum",
    "C48499": "Implant",
    "C62276": "Insert",
    "C65032": "Pad",
    "C62609": "Ring",
    "C53502": "Sponge",
    "C53503": "Stick",
    "C53504": "Swab",
    "C48552": "Wafer",
}
# Never sent (ncpdp.md 4.5 item 1): Surescripts restricts these two [S: MORX], and rejects sunset
# codes outside CancelRx since 1 Sep 2022 [S: WRS].
RESTRICTED_QUANTITY_UNITS = frozenset({"C38046", "C64933"})  # Unspecified, Each
SUNSET_QUANTITY_UNITS = frozenset({"C48473", "C78783", "C48474", "C48475"})  # ampule, applicatorful, bag, bar

# FHIR Quantity.code (UCUM, annotations included) or Quantity.unit -> QUOM code. Matched
# case-insensitively after trimming [I: ncpdp.md 7.1 proposes the keys]. Deliberately absent:
# "1"/{each} (Each is restricted), mg (a strength unit, not a dispensable quantity), L and oz.
_UNIT_WORDS: dict[str, tuple[str, ...]] = {
    "C48542": ("{tbl}", "{tablet}", "{tablets}", "{tab}", "tab", "tabs", "tablet", "tablets"),
    "C48480": ("{cap}", "{capsule}", "{capsules}", "cap", "caps", "capsule", "capsules"),
    "C28254": ("ml", "milliliter", "milliliters", "millilitre", "millilitres"),
    "C48155": ("g", "gm", "gram", "grams", "gramme", "grammes"),
    "C69071": ("{odt}", "odt", "disintegrating tablet", "disintegrating tablets", "orally disintegrating tablet"),
    "C64696": ("{caplet}", "caplet", "caplets"),
    "C48524": ("{patch}", "patch", "patches"),
    "C48539": ("{suppository}", "{supp}", "suppository", "suppositories"),
    "C48521": ("{packet}", "packet", "packets"),
    "C48504": ("{kit}", "kit", "kits"),
    "C53499": ("{film}", "film", "films"),
    "C48506": ("{lozenge}", "lozenge", "lozenges"),
    "C48548": ("{troche}", "troche", "troches"),
    "C48538": ("{strip}", "strip", "strips"),
    "C120263": ("{lancet}", "lancet", "lancets"),
    "C120216": ("{pen needle}", "pen needle", "pen needles"),
    "C62412": ("{applicator}", "applicator", "applicators"),
    "C54564": ("{blister}", "blister", "blisters"),
    "C69124": ("{gum}", "gum", "piece of gum"),
    "C48499": ("{implant}", "implant", "implants"),
    "C62276": ("{insert}", "insert", "inserts"),
    "C65032": ("{pad}", "pad", "pads"),
    "C62609": ("{ring}", "ring", "rings"),
    "C53502": ("{sponge}", "sponge", "sponges"),
    "C53503": ("{stick}", "stick", "sticks"),
    "C53504": ("{swab}", "swab", "swabs"),
    "C48552": ("{wafer}", "wafer", "wafers"),
}
QUANTITY_UNIT_BY_FHIR_UNIT: dict[str, str] = {
    word: code for code, words in _UNIT_WORDS.items() for word in words
}


def quantity_unit_code(quantity: dict) -> str | None:
    """The QUOM C-code for a FHIR Quantity, or None when it has no safe mapping.

    An NCI-coded quantity is taken as is when its code is active; otherwise Quantity.code, then
    Quantity.unit, is looked up. Restricted and sunset codes never come out of here."""
    system, code, unit = quantity.get("system"), quantity.get("code"), quantity.get("unit")
    if system == NCI_THESAURUS:
        return code if code in QUANTITY_UNIT_OF_MEASURE else None
    for key in (code, unit):
        if isinstance(key, str) and key.strip():
            found = QUANTITY_UNIT_BY_FHIR_UNIT.get(" ".join(key.strip().lower().split()))
            if found:
                return found
    return None


# --- StrengthUnitOfMeasure (NCI subset C89509) and dosage forms --------------------------------
# Only the codes seen in a source: mg [S: NISTM, VELA], and the two QUOM units that are also
# strength units. Strength is optional in NewRx, so an unmapped unit just leaves it out.
STRENGTH_UNIT_BY_UCUM: dict[str, str] = {"mg": "C28253", "g": "C48155", "ml": "C28254"}
STRENGTH_UNIT_CODES = frozenset(STRENGTH_UNIT_BY_UCUM.values())

# --- RxNorm term types -> DrugDBCode/Qualifier (ncpdp.md 7.2) ---------------------------------
# SCRIPT spells the pack types GPK/BPK where RxNorm says GPCK/BPCK [S: VAXSD]. Only these four
# are prescribable; IN, BN, SCDF, SBDF ... are not [K].
DRUG_DB_QUALIFIER_BY_TTY: dict[str, str] = {"SCD": "SCD", "SBD": "SBD", "GPCK": "GPK", "BPCK": "BPK"}
# RxCUI -> TTY for the drugs the fixtures and the acceptance check use. 197361 is the acceptance
# check's SCD (ncpdp.md 4.4); 314076, 311989, 861467, 197591 and 206905 appear with these names in
# the Synthea sample under shared/data; the others are [K] (not checked against RxNav, which the
# test machines cannot reach). Anything else falls back to the name rule in `rxnorm_tty`; a client
# can always state the TTY with RXNORM_TTY_EXTENSION.
RXNORM_TTY: dict[str, str] = {
    "197361": "SCD",  # amlodipine 5 MG Oral Tablet (the acceptance check)
    "314076": "SCD",  # lisinopril 10 MG Oral Tablet
    "311989": "SCD",  # Nitrofurantoin 5 MG/ML Oral Suspension
    "745679": "SCD",  # 200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler
    "106258": "SCD",  # triamcinolone acetonide 1 MG/ML Topical Cream
    "1049621": "SCD",  # oxycodone hydrochloride 5 MG Oral Tablet
    "861467": "SCD",  # Meperidine Hydrochloride 50 MG Oral Tablet
    "197591": "SCD",  # Diazepam 5 MG Oral Tablet
    "206905": "SBD",  # Ibuprofen 400 MG Oral Tablet [Ibu]
}


def rxnorm_tty(rxcui: str, name: str | None) -> str | None:
    """The RxNorm term type of a concept, from the local table or, failing that, from its name
    [I: ncpdp.md 7.2]: SBD/BPCK names end in a bracketed brand, pack names say "Pack", and a
    clinical drug name carries a strength (a digit). A name without one (an ingredient or a brand
    name alone) is not prescribable: None."""
    if rxcui in RXNORM_TTY:
        return RXNORM_TTY[rxcui]
    if not name:
        return None
    text = name.strip()
    branded = text.endswith("]")
    if "pack" in text.lower().split("[")[0].split():
        return "BPCK" if branded else "GPCK"
    if not any(ch.isdigit() for ch in text):
        return None
    return "SBD" if branded else "SCD"


# --- Substitutions (ncpdp.md 7.3) ------------------------------------------------------------
# 2017071 allows only 0 and 1 [S: VAXSD pattern, NISTS].
SUBSTITUTION_ALLOWED = "0"
DISPENSE_AS_WRITTEN = "1"
# v3 ActSubstanceAdminSubstitutionCode: only N (none) forbids substitution [I].
V3_NO_SUBSTITUTION = frozenset({"N"})

# --- DEA schedules (NCI subset C89507), ncpdp.md 7.4 [S: NCI archive, NISTS, CYP, VELA] ---------
DEA_SCHEDULE_UNSPECIFIED = "C38046"
DEA_SCHEDULE_CODES: dict[str, str] = {
    "C48672": "I",
    "C48675": "II",
    "C48676": "III",
    "C48677": "IV",
    "C48679": "V",
}
DEA_SCHEDULE_BY_ROMAN = {roman: code for code, roman in DEA_SCHEDULE_CODES.items()}
SCHEDULE_II = "C48675"
# Refill limits: Schedule II none, III-V at most 5 [S: OEMRH]. Schedule I is not prescribable.
MAX_REFILLS_BY_SCHEDULE = {"C48675": 0, "C48676": 5, "C48677": 5, "C48679": 5}
# RxCUI -> schedule for the controlled drugs the fixtures use (schedules [K]). This is a stand-in
# for the controlled-substance table profiles/ is to hold (DESIGN.md); a drug missing from it
# and without DEA_SCHEDULE_EXTENSION is treated as not controlled, and DEASchedule is left out.
DEA_SCHEDULE_BY_RXCUI: dict[str, str] = {
    "1049621": "C48675",  # oxycodone hydrochloride 5 MG Oral Tablet: II
    "861467": "C48675",  # Meperidine Hydrochloride 50 MG Oral Tablet: II
    "197591": "C48677",  # Diazepam 5 MG Oral Tablet: IV
}


def dea_schedule_code(value: object) -> str | None:
    """An NCI DEASchedule code from an extension value: a Coding (NCI or v2-0477), a code or a
    string ("II", "CII", "C-II", "2", or the NCI code itself). None when it is not one of them."""
    if isinstance(value, dict):  # valueCoding
        system, code = value.get("system"), value.get("code")
        if system == NCI_THESAURUS:
            return code if code in DEA_SCHEDULE_CODES or code == DEA_SCHEDULE_UNSPECIFIED else None
        if system not in (None, V2_CONTROLLED_SCHEDULE):
            return None
        value = code
    if not isinstance(value, str):
        return None
    text = value.strip().upper().replace("-", "").replace(" ", "")
    if text in DEA_SCHEDULE_CODES or text == DEA_SCHEDULE_UNSPECIFIED:
        return text
    if text.startswith("SCHEDULE"):
        text = text[len("SCHEDULE"):]
    if text.startswith("C") and text[1:] in DEA_SCHEDULE_BY_ROMAN:
        text = text[1:]
    arabic = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V"}
    return DEA_SCHEDULE_BY_ROMAN.get(arabic.get(text, text))


# --- Other qualifiers (ncpdp.md 7.6) -----------------------------------------------------------
QUANTITY_CODE_LIST_QUALIFIER = "38"  # original quantity [S: DV, EMP, VELA, NISTM; meaning K]
NDC_QUALIFIER = "ND"  # [S: NISTS]
ICD10_QUALIFIER = "ABF"  # [S: NISTM, CYP, EMP]
CLINICAL_INFORMATION_QUALIFIER = "1"  # 1 = prescriber-supplied [S: NISTM; meaning K]

# FHIR gender -> SCRIPT Gender. 2017071 knows M, F, U; DV's N is not safe there [I: ncpdp.md 4.1].
GENDER = {"male": "M", "female": "F", "other": "U", "unknown": "U"}

# Days per UCUM duration unit for DaysSupply; a month is 30 days [K: ncpdp.md 4.4].
DAYS_PER_UNIT = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": 30, "month": 30, "months": 30}

# --- RxRenewalResponse Denied/ReasonCode [K: the 2017071 code list is licensed; these are the
# commonly published ones]. A free-text DenialReason can be sent with or without a code.
RENEWAL_DENIAL_REASONS: dict[str, str] = {
    "AA": "Patient unknown to the prescriber",
    "AB": "Patient never under prescriber care",
    "AC": "Patient no longer under prescriber care",
    "AD": "Patient has requested refill too soon",
    "AE": "Medication never prescribed for the patient",
    "AF": "Patient should contact prescriber first",
    "AG": "Fill/refill not appropriate",
    "AM": "Patient needs appointment",
}

# --- Field sizes ---------------------------------------------------------------------------------
# Sources: SigText 1,000 [S: OPMED]; DrugDescription 105 [S: ODOS/Weno]; MessageID and
# PrescriberOrderNumber 35 [S: VAXSD an..35]. The name, address and Note sizes are [K]:
# NCPDP datatypes an..35 / an..40 / an..210; correct them here if the licensed XSD differs.
MAX_SIG = 1000
MAX_DRUG_DESCRIPTION = 105
MAX_ORDER_NUMBER = 35
MAX_NOTE = 210
MAX_NAME_PART = 35
MAX_ADDRESS_LINE = 40
MAX_CITY = 35
MAX_BUSINESS_NAME = 70
MAX_DENIAL_REASON = 70

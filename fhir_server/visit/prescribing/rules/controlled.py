"""no-controlled-substance: a controlled substance is never prescribed in an asynchronous visit. By
RxNorm code (any coding of the medication or of a Medication's ingredients equal to a listed RXCUI),
and as a safety net by name: a listed ingredient's name, or a configured brand name, occurring as a
whole word in a coding display or text. A false positive is possible; a false negative by name is not."""

from __future__ import annotations

from ..medication import medication_terms
from ..model import Refusal
from ..registry import rule

RULE_ID = "no-controlled-substance"
NAME_TTYS = {"IN", "PIN", "MIN", "BN"}

# Common US brand names of listed ingredients (a deployment may replace the list in its config).
BRAND_NAMES = [
    "OxyContin", "Roxicodone", "Percocet", "Endocet", "Vicodin", "Norco", "Lortab", "Hysingla", "Zohydro",
    "MS Contin", "Duragesic", "Actiq", "Dilaudid", "Exalgo", "Opana", "Dolophine", "Methadose", "Nucynta",
    "Demerol", "Ultram", "Ultracet", "Suboxone", "Subutex", "Zubsolv", "Sublocade", "Butrans", "Belbuca",
    "Adderall", "Mydayis", "Evekeo", "Dexedrine", "Zenzedi", "Ritalin", "Concerta", "Methylin", "Daytrana",
    "Vyvanse", "Focalin", "Desoxyn", "Xanax", "Ativan", "Klonopin", "Valium", "Restoril", "Halcion",
    "Librium", "Onfi", "Sympazan", "Ambien", "Edluar", "Intermezzo", "Sonata", "Lunesta", "Belsomra",
    "Dayvigo", "Quviviq", "AndroGel", "Testim", "Axiron", "Fortesta", "Xyosted", "Aveed", "Depo-Testosterone",
    "Ketalar", "Spravato", "Adipex", "Lomaira", "Qsymia", "Provigil", "Nuvigil", "Soma", "Lyrica", "Vimpat",
    "Briviact", "Xcopri", "Fioricet with Codeine", "Fiorinal", "Marinol", "Syndros", "Tylenol with Codeine",
]


@rule(RULE_ID, checks="the medication is not a controlled substance: no RxNorm code of it (or of a Medication's "
      "ingredients) is a listed RXCUI, and no listed ingredient or brand name occurs as a word in its displays or text",
      data="profiles/controlled-substances.json (entries: rxcui, name, schedule); brand names in the rule's parameters",
      defaults={"schedules": ["CI", "CII", "CIII", "CIV", "CV"], "brandNames": BRAND_NAMES})
def check(ctx, data, params):
    terms = medication_terms(ctx)
    if not terms.resolved:
        return [Refusal(RULE_ID, "The medication cannot be read, so it cannot be shown not to be a controlled "
                        "substance: prescribe it in a synchronous (real-time) visit.", terms.expression)]
    schedules = set(params["schedules"])
    entries = [e for e in data.controlled if e.schedule in schedules]
    by_code = next((e for e in entries if e.rxcui and e.rxcui in terms.rxcuis), None)
    by_name = by_code or next((e for e in entries if e.tty in NAME_TTYS and terms.mentions(e.name)), None)
    brand = None if by_name else next((b for b in params["brandNames"] if terms.mentions(b)), None)
    if by_name is None and brand is None:
        return []
    schedule = f" (DEA schedule {by_name.schedule[1:]})" if by_name else ""
    return [Refusal(RULE_ID, f"This is a controlled substance{schedule}: it cannot be prescribed in an asynchronous "
                    "visit; a synchronous (real-time) visit is needed.", terms.expression)]

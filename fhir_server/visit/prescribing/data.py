"""The data the rules read, loaded and checked once: the protocol table
(profiles/prescribing-protocols.json), the controlled-substance list
(profiles/controlled-substances.json) and the shipped intake Questionnaires
(profiles/questionnaires/). A malformed file raises RuleConfigError at load, never at check time."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .intake import ANSWER_KEYS, OPERATORS, item_types
from .medication import MedicationTerms
from .model import version_less

PROFILES_DIR = Path(__file__).resolve().parents[3] / "profiles"

# item type -> the answer keys a condition on it may use
_ANSWER_FOR_TYPE = {
    "boolean": {"answerBoolean"}, "integer": {"answerInteger", "answerDecimal"},
    "decimal": {"answerInteger", "answerDecimal"}, "choice": {"answerCoding"}, "open-choice": {"answerCoding", "answerString"},
    "string": {"answerString"}, "text": {"answerString"}, "date": {"answerDate"},
}


class RuleConfigError(Exception):
    """The rule configuration or one of its data files is wrong (unknown rule id or parameter,
    a protocol naming an unknown Questionnaire or linkId, ...)."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuleConfigError(f"cannot read {path}: {exc}") from exc


@dataclass(frozen=True)
class ProtocolMedication:
    id: str
    rxcuis: frozenset[str]
    names: tuple[str, ...]

    def matches(self, terms: MedicationTerms) -> bool:
        return bool(self.rxcuis & terms.rxcuis) or any(terms.mentions(n) for n in self.names)


@dataclass(frozen=True)
class Contraindication:
    id: str
    questionnaire: str              # version-less canonical
    when: tuple[dict, ...]          # any holds
    medications: frozenset[str]     # ProtocolMedication ids, or {"*"}
    why: str

    def applies_to(self, medication_id: str) -> bool:
        return "*" in self.medications or medication_id in self.medications


@dataclass(frozen=True)
class Protocol:
    id: str
    questionnaires: tuple[str, ...]  # version-less canonicals
    medications: tuple[ProtocolMedication, ...]
    contraindications: tuple[Contraindication, ...]

    def matching(self, terms: MedicationTerms) -> list[ProtocolMedication]:
        return [m for m in self.medications if m.matches(terms)]


@dataclass(frozen=True)
class Protocols:
    protocols: tuple[Protocol, ...]
    unlisted_questionnaires: tuple[str, ...] | None  # None: medications outside every protocol are refused

    def for_medication(self, terms: MedicationTerms) -> list[tuple[Protocol, list[ProtocolMedication]]]:
        out = []
        for protocol in self.protocols:
            meds = protocol.matching(terms)
            if meds:
                out.append((protocol, meds))
        return out


@dataclass(frozen=True)
class ControlledEntry:
    rxcui: str | None
    name: str
    tty: str
    schedule: str
    ingredient_rxcuis: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleData:
    protocols: Protocols
    controlled: tuple[ControlledEntry, ...]
    questionnaires: dict[str, dict] = field(repr=False)  # version-less canonical -> shipped Questionnaire

    def questionnaire(self, canonical: str | None, extra: dict[str, dict] | None = None) -> dict | None:
        """A Questionnaire by canonical: the context's first (exact, then version-less), then the shipped ones."""
        if not canonical:
            return None
        for source in (extra or {}, self.questionnaires):
            found = source.get(canonical) or source.get(version_less(canonical))
            if found is None:
                found = next((q for url, q in source.items() if version_less(url) == version_less(canonical)), None)
            if found is not None:
                return found
        return None


def load_questionnaires(folder: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        q = read_json(path)
        if q.get("resourceType") == "Questionnaire" and q.get("url"):
            out[version_less(q["url"])] = q
    return out


def load_controlled(path: Path) -> tuple[ControlledEntry, ...]:
    doc = read_json(path)
    entries = []
    for i, e in enumerate(doc.get("entries") or []):
        if not isinstance(e, dict) or not e.get("name") or not e.get("schedule"):
            raise RuleConfigError(f"{path}: entries[{i}] needs a name and a schedule")
        entries.append(ControlledEntry(
            rxcui=str(e["rxcui"]) if e.get("rxcui") else None, name=str(e["name"]), tty=str(e.get("tty") or ""),
            schedule=str(e["schedule"]), ingredient_rxcuis=tuple(str(x) for x in e.get("ingredientRxcuis") or ())))
    if not entries:
        raise RuleConfigError(f"{path}: no entries")
    return tuple(entries)


def load_protocols(path: Path, questionnaires: dict[str, dict]) -> Protocols:
    doc = read_json(path)
    where = str(path)

    def known_questionnaire(url, at):
        if not isinstance(url, str) or version_less(url) not in questionnaires:
            raise RuleConfigError(f"{where}: {at}: unknown intake Questionnaire {url!r}")
        return version_less(url)

    protocols = []
    seen_ids: set[str] = set()
    for p in doc.get("protocols") or []:
        pid = p.get("id")
        if not pid or pid in seen_ids:
            raise RuleConfigError(f"{where}: every protocol needs a unique id ({pid!r})")
        seen_ids.add(pid)
        qs = tuple(known_questionnaire(u, f"protocol {pid}") for u in p.get("questionnaires") or [])
        if not qs:
            raise RuleConfigError(f"{where}: protocol {pid} names no Questionnaire")
        meds = []
        for m in p.get("medications") or []:
            names = [i["name"] for i in m.get("ingredients") or [] if i.get("name")] + list(m.get("names") or [])
            rxcuis = [i.get("rxcui") for i in m.get("ingredients") or []] + [x.get("rxcui") for x in m.get("products") or []]
            if not m.get("id") or not names:
                raise RuleConfigError(f"{where}: protocol {pid}: a medication needs an id and at least one name")
            meds.append(ProtocolMedication(m["id"], frozenset(str(r) for r in rxcuis if r), tuple(dict.fromkeys(names))))
        med_ids = {m.id for m in meds}
        cis = []
        for c in p.get("contraindications") or []:
            at = f"protocol {pid}, contraindication {c.get('id')!r}"
            q_url = known_questionnaire(c.get("questionnaire"), at)
            types = item_types(questionnaires[q_url])
            when = c.get("when") or []
            if not c.get("id") or not when:
                raise RuleConfigError(f"{where}: {at}: needs an id and at least one condition in 'when'")
            for cond in when:
                link = cond.get("linkId")
                if link not in types:
                    raise RuleConfigError(f"{where}: {at}: linkId {link!r} is not in {q_url}")
                if cond.get("operator", "=") not in OPERATORS:
                    raise RuleConfigError(f"{where}: {at}: unknown operator {cond.get('operator')!r}")
                keys = [k for k in ANSWER_KEYS if k in cond]
                if cond.get("operator") != "exists" and (len(keys) != 1 or keys[0] not in _ANSWER_FOR_TYPE.get(types[link], set())):
                    raise RuleConfigError(f"{where}: {at}: condition on {link!r} ({types[link]}) needs one fitting answer[x], got {keys}")
            targets = set(c.get("medications") or [])
            if not targets or not (targets <= med_ids or targets == {"*"}):
                raise RuleConfigError(f"{where}: {at}: medications must be '*' or ids of the protocol's medications")
            cis.append(Contraindication(c["id"], q_url, tuple(when), frozenset(targets), str(c.get("why") or "")))
        protocols.append(Protocol(pid, qs, tuple(meds), tuple(cis)))
    unlisted = doc.get("unlisted")
    unlisted_qs = None if unlisted is None else tuple(
        known_questionnaire(u, "unlisted") for u in unlisted.get("questionnaires") or [])
    return Protocols(tuple(protocols), unlisted_qs)

"""What medication a MedicationRequest asks for, as the rules see it: its RxNorm codes and its
words (coding displays and text), from medicationCodeableConcept or from a Medication
(contained, or given in the context) with its ingredients. Plus whole-word name matching."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .model import RXNORM, PrescribingContext, codings


@dataclass(frozen=True)
class MedicationTerms:
    rxcuis: frozenset[str]        # every RxNorm code: product, ingredients
    texts: tuple[str, ...]        # coding displays and CodeableConcept texts
    expression: str               # where the medication is in the MedicationRequest
    resolved: bool                # False: a medicationReference that could not be read

    def mentions(self, name: str) -> bool:
        """Case-insensitive whole-word match of a name (several words allowed) in any text."""
        pattern = r"(?<![a-z0-9])" + r"[\s\-/]+".join(map(re.escape, name.lower().split())) + r"(?![a-z0-9])"
        return any(re.search(pattern, text.lower()) for text in self.texts)


def _concept_terms(concept: dict | None, rxcuis: set[str], texts: list[str]) -> None:
    if not isinstance(concept, dict):
        return
    for coding in codings(concept):
        if coding.get("system") == RXNORM and coding.get("code"):
            rxcuis.add(str(coding["code"]).strip())
        if coding.get("display"):
            texts.append(str(coding["display"]))
    if concept.get("text"):
        texts.append(str(concept["text"]))


def medication_terms(ctx: PrescribingContext) -> MedicationTerms:
    mr = ctx.medication_request
    rxcuis: set[str] = set()
    texts: list[str] = []
    if "medicationCodeableConcept" in mr:
        _concept_terms(mr["medicationCodeableConcept"], rxcuis, texts)
        return MedicationTerms(frozenset(rxcuis), tuple(texts), "MedicationRequest.medicationCodeableConcept", True)
    reference = mr.get("medicationReference") or {}
    expression = "MedicationRequest.medicationReference"
    medication = None
    target = reference.get("reference") or ""
    if target.startswith("#"):
        medication = next((c for c in mr.get("contained") or []
                           if c.get("resourceType") == "Medication" and c.get("id") == target[1:]), None)
    elif ctx.medication is not None and ctx.medication.get("resourceType") == "Medication":
        medication = ctx.medication
    if reference.get("display"):
        texts.append(str(reference["display"]))
    if medication is None:
        return MedicationTerms(frozenset(rxcuis), tuple(texts), expression, False)
    _concept_terms(medication.get("code"), rxcuis, texts)
    for ingredient in medication.get("ingredient") or []:
        _concept_terms(ingredient.get("itemCodeableConcept"), rxcuis, texts)
        if (ingredient.get("itemReference") or {}).get("display"):
            texts.append(str(ingredient["itemReference"]["display"]))
    return MedicationTerms(frozenset(rxcuis), tuple(texts), expression, True)

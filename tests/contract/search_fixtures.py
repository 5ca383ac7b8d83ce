"""A small clinical data set built to exercise every search parameter type and modifier."""

from __future__ import annotations

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MRN = "urn:example:mrn"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

RESOURCES: list[dict] = [
    {"resourceType": "Patient", "id": "p1", "active": True, "gender": "female", "birthDate": "1980-05-03",
     "name": [{"family": "Müller", "given": ["Anna", "Maria"]}],
     "identifier": [{"system": MRN, "value": "111",
                     "type": {"coding": [{"system": V2_0203, "code": "MR"}], "text": "Medical record number"}}],
     "address": [{"city": "Zürich", "country": "CH"}], "managingOrganization": {"reference": "Organization/org1"}},
    {"resourceType": "Patient", "id": "p2", "active": False, "gender": "male", "birthDate": "1990",
     "name": [{"family": "Mueller", "given": ["Bob"]}], "identifier": [{"system": MRN, "value": "222"}]},
    {"resourceType": "Patient", "id": "p3", "gender": "male", "birthDate": "2001-02-03",
     "name": [{"family": "Smith", "given": ["Carl"]}], "identifier": [{"value": "333"}]},
    {"resourceType": "Organization", "id": "org1", "name": "Valley Clinic"},
    {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "House", "given": ["Greg"]}]},
    {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
     "subject": {"reference": "Patient/p1"}, "participant": [{"individual": {"reference": "Practitioner/pr1"}}],
     "period": {"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T11:00:00Z"}},
    {"resourceType": "Encounter", "id": "e2", "status": "in-progress", "class": {"code": "VR"},
     "subject": {"reference": "Patient/p2"}, "period": {"start": "2024-02-01"}},
    {"resourceType": "Encounter", "id": "e3", "status": "cancelled", "class": {"code": "AMB"},
     "subject": {"reference": "Patient/p3"}, "period": {"start": "2023-03-01", "end": "2023-03-02"}},
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
     "code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
     "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e1"},
     "effectiveDateTime": "2024-01-01T10:30:00Z",
     "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
    {"resourceType": "Observation", "id": "o2", "status": "preliminary",
     "code": {"coding": [{"system": LOINC, "code": "8480-6"}], "text": "Systolic"},
     "subject": {"reference": "Patient/p2"}, "effectiveDateTime": "2024-02-01",
     "valueQuantity": {"value": 140.5, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
    {"resourceType": "Observation", "id": "o3", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
     "subject": {"reference": "Patient/p3"}, "effectiveDateTime": "2023-03-01",
     "component": [
         {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
          "valueQuantity": {"value": 150, "system": UCUM, "code": "mm[Hg]"}},
         {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
          "valueQuantity": {"value": 95, "system": UCUM, "code": "mm[Hg]"}},
     ]},
    {"resourceType": "Observation", "id": "o4", "status": "final", "code": {"text": "Mood"},
     "subject": {"reference": "Patient/p1"}, "valueString": "Cheerful"},
    {"resourceType": "RiskAssessment", "id": "r1", "status": "final", "subject": {"reference": "Patient/p1"},
     "prediction": [{"probabilityDecimal": 0.52}]},
    {"resourceType": "RiskAssessment", "id": "r2", "status": "final", "subject": {"reference": "Patient/p2"},
     "prediction": [{"probabilityDecimal": 0.1}]},
    {"resourceType": "ValueSet", "id": "vs1", "status": "active", "url": "http://example.org/fhir/ValueSet/intake-reasons"},
    {"resourceType": "ValueSet", "id": "vs2", "status": "active", "url": "http://other.org/ValueSet/x"},
    {"resourceType": "QuestionnaireResponse", "id": "qr1", "status": "completed",
     "questionnaire": "http://example.org/fhir/Questionnaire/intake|1.0", "subject": {"reference": "Patient/p1"},
     "authored": "2024-01-01T09:00:00Z"},
    {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
     "medicationCodeableConcept": {"text": "amoxicillin"}, "subject": {"reference": "Patient/p1"},
     "encounter": {"reference": "Encounter/e1"}, "requester": {"reference": "Practitioner/pr1"},
     "authoredOn": "2024-01-01"},
]

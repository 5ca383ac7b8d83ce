"""Which patients a stored resource is about, from its bytes (for an AuditEvent's patient entities).

The stored JSON is scanned for references to Patient resources instead of being parsed and walked
by the compartment's search parameters: the audit of a read must cost little next to the read
(a 50-resource search page is scanned in tens of microseconds), and a resource that names a patient
anywhere (subject, patient, performer, a Group's member) carries data about that patient for the
purpose of an accounting of access. A Patient resource is about itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from ..storage import StoredVersion

_PATIENT_REFERENCE = re.compile(
    rb'"reference"\s*:\s*"(?:[^"]*/)?Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^"]*)?"')


def patients_of(version: StoredVersion) -> list[str]:
    found: dict[str, None] = {}
    if version.resource_type == "Patient":
        found[version.id] = None
    if version.body is not None:
        for match in _PATIENT_REFERENCE.finditer(version.body):
            found[match.group(1).decode("ascii")] = None
    return list(found)


def patients_of_all(versions: Iterable[StoredVersion]) -> list[str]:
    found: dict[str, None] = {}
    for version in versions:
        for patient in patients_of(version):
            found[patient] = None
    return list(found)


_PATIENT_ID = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9\-.]{1,64})"')


def patients_in_ndjson(path: Path) -> list[str]:
    """The patients the resources of an NDJSON file (a Bulk export file) are about: each Patient
    itself, and every patient another resource references. Read line by line, never whole."""
    found: dict[str, None] = {}
    with open(path, "rb") as lines:
        for line in lines:
            if line.startswith(b'{"resourceType":"Patient"'):
                match = _PATIENT_ID.search(line)
                if match:
                    found[match.group(1).decode("ascii")] = None
            for match in _PATIENT_REFERENCE.finditer(line):
                found[match.group(1).decode("ascii")] = None
    return list(found)

"""The resource types this server serves: every concrete resource type that fhir.resources' R4B
package models and that FHIR R4 (4.0.1) defines (the generated structure table).

Both lists are discovered (the models by scanning the package, R4 from the generated table) rather
than written by hand, so the served set cannot drift from what the validator can check. R4B-only
types (Citation, SubscriptionTopic, ...) and R4-only ones without a model (MedicinalProduct, ...)
are left out.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from functools import lru_cache

import fhir.resources.R4B as _r4b

# FHIR id rule (R4 datatypes.html#id): 1..64 of [A-Za-z0-9-.]
ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")

_ABSTRACT = {"Resource", "DomainResource"}


@lru_cache(maxsize=1)
def modelled_types() -> frozenset[str]:
    """Names of the concrete resource types, found by scanning the R4B model modules once."""
    from fhir.resources.R4B.resource import Resource

    found: set[str] = set()
    for info in pkgutil.iter_modules(_r4b.__path__):
        if info.name.startswith("_") or info.name in {"fhirtypes", "fhirtypesvalidators"}:
            continue
        module = importlib.import_module(f"{_r4b.__name__}.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, Resource):
                continue
            if name == cls.get_resource_type() and name not in _ABSTRACT:
                found.add(name)
    return frozenset(found)


@lru_cache(maxsize=1)
def resource_types() -> frozenset[str]:
    """The served types: modelled by R4B and defined by R4."""
    from .structure_table import load_table

    return modelled_types() & load_table().resources


def is_resource_type(name: str) -> bool:
    return name in resource_types()


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None

"""Search: the R4 search-parameter registry and the index entries extracted on every write.

Parsing `?params` into a backend-neutral query, includes, sorting and paging will live here too
(DESIGN.md, "Layout"); storage backends translate the query against the stored index entries.
"""

from fhir_server.search.entries import (
    DATE_MAX,
    DATE_MIN,
    CompositeEntry,
    DateEntry,
    IndexEntry,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)
from fhir_server.search.extract import extract_index
from fhir_server.search.registry import (
    SearchParam,
    param_by_url,
    patient_compartment_params,
    search_param,
    search_params,
)

__all__ = [
    "DATE_MAX",
    "DATE_MIN",
    "CompositeEntry",
    "DateEntry",
    "IndexEntry",
    "NumberEntry",
    "QuantityEntry",
    "ReferenceEntry",
    "SearchParam",
    "StringEntry",
    "TokenEntry",
    "UriEntry",
    "extract_index",
    "param_by_url",
    "patient_compartment_params",
    "search_param",
    "search_params",
]

"""String normalisation for string search and token `:text` (R4 search.html#string).

"By default, a field matches a string query if the value of the field equals or starts with the
supplied parameter value, after both have been normalized by case and accent." The spec leaves the
normalisation to the server; ours: Unicode NFKD, combining marks removed (accents), `casefold()`
(caseless matching, e.g. "ß" -> "ss"), whitespace runs collapsed to one space and trimmed.
Search-side parsing must call the same function on the searched value.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

__all__ = ["normalize"]


@lru_cache(maxsize=65_536)  # displays and names repeat across resources (the same codes, the same places)
def normalize(text: str) -> str:
    if text.isascii():
        # NFKD and combining marks are no-ops on ASCII; skipping them keeps extraction cheap.
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.casefold().split())

"""authlib's request objects from Starlette requests (authlib ships no Starlette server adapter).

The body and query are read on the event loop first; authlib then runs synchronously in a worker
thread on this plain object. The authorize endpoint takes GET (query) and POST (form) alike
(SMART `authorize-post`), so the payload merges both; the token endpoint reads the form only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, OAuth2Request


class FormPayload(BasicOAuth2Payload):
    def __init__(self, pairs: Iterable[tuple[str, str]]):
        datalist: defaultdict[str, list] = defaultdict(list)
        for key, value in pairs:
            datalist[key].append(value)
        super().__init__({k: v[0] for k, v in datalist.items()})
        self._datalist = datalist


class SmartRequest(OAuth2Request):
    """An OAuth2Request with what SMART needs beside it: the issuer (this server's FHIR base)."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str], pairs: list[tuple[str, str]], *,
                 issuer: str, token_url: str):
        super().__init__(method, uri, headers=headers)
        self.payload = FormPayload(pairs)
        self._form = {k: v[0] for k, v in self.payload.datalist.items()}
        self.issuer = issuer
        self.token_url = token_url
        self.consent: dict | None = None  # set by the consent step: the scope and context the user approved

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return self._form

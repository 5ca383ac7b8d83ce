from __future__ import annotations

import pytest

from tests.e2e.smart_support import PASSWORD, Browserless


@pytest.fixture(scope="module")
def signed_in(smart):
    """One signed-in browser per user for the whole module (each sign-in costs an argon2 hash).
    Needs the module's own `smart` fixture (a SmartServer with those users registered)."""
    browsers: dict[str, Browserless] = {}

    def get(username: str) -> Browserless:
        if username not in browsers:
            b = Browserless(smart.base)
            r = b.http.post("/auth/login", data={"username": username, "password": PASSWORD, "next": "/auth/manage"})
            assert r.status_code == 303, r.text
            browsers[username] = b
        return browsers[username]

    yield get
    for b in browsers.values():
        b.close()

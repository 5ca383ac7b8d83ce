"""Administration commands: register SMART clients and users, rotate the signing keys.

`python -m fhir_server clients|users|signing-keys ...` (fhir_server/cli.py adds these subcommands from
add_commands below). They write into the same database as the FHIR data, through the record
store, so a running server sees a new client or user at its next look-up. Each command is a small
function over AuthRecords that tests can call directly; the argparse handlers only parse, call
and print. A refused command raises AdminError: one line on stderr, exit status 2.

Secrets are stored only as argon2 hashes and are never printed, not even in error messages.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

from pymongo.errors import PyMongoError

from fhir_server.storage.sqlite.driver import DATABASE_ERRORS  # sqlite3's and SQLCipher's (encrypted store)

from .keys import KeyRing
from .passwords import hash_secret
from .scopes import KNOWN_OTHER, InvalidScope, ScopeSet
from .store import AuthRecords, Client, User, open_record_store

EXIT_REFUSED = 2
_NAME = re.compile(r"^[A-Za-z0-9._~@+\-:]{1,128}$")  # client ids and usernames: no spaces or controls
_FHIR_USER = re.compile(r"^(Patient|Practitioner)/([A-Za-z0-9\-.]{1,64})$")  # FHIR id grammar
_PRIVATE_JWK_PARAMS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}  # RFC 7518 §6: private or secret parts
_PUBLIC_KEY_TYPES = {"RSA", "EC", "OKP"}


class AdminError(Exception):
    """A refused administration command; the message is one line for stderr."""


# validation ----------------------------------------------------------------------------------

def _name(value: str, what: str) -> str:
    if not _NAME.match(value or ""):
        raise AdminError(f"{what} must be 1-128 characters of letters, digits and . _ ~ @ + - : (no spaces)")
    return value


def _http_url(value: str, what: str, *, https_only: bool = False) -> str:
    """An absolute http(s) URL with a host and no fragment (RFC 6749 §3.1.2 for redirect URIs)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment or "#" in value:
        raise AdminError(f"{what} must be an absolute http(s) URL without a fragment, not {value!r}")
    if https_only and parts.scheme != "https" and not _loopback(parts.hostname):
        raise AdminError(f"{what} must use https (http only for localhost), not {value!r}")
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_scope(text: str) -> str:
    """A client's registered scope string, checked against the SMART grammar; returned normalised."""
    try:
        scopes = ScopeSet.parse(text)
    except InvalidScope as exc:
        raise AdminError(f"invalid scope: {exc}") from None
    unknown = [w for w in scopes.other if w not in KNOWN_OTHER]
    if unknown:  # a typo ("offline-access") would otherwise register a scope that is never granted
        raise AdminError(f"unknown scope {unknown[0]!r}: use SMART resource scopes and {' '.join(sorted(KNOWN_OTHER))}")
    if not scopes.resource and not scopes.other:
        raise AdminError("--scope must name at least one scope")
    return " ".join(text.split())


def validate_jwks(jwks: object) -> dict:
    """A JWK Set of public keys: {"keys": [...]}, each with kty and a unique kid, no private parts."""
    from joserfc.errors import JoseError
    from joserfc.jwk import JWKRegistry

    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise AdminError('the JWK Set must be a JSON object with a non-empty "keys" array')
    kids: set[str] = set()
    for index, key in enumerate(jwks["keys"]):
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str) or not isinstance(key.get("kid"), str):
            raise AdminError(f"JWK Set key #{index + 1} needs string \"kty\" and \"kid\" members")
        label = f"JWK Set key {key['kid']!r}"
        private = sorted(_PRIVATE_JWK_PARAMS & key.keys())
        if private:  # names only: the values are secrets
            raise AdminError(f"{label} has private or secret parts ({', '.join(private)}): register the public keys only")
        if key["kty"] not in _PUBLIC_KEY_TYPES:
            raise AdminError(f"{label} has kty {key['kty']!r}: only {', '.join(sorted(_PUBLIC_KEY_TYPES))} public keys")
        if key["kid"] in kids:
            raise AdminError(f"{label} appears twice")
        kids.add(key["kid"])
        try:
            JWKRegistry.import_key(key)
        except (JoseError, ValueError, TypeError) as exc:
            raise AdminError(f"{label} is not a valid {key['kty']} public key ({exc})") from None
    return jwks


def load_jwks(path: str) -> dict:
    try:
        return validate_jwks(json.loads(Path(path).read_text()))
    except OSError as exc:
        raise AdminError(f"cannot read the JWK Set file {path}: {exc.strerror}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise AdminError(f"the JWK Set file {path} is not JSON: {exc}") from None


def new_client(*, client_id: str, scope: str, public: bool = False, secret: str | None = None,
               jwks: dict | None = None, jwks_url: str | None = None, redirect_uris: Iterable[str] = (),
               launch_url: str | None = None, name: str | None = None) -> Client:
    """A validated Client; exactly one of public, secret, jwks, jwks_url says how it authenticates."""
    if sum([bool(public), secret is not None, jwks is not None, jwks_url is not None]) != 1:
        raise AdminError("give exactly one of --public, --secret, --jwks, --jwks-url")
    kind = "public" if public else "symmetric" if secret is not None else "asymmetric"
    uris = [_http_url(u, "--redirect-uri") for u in redirect_uris]
    if kind in ("public", "symmetric") and not uris:
        raise AdminError(f"a {kind} client needs at least one --redirect-uri")
    if secret is not None and not secret:
        raise AdminError("--secret must not be empty")
    return Client(
        client_id=_name(client_id, "--client-id"),
        kind=kind,
        scope=validate_scope(scope),
        redirect_uris=list(dict.fromkeys(uris)),
        launch_url=_http_url(launch_url, "--launch-url") if launch_url else None,
        secret_hash=hash_secret(secret) if secret is not None else None,
        jwks=validate_jwks(jwks) if jwks is not None else None,
        jwks_url=_http_url(jwks_url, "--jwks-url", https_only=True) if jwks_url else None,
        name=name or None,
    )


def new_user(*, username: str, password: str, fhir_user: str) -> User:
    if not _FHIR_USER.match(fhir_user or ""):
        raise AdminError(f"--fhir-user must be Patient/<id> or Practitioner/<id>, not {fhir_user!r}")
    if not password:
        raise AdminError("--password must not be empty")
    return User(username=_name(username, "--username"), password_hash=hash_secret(password), fhir_user=fhir_user)


# the commands --------------------------------------------------------------------------------

def add_client(records: AuthRecords, client: Client) -> None:
    if records.client(client.client_id) is not None:
        raise AdminError(f"client {client.client_id!r} already exists (remove it first)")
    records.put_client(client)


def client_lines(records: AuthRecords) -> list[str]:
    """One tab-separated line per client: id, kind, scope, redirect URIs (never the secret hash)."""
    return ["\t".join([c.client_id, c.kind, c.scope, " ".join(c.redirect_uris) or "-"]) for c in records.clients()]


def remove_client(records: AuthRecords, client_id: str) -> None:
    if not records.remove_client(client_id):
        raise AdminError(f"no client {client_id!r}")


def add_user(records: AuthRecords, user: User) -> None:
    if records.user(user.username) is not None:
        raise AdminError(f"user {user.username!r} already exists (remove it first)")
    records.put_user(user)


def user_lines(records: AuthRecords) -> list[str]:
    """One tab-separated line per user: username and fhirUser (never the password hash)."""
    return [f"{u.username}\t{u.fhir_user}" for u in records.users()]


def remove_user(records: AuthRecords, username: str) -> None:
    if not records.remove_user(username):
        raise AdminError(f"no user {username!r}")


def rotate_key(records: AuthRecords) -> str:
    """A new signing key signs from now on; the old ones stay published while their tokens live."""
    return KeyRing(records).rotate()


def _time(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch is not None else "-"


def key_lines(records: AuthRecords) -> list[str]:
    """One tab-separated line per signing key, oldest first: kid, created, retired ("-": signing)."""
    keys = sorted(records.signing_keys(), key=lambda k: (k.created_at, k.kid))
    return [f"{k.kid}\t{_time(k.created_at)}\t{_time(k.retired_at)}" for k in keys]


@contextmanager
def open_records(database_url: str) -> Iterator[AuthRecords]:
    try:
        store = open_record_store(database_url)
    except ValueError as exc:
        raise AdminError(f"--database: {exc}") from None
    try:
        store.open()
    except Exception as exc:  # sqlite3 / pymongo errors: one line, not a traceback
        raise AdminError(f"cannot open the database: {type(exc).__name__}: {exc}") from None
    try:
        yield AuthRecords(store)
    finally:
        store.close()


# command line --------------------------------------------------------------------------------

def _read_secret(value: str, what: str) -> str:
    """'-' reads the secret from stdin's first line, keeping it out of `ps` and shell history."""
    if value != "-":
        return value
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise AdminError(f"{what} -: nothing on standard input")
    return line


def _clients_add(args: argparse.Namespace) -> list[str]:
    client = new_client(
        client_id=args.client_id, scope=args.scope, public=args.public,
        secret=_read_secret(args.secret, "--secret") if args.secret is not None else None,
        jwks=load_jwks(args.jwks) if args.jwks else None, jwks_url=args.jwks_url,
        redirect_uris=args.redirect_uri, launch_url=args.launch_url, name=args.name,
    )
    with open_records(args.database) as records:
        add_client(records, client)
    backend = " (backend services)" if client.kind == "asymmetric" and not client.redirect_uris else ""
    return [f"added {client.kind} client {client.client_id}{backend}"]


def _clients_list(args: argparse.Namespace) -> list[str]:
    with open_records(args.database) as records:
        return client_lines(records)


def _clients_remove(args: argparse.Namespace) -> list[str]:
    with open_records(args.database) as records:
        remove_client(records, args.client_id)
    return [f"removed client {args.client_id}"]


def _users_add(args: argparse.Namespace) -> list[str]:
    user = new_user(username=args.username, password=_read_secret(args.password, "--password"),
                    fhir_user=args.fhir_user)
    with open_records(args.database) as records:
        add_user(records, user)
    return [f"added user {user.username} ({user.fhir_user})"]


def _users_list(args: argparse.Namespace) -> list[str]:
    with open_records(args.database) as records:
        return user_lines(records)


def _users_remove(args: argparse.Namespace) -> list[str]:
    with open_records(args.database) as records:
        remove_user(records, args.username)
    return [f"removed user {args.username}"]


def _keys_rotate(args: argparse.Namespace) -> list[str]:
    with open_records(args.database) as records:
        kid = rotate_key(records)
    return [f"new signing key {kid} (running servers start signing with it within a minute)"]


def _keys_list(args: argparse.Namespace) -> list[str]:
    with open_records(args.database) as records:
        return key_lines(records)


def _runner(action: Callable[[argparse.Namespace], list[str]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            lines = action(args)
        except AdminError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except (*DATABASE_ERRORS, PyMongoError) as exc:  # the database failed mid-command: one line, not a traceback
            print(f"error: database: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        for line in lines:
            print(line)
        return 0

    return run


def add_commands(commands: argparse._SubParsersAction, default_database: str) -> None:
    """Add the clients, users and signing-keys subcommands; each leaf sets `admin` to its handler
    (args -> exit status), which fhir_server/cli.py calls."""

    def leaf(group: argparse._SubParsersAction, name: str, help: str,
             action: Callable[[argparse.Namespace], list[str]]) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=help)
        parser.add_argument("--database", default=default_database, help="sqlite:/// or mongodb:// URL [FHIR_DATABASE]")
        parser.set_defaults(admin=_runner(action))
        return parser

    clients = commands.add_parser("clients", help="register SMART client applications").add_subparsers(
        dest="action", required=True)
    add = leaf(clients, "add", "register a client", _clients_add)
    add.add_argument("--client-id", required=True)
    how = add.add_mutually_exclusive_group(required=True)
    how.add_argument("--public", action="store_true", help="a public client (no secret; PKCE only)")
    how.add_argument("--secret", help="a confidential client's secret (client_secret_basic); '-' reads it from stdin")
    how.add_argument("--jwks", metavar="FILE", help="a JSON JWK Set of the client's public keys (private_key_jwt)")
    how.add_argument("--jwks-url", metavar="URL", help="where the client publishes its JWK Set (private_key_jwt)")
    add.add_argument("--redirect-uri", action="append", default=[], metavar="URI",
                     help="an allowed redirect URI (repeat for several); none: a backend-services client")
    add.add_argument("--launch-url", metavar="URL", help="the app's EHR launch URL")
    add.add_argument("--scope", required=True, help='the scopes the client may be granted, e.g. "launch/patient '
                                                    'openid fhirUser offline_access patient/*.rs"')
    add.add_argument("--name", help="a display name (shown on the consent page)")
    leaf(clients, "list", "list clients: id, kind, scope, redirect URIs", _clients_list)
    leaf(clients, "remove", "remove a client", _clients_remove).add_argument("--client-id", required=True)

    users = commands.add_parser("users", help="manage the users who log in").add_subparsers(
        dest="action", required=True)
    add = leaf(users, "add", "add a user", _users_add)
    add.add_argument("--username", required=True)
    add.add_argument("--password", required=True, help="the password; '-' reads it from stdin")
    add.add_argument("--fhir-user", required=True, metavar="Patient/ID|Practitioner/ID",
                     help="the FHIR resource the user is (fhirUser)")
    leaf(users, "list", "list users: username, fhirUser", _users_list)
    leaf(users, "remove", "remove a user", _users_remove).add_argument("--username", required=True)

    # `signing-keys`: `keys` names the encryption keys of data at rest (fhir_server/security/cli.py)
    keys = commands.add_parser("signing-keys", help="the server's token signing keys").add_subparsers(
        dest="action", required=True)
    leaf(keys, "rotate", "make a new signing key and retire the others", _keys_rotate)
    leaf(keys, "list", "list signing keys: kid, created, retired", _keys_list)

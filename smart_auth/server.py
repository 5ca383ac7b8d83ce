"""The OAuth 2.0 authorization server (authlib's AuthorizationServer) configured for SMART.

authlib does the protocol (grant dispatch, client authentication, PKCE, error bodies and headers);
this module registers the SMART variants of its parts and the checks SMART adds to an
authorization request. All of it is synchronous: routes.py calls it from a worker thread.
"""

from __future__ import annotations

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import InvalidRequestError

from .client_auth import JwksCache, PrivateKeyJwt, public_client_authenticator
from .clients import PRIVATE_KEY_JWT, SmartClient
from .grants.authorization_code import AuthorizationCodeGrant
from .grants.client_credentials import ClientCredentialsGrant
from .grants.pkce import S256CodeChallenge
from .grants.refresh_token import RefreshTokenGrant
from .introspection import SmartIntrospectionEndpoint
from .issuance import TokenIssuer
from .oauth_request import SmartRequest
from .revocation import SmartRevocationEndpoint
from .scopes import LAUNCH
from .service import AuthService


def same_base(a: str, b: str) -> bool:
    """`aud` against the FHIR base URL: client-js sends `iss` as received, fhirclient its api_base
    as configured, so a trailing slash is the only difference tolerated."""
    return a.rstrip("/") == b.rstrip("/")


class SmartAuthorizationChecks:
    """What SMART adds to an authorization request (authlib ignores `aud`, `launch` and `state`)."""

    def __init__(self, service: AuthService):
        self.records = service.records

    def __call__(self, grant) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.check)

    def check(self, grant, redirect_uri: str) -> None:
        request: SmartRequest = grant.request
        data = request.payload.data
        if not data.get("state"):
            raise InvalidRequestError("The 'state' parameter is required")
        aud = data.get("aud") or data.get("resource")  # SMART allows `resource` as a synonym
        if not aud:
            raise InvalidRequestError("The 'aud' parameter is required: the FHIR base URL the app will use")
        if not same_base(aud, request.issuer):
            raise InvalidRequestError("The 'aud' parameter does not name this FHIR server")
        launch_id = data.get("launch")
        if launch_id:
            launch = self.records.launch(launch_id)
            if launch is None or (launch.client_id and launch.client_id != request.client.client_id):
                raise InvalidRequestError("The 'launch' parameter is unknown, expired or for another app")
            request.launch = launch
        else:
            request.launch = None
            if LAUNCH in (data.get("scope") or "").split():
                raise InvalidRequestError("The 'launch' scope needs the 'launch' parameter of an EHR launch")


class SmartAuthorizationServer(AuthorizationServer):
    def __init__(self, service: AuthService):
        super().__init__()  # no scopes_supported: v2 query scopes make the set open-ended
        self.service = service
        records, tokens = service.records, service.tokens
        issuer = TokenIssuer(records, tokens, service.lifetimes)
        self.jwks_cache = JwksCache()
        self.register_client_auth_method("none", public_client_authenticator(records))
        self.register_client_auth_method(PRIVATE_KEY_JWT, PrivateKeyJwt(records, self.jwks_cache))

        def bind(cls, **attrs):
            return type(cls.__name__, (cls,), attrs)

        self.register_grant(bind(AuthorizationCodeGrant, records=records, issuer=issuer),
                            [S256CodeChallenge(), SmartAuthorizationChecks(service)])
        self.register_grant(bind(RefreshTokenGrant, records=records, issuer=issuer))
        self.register_grant(bind(ClientCredentialsGrant, issuer=issuer))
        self.register_endpoint(bind(SmartIntrospectionEndpoint, records=records, tokens=tokens))
        self.register_endpoint(bind(SmartRevocationEndpoint, records=records, tokens=tokens,
                                    revoked=service.revoked))

    def query_client(self, client_id: str) -> SmartClient | None:
        record = self.service.records.client(client_id)
        return SmartClient(record) if record is not None else None

    def save_token(self, token: dict, request) -> None:
        pass  # issuance.py persisted what must be kept (grant, refresh token); access tokens are JWTs

    def create_oauth2_request(self, request) -> SmartRequest:
        return request

    def handle_response(self, status: int, body, headers):
        return status, body, headers

    def send_signal(self, name, *args, **kwargs) -> None:
        pass

"""RFC 7662 token introspection as SMART describes it (token-introspection.html): an active token
answers with its scope, client_id, exp, the launch context and the id_token's iss/sub; anything
else answers exactly {"active": false}.

Who may ask: a confidential client (Basic, post or private_key_jwt) about any token — it acts as a
resource server —, a public client about its own tokens, and a caller presenting one of our access
tokens as a Bearer token (SMART: "an appropriately-scoped SMART bearer token").
"""

from __future__ import annotations

from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from .token_lookup import AccessTokenInfo, RefreshTokenInfo, TokenEndpointLookup


def introspection_payload(token) -> dict:
    if isinstance(token, AccessTokenInfo):
        claims = token.claims
        payload = {"active": True, "scope": claims["scope"], "client_id": claims["client_id"],
                   "token_type": "Bearer", "exp": claims["exp"], "iat": claims["iat"], "iss": claims["iss"],
                   "sub": claims["sub"], "aud": claims["aud"]}
        for name in ("patient", "encounter", "fhirUser"):
            if name in claims:
                payload[name] = claims[name]
        return payload
    assert isinstance(token, RefreshTokenInfo)
    grant = token.grant
    payload = {"active": True, "scope": token.scope, "client_id": token.client_id, "token_type": "refresh_token",
               "exp": int(token.expires_at), "sub": grant.username or grant.client_id}
    for name, value in (("patient", grant.patient), ("encounter", grant.encounter), ("fhirUser", grant.fhir_user)):
        if value:
            payload[name] = value
    return payload


class SmartIntrospectionEndpoint(TokenEndpointLookup, IntrospectionEndpoint):
    def authenticate_token(self, request, client):
        token = self.requested_token(request, client)
        if token is not None and self.check_permission(token, client, request):
            return token
        return None

    def check_permission(self, token, client, request) -> bool:
        return not client.is_public or token.check_client(client)

    def introspect_token(self, token) -> dict:
        return introspection_payload(token)

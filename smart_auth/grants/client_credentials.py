"""grant_type=client_credentials for SMART Backend Services (backend-services.html): only
asymmetric clients, authenticated by a private_key_jwt assertion, for their pre-authorized
system/ scopes; five-minute tokens and no refresh token."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import InvalidScopeError, grants

from ..clients import PRIVATE_KEY_JWT
from .issue import SmartTokenMixin


class ClientCredentialsGrant(SmartTokenMixin, grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [PRIVATE_KEY_JWT]

    def validate_token_request(self):
        if not self.request.payload.scope:
            raise InvalidScopeError("Backend services must ask for a scope (for example system/*.rs)")
        super().validate_token_request()
        granted = self.request.client.get_allowed_scope(self.request.payload.scope)
        if granted is None:
            raise InvalidScopeError("None of the requested scopes is pre-authorized for this client")
        self.request.granted_scope = granted

    def create_token_response(self):
        """authlib's would issue the scope as asked; SMART issues the pre-authorized part of it."""
        token = self.generate_token(scope=self.request.granted_scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER

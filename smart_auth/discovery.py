"""Discovery documents: SMART's /.well-known/smart-configuration (conformance.html), OpenID
Connect's /.well-known/openid-configuration, and the CapabilityStatement's rest.security block
(with the legacy oauth-uris extension the Python fhirclient still discovers endpoints by)."""

from __future__ import annotations

from .keys import ALGORITHM

CAPABILITIES = [
    "launch-ehr", "launch-standalone", "authorize-post",
    "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "sso-openid-connect", "context-banner", "context-style",
    "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient",
    "permission-offline", "permission-online", "permission-patient", "permission-user",
    "permission-v1", "permission-v2",
]
SCOPES_SUPPORTED = [
    "openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access",
    "patient/*.cruds", "patient/*.rs", "user/*.cruds", "user/*.rs", "system/*.rs", "system/*.cruds",
    "patient/*.read", "patient/*.write", "user/*.read", "user/*.write", "system/*.read",
]
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
ASSERTION_ALGS = ["RS384", "ES384"]


def endpoints(base: str) -> dict[str, str]:
    auth = f"{base}/auth"
    return {
        "authorization_endpoint": f"{auth}/authorize",
        "token_endpoint": f"{auth}/token",
        "introspection_endpoint": f"{auth}/introspect",
        "revocation_endpoint": f"{auth}/revoke",
        "jwks_uri": f"{auth}/jwks",
        "management_endpoint": f"{auth}/manage",
    }


def smart_configuration(base: str) -> dict:
    return {
        "issuer": base,
        **endpoints(base),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def openid_configuration(base: str) -> dict:
    ends = endpoints(base)
    return {
        "issuer": base,
        "authorization_endpoint": ends["authorization_endpoint"],
        "token_endpoint": ends["token_endpoint"],
        "jwks_uri": ends["jwks_uri"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "scopes_supported": ["openid", "fhirUser", "profile", "offline_access"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
    }


def capability_security(base: str) -> dict:
    """CapabilityStatement.rest.security (R4 extension-oauth-uris, SMART conformance.html)."""
    ends = endpoints(base)
    return {
        "cors": True,
        "service": [{
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
        }],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": ends["authorization_endpoint"]},
                {"url": "token", "valueUri": ends["token_endpoint"]},
                {"url": "introspect", "valueUri": ends["introspection_endpoint"]},
                {"url": "revoke", "valueUri": ends["revocation_endpoint"]},
                {"url": "manage", "valueUri": ends["management_endpoint"]},
            ],
        }],
        "description": "SMART App Launch 2.2 (scopes v1 and v2) and SMART Backend Services; "
                       "see .well-known/smart-configuration",
    }


SMART_STYLE = {
    "color_background": "#f6f7f9",
    "color_error": "#b00020",
    "color_highlight": "#0b5cad",
    "color_modal_backdrop": "",
    "color_success": "#1e7a34",
    "color_text": "#1b1f24",
    "dim_border_radius": "6px",
    "dim_font_size": "16px",
    "dim_spacing_size": "16px",
    "font_family_body": "system-ui, sans-serif",
    "font_family_heading": "system-ui, sans-serif",
}

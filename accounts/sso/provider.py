"""allauth's OpenID Connect provider as the portal runs it (its `provider_class` in settings).

Two differences, both stricter:

- allauth skips the ID token's signature when it fetched the token from the token endpoint
  itself (OpenID Connect allows that over TLS). The portal always checks it against the
  provider's published keys, with the issuer, audience and expiry: a provider reached over
  plain http on a LAN, or a proxy between, cannot hand the portal a token it made up.
- `email_verified` counts only when it is true (rules.is_true): a provider sending the string
  "false" does not get its email linked to an existing account.

Its views (login, callback) are the portal's (`accounts/sso/views.py`), so that they use this
adapter; allauth builds the URLs from this package (`package`).
"""

from __future__ import annotations

from allauth.socialaccount.internal import jwtkit
from allauth.socialaccount.providers.openid_connect.provider import OpenIDConnectProvider
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter

from accounts.sso import rules


class VerifyingOAuth2Adapter(OpenIDConnectOAuth2Adapter):
    def _decode_id_token(self, app, id_token: str) -> dict:
        return jwtkit.verify_and_decode(
            credential=id_token,
            keys_url=self.openid_config["jwks_uri"],
            issuer=self.openid_config["issuer"],
            audience=app.client_id,
            lookup_kid=jwtkit.lookup_kid_jwk,
            verify_signature=True,
        )


class PortalOpenIDConnectProvider(OpenIDConnectProvider):
    package = "accounts.sso"
    oauth2_adapter_class = VerifyingOAuth2Adapter

    def extract_email_addresses(self, data):
        addresses = super().extract_email_addresses(data)
        claims = rules.claims_of(data)
        for address in addresses:
            address.verified = rules.is_true(claims.get("email_verified"))
        return addresses

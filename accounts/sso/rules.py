"""What a provider's claims mean for the portal: pure functions of the claims and the settings.

- `claims_of(data)`: the claims of one sign-in, the ID token's over the userinfo answer's.
- `refusal(claims)`: why the claims cannot sign anyone in (no email, a malformed one, an
  `email_verified` or a claim of the wrong type), else "".
- `approval_reason(claims)`: why a first sign-in is approved at once (a verified email in an
  allowed domain, a claim value that approves), else "": pending, as everyone.
- `group_names(claims)`: the groups the claim names, when groups follow the claim.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

# A claim with more values than this is not a list of groups the portal should read.
MAX_CLAIM_VALUES = 200


def claims_of(data: dict) -> dict:
    """allauth keeps a sign-in's data as {"userinfo": …, "id_token": …}; the ID token wins."""
    userinfo = data.get("userinfo") if isinstance(data.get("userinfo"), dict) else {}
    id_token = data.get("id_token") if isinstance(data.get("id_token"), dict) else {}
    return {**userinfo, **id_token} if (userinfo or id_token) else dict(data)


def is_true(value: object) -> bool:
    """`email_verified` as OpenID Connect defines it: the boolean true. Some providers send the
    string "true"; anything else ("false", 1, "yes") is not a verification."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def claim_values(claims: dict) -> list[str] | None:
    """The configured claim as a list of strings ([] when absent); None when malformed."""
    if not settings.OIDC_CLAIM:
        return []
    value = claims.get(settings.OIDC_CLAIM)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > MAX_CLAIM_VALUES:
        return None
    if not all(isinstance(item, str) and 0 < len(item) <= 150 for item in value):
        return None
    return value


def refusal(claims: dict, provider: str) -> str:
    email = claims.get("email")
    if not email:
        return (
            f"{provider} did not send an email address, and the portal signs people in by their "
            "email. Ask the provider's admin to release the email claim (scope email) to the "
            "portal."
        )
    try:
        if not isinstance(email, str) or len(email) > 254:
            raise ValidationError("not an email")
        validate_email(email)
    except ValidationError:
        return f"{provider} sent an email address the portal cannot use ({str(email)[:80]!r})."
    verified = claims.get("email_verified")
    if verified is not None and not isinstance(verified, (bool, str)):
        return f"{provider} sent an email_verified claim that is neither true nor false."
    if claim_values(claims) is None:
        return (
            f"{provider} sent a {settings.OIDC_CLAIM!r} claim that is not a list of names "
            f"(at most {MAX_CLAIM_VALUES}, each up to 150 characters). Ask the provider's admin."
        )
    return ""


def approval_reason(claims: dict) -> str:
    email = str(claims.get("email", ""))
    domain = email.rpartition("@")[2].lower()
    if domain and domain in settings.OIDC_APPROVE_DOMAINS and is_true(claims.get("email_verified")):
        return f"the email domain {domain} is allowed"
    matching = sorted(set(claim_values(claims) or []) & set(settings.OIDC_APPROVE_VALUES))
    if matching:
        return f"the {settings.OIDC_CLAIM} claim holds {matching[0]}"
    return ""


def group_names(claims: dict) -> list[str] | None:
    """The group names the claim gives, or None when groups do not follow the claim."""
    if not settings.OIDC_GROUPS_FROM_CLAIM:
        return None
    return sorted(set(claim_values(claims) or []))

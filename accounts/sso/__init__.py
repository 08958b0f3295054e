"""Single sign-on through OpenID Connect providers (django-allauth's `openid_connect`), configured
from the environment (config/settings.py, docs/accounts.md "Single sign-on").

- `provider.py`: allauth's OpenID Connect provider, with the ID token's signature always
  checked and the `email_verified` claim read strictly; its sign-in views (`views.py`, `urls.py`).
- `adapter.py`: who a sign-in becomes: the approval rules, linking by verified email, refusals.
- `rules.py`: what the claims mean (pure functions of the claims and the settings).
"""

"""The sign-in views of the OpenID Connect providers: allauth's, with the verifying adapter.
Open to everyone (`@public`): they are how people sign in."""

from __future__ import annotations

from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.oauth2.views import OAuth2CallbackView, OAuth2LoginView
from django.http import Http404, HttpRequest, HttpResponse

from accounts.access import public
from accounts.sso.provider import VerifyingOAuth2Adapter


@public
def login(request: HttpRequest, provider_id: str) -> HttpResponse:
    """POST: off to the provider (a GET shows allauth's "continue" page)."""
    try:
        return OAuth2LoginView.adapter_view(VerifyingOAuth2Adapter(request, provider_id))(request)
    except SocialApp.DoesNotExist:
        raise Http404("No such sign-in provider.") from None


@public
def callback(request: HttpRequest, provider_id: str) -> HttpResponse:
    """Where the provider sends the browser back with a code: the token is fetched and checked."""
    try:
        view = OAuth2CallbackView.adapter_view(VerifyingOAuth2Adapter(request, provider_id))
        return view(request)
    except SocialApp.DoesNotExist:
        raise Http404("No such sign-in provider.") from None

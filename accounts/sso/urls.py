"""The OpenID Connect providers' URLs (allauth includes them under /accounts/): the names are
allauth's, the views the portal's (accounts/sso/views.py)."""

from django.urls import path

from accounts.sso import views

urlpatterns = [
    path("oidc/<str:provider_id>/login/", views.login, name="openid_connect_login"),
    path("oidc/<str:provider_id>/login/callback/", views.callback, name="openid_connect_callback"),
]

"""The OpenAI-compatible gateway, mounted at /v1/ (API keys, see accounts/middleware.py)."""

from django.urls import path, re_path

from servers import api_views

app_name = "v1"

urlpatterns = [
    path("models", api_views.models, name="models"),
    path("chat/completions", api_views.chat_completions, name="chat-completions"),
    path("completions", api_views.text_completions, name="completions"),
    # Public (accounts/access.py): the description holds no secret, and clients read it first.
    path("openapi.json", api_views.openapi_description, name="openapi"),
    re_path(r"^(?P<rest>.*)$", api_views.not_found, name="not-found"),
]

"""The OpenAI-compatible gateway, mounted at /v1/ (API keys: servers/gateway/auth.py)."""

from django.urls import path, re_path

from servers.gateway import views

app_name = "v1"

urlpatterns = [
    path("models", views.models, name="models"),
    path("chat/completions", views.chat_completions, name="chat-completions"),
    path("completions", views.text_completions, name="completions"),
    path("embeddings", views.embeddings, name="embeddings"),
    path("audio/transcriptions", views.audio_transcriptions, name="audio-transcriptions"),
    # Public: the description holds no secret, and clients read it first.
    path("openapi.json", views.openapi_description, name="openapi"),
    re_path(r"^(?P<rest>.*)$", views.not_found, name="not-found"),
]

"""The OpenAI-compatible gateway, mounted at /v1/ (API keys: servers/gateway/auth.py)."""

from django.urls import path, re_path

from servers.gateway import views

app_name = "v1"

urlpatterns = [
    path("models", views.models, name="models"),
    # Ids may hold "/" (route names do).
    path("models/<path:model>", views.model_detail, name="model"),
    path("chat/completions", views.chat_completions, name="chat-completions"),
    path("completions", views.text_completions, name="completions"),
    path("embeddings", views.embeddings, name="embeddings"),
    path("audio/transcriptions", views.audio_transcriptions, name="audio-transcriptions"),
    path("messages", views.messages, name="messages"),
    path("messages/count_tokens", views.count_tokens, name="count-tokens"),
    path("responses", views.responses, name="responses"),
    # Public: the description holds no secret, and clients read it first.
    path("openapi.json", views.openapi_description, name="openapi"),
    # Any rest, line breaks included: a path with %0A in it (schemathesis sent one to
    # models/{model}) matched nothing here and got the pages' login redirect, not a 401 or 404.
    re_path(r"^(?P<rest>(?s:.*))\Z", views.not_found, name="not-found"),
]

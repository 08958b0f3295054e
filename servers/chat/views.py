"""The chat page: pick a server, talk to it (a streamed reply), keep conversations.

Only the owner sees a conversation (others get 404). The reply streams from `chat-stream`
(a session-authenticated, CSRF-protected POST read by static/js/chat.js), through the
gateway's calls as any `/v1` request (servers/chat/replies.py).
"""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from servers.chat.forms import ChatMessageForm, RenameForm
from servers.chat.replies import Params, stream_reply, title_from
from servers.gateway.relay import STREAM_HEADERS
from servers.gateway.transport import client_socket
from servers.models import Conversation, Message, ServerProfile, State


def _profiles(user):
    """The servers `user` may talk to (servers.models.may_see)."""
    return (
        ServerProfile.objects.visible_to(user).select_related("instance", "host").order_by("name")
    )


def _pick(profiles, slug: str | None, conversation: Conversation | None):
    by_slug = {p.slug: p for p in profiles}
    if slug in by_slug:
        return by_slug[slug]
    if conversation and conversation.profile_id:
        for profile in profiles:
            if profile.pk == conversation.profile_id:
                return profile
    running = [
        p for p in profiles if getattr(p, "instance", None) and p.instance.state == State.RUNNING
    ]
    return (running or list(profiles) or [None])[0]


def chat(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """The chat page (a new chat, or conversation `pk`); HTMX asks for the server panel."""
    conversation = None
    if pk is not None:
        conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    profiles = list(_profiles(request.user))
    profile = _pick(profiles, request.GET.get("profile"), conversation)
    context = {
        "conversation": conversation,
        "conversations": Conversation.objects.filter(user=request.user)[:100],
        "chat_messages": conversation.messages.all() if conversation else [],
        "profiles": profiles,
        "profile": profile,
        "instance": getattr(profile, "instance", None) if profile else None,
    }
    if request.htmx and request.htmx.target == "server-panel":
        return render(request, "servers/chat.html#server-panel", context)
    return render(request, "servers/chat.html", context)


@require_POST
def chat_stream(request: HttpRequest) -> HttpResponse:
    """Send a message (or retry) and stream the reply as server-sent events."""
    form = ChatMessageForm(request.POST, request.FILES, user=request.user)
    if not form.is_valid():
        return JsonResponse({"error": form.first_error()}, status=400)
    data = form.cleaned_data
    profile = data["profile"]
    with transaction.atomic():
        conversation = data["conversation"]
        if conversation is None:
            conversation = Conversation.objects.create(
                user=request.user, profile=profile, title=title_from(data["message"] or
                                                                    data["files"][0]["name"])
            )  # fmt: skip
        elif conversation.profile_id != profile.pk:
            conversation.profile = profile
            conversation.save(update_fields=["profile", "updated_at"])
        if data["retry"]:
            # Drop the interrupted answer (if any); the conversation must end with the question.
            last = conversation.messages.last()
            while last and last.role == Message.Role.ASSISTANT and last.status != Message.Status.OK:
                last.delete()
                last = conversation.messages.last()
            if last is None or last.role != Message.Role.USER:
                return JsonResponse(
                    {"error": "There is no unanswered message to retry."}, status=400
                )
        else:
            Message.objects.create(
                conversation=conversation,
                role=Message.Role.USER,
                content=data["message"],
                attachments=data["files"],
                temperature=data["temperature"],
                max_tokens=data["max_tokens"],
            )
    params = Params(temperature=data["temperature"], max_tokens=data["max_tokens"])
    stream = stream_reply(request.user, conversation, profile, params, client_socket(request))
    return StreamingHttpResponse(stream, content_type="text/event-stream", headers=STREAM_HEADERS)


@require_POST
def conversation_rename(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    form = RenameForm(request.POST, instance=conversation)
    if form.is_valid():
        form.save()
        messages.success(request, f"Renamed to “{conversation.title}”.")
    else:
        messages.error(request, form.errors["title"][0])
    return redirect(conversation)


@require_POST
def conversation_delete(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    title = conversation.title
    conversation.delete()
    messages.success(request, f"Deleted “{title}”.")
    return redirect("servers:chat")

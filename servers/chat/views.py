"""The chat page: pick a server, talk to it (a streamed reply), keep conversations.

Only the owner sees a conversation (others get 404). The reply streams from `chat-stream`
(a session-authenticated, CSRF-protected POST read by static/js/chat.js), through the
gateway's calls as any `/v1` request (servers/chat/replies.py); what a send stores, the
search and the exports are servers/chat/conversations.py.
"""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from servers.chat import conversations
from servers.chat.forms import (
    ROUTE_PREFIX,
    ChatMessageForm,
    ConversationSettingsForm,
    RenameForm,
    SearchForm,
    ShownForm,
    first_error,
    members_for_turn,
    route_target,
)
from servers.chat.render import render_markdown
from servers.chat.replies import keep_only_shown, stream_reply
from servers.gateway import images
from servers.gateway.relay import STREAM_HEADERS
from servers.gateway.transport import client_socket
from servers.models import Conversation, Engine, MessageImage, Route, ServerProfile, State

IMAGE_LIMITS = {
    "per_message": images.MAX_IMAGES_PER_MESSAGE,
    "bytes": images.MAX_IMAGE_BYTES,
    "size": images.size_text(images.MAX_IMAGE_BYTES),
}
# A page shows thumbnails: the images' own bytes stay in the database.
_IMAGES_SHOWN = Prefetch("images", queryset=MessageImage.objects.defer("data", "thumbnail"))


def _profiles(user):
    """The servers `user` may talk to (servers.models.may_see) that chat (`for_chat`)."""
    return (
        ServerProfile.objects.visible_to(user)
        .for_chat()
        .select_related("instance", "host")
        .order_by("name")
    )


def _routes(profiles: list[ServerProfile]) -> list[Route]:
    """The routes with a member among `profiles` (the servers the user may talk to that chat:
    `_profiles`), for the picker: a route of only embeddings or speech-to-text servers, or of
    servers of groups the user is not in, is not offered. One query, however many routes."""
    return list(
        Route.objects.filter(members__profile__in=[p.pk for p in profiles])
        .distinct()
        .order_by("name")
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
    """The chat page (a new chat, or conversation `pk`); HTMX asks for the server panel (a
    server picked) or the conversation list (a search)."""
    conversation = None
    if pk is not None:
        conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    search = SearchForm(request.GET)
    query = search.cleaned_data["q"] if search.is_valid() else ""
    context = {
        "conversation": conversation,
        "conversations": conversations.listed(request.user, query),
        "search": search,
        "query": query,
    }
    if request.htmx and request.htmx.target == "conversation-list":
        return render(request, "servers/chat.html#conversation-list", context)
    profiles = list(_profiles(request.user))
    chat_messages = (
        list(conversation.messages.prefetch_related(_IMAGES_SHOWN)) if conversation else []
    )
    for message in chat_messages:  # a user message stored before they were rendered
        if not message.html and message.content:
            message.html = render_markdown(message.content)
    held = sum(len(message.images.all()) for message in chat_messages)  # read with them
    picked = request.GET.get("profile") or ""
    route = route_target(picked, request.user) if picked.startswith(ROUTE_PREFIX) else None
    # A route: the member it would send a message to now (a vision one for images held).
    profile = (
        members_for_turn(route.profiles, held > 0)[0]
        if route is not None
        else _pick(profiles, picked, conversation)
    )
    context |= {
        "image_limits": IMAGE_LIMITS,
        "chat_messages": chat_messages,
        "profiles": profiles,
        "profile": profile,
        "routes": _routes(profiles),
        "route": route.route if route is not None else None,
        "instance": getattr(profile, "instance", None) if profile else None,
        # A text server gets the conversation's images named, not shown: the panel says so.
        "images_unseen": held if profile is not None and profile.engine != Engine.VISION else 0,
        "settings_form": ConversationSettingsForm(instance=conversation, profile=profile),
    }
    if request.htmx and request.htmx.target == "server-panel":
        return render(request, "servers/chat.html#server-panel", context)
    return render(request, "servers/chat.html", context)


@require_POST
def chat_stream(request: HttpRequest) -> HttpResponse:
    """Send a message (or retry, regenerate, edit) and stream the reply as server-sent events."""
    form = ChatMessageForm(request.POST, request.FILES, user=request.user)
    valid = form.is_valid()
    profile = form.cleaned_data.get("profile") if valid else None
    settings_form = ConversationSettingsForm(request.POST, profile=profile)
    if not (valid and settings_form.is_valid()):
        return JsonResponse({"error": first_error(form, settings_form)}, status=400)
    try:
        turn = conversations.begin_turn(
            request.user, profile, form.cleaned_data, settings_form.values
        )
    except conversations.NothingToAnswer as refusal:
        return JsonResponse({"error": str(refusal)}, status=400)
    route = form.route.name if form.route is not None else ""
    stream = stream_reply(
        request.user, turn, profile, client_socket(request), route=route, others=form.others
    )
    return StreamingHttpResponse(stream, content_type="text/event-stream", headers=STREAM_HEADERS)


@require_POST
def conversation_settings(request: HttpRequest, pk: int) -> HttpResponse:
    """Save a conversation's settings (the settings panel's Save), in place."""
    conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    profile = conversation.profile
    form = ConversationSettingsForm(request.POST, instance=conversation, profile=profile)
    saved = form.is_valid()
    if saved:
        form.save_settings()
    context = {"settings_form": form, "conversation": conversation, "profile": profile,
               "settings_saved": saved}  # fmt: skip
    if request.htmx:
        return render(request, "servers/chat.html#settings", context, status=200 if saved else 400)
    if saved:
        messages.success(request, "Settings saved.")
    else:
        messages.error(request, first_error(form))
    return redirect(conversation)


@require_POST
def conversation_rename(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    form = RenameForm(request.POST, instance=conversation)
    if form.is_valid():
        form.rename()
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


EXPORTS = {
    "md": (conversations.as_markdown, "text/markdown; charset=utf-8"),
    "json": (conversations.as_json, "application/json"),
}


def conversation_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The conversation as a Markdown or JSON download (the owner's only)."""
    conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    write, content_type = EXPORTS[fmt]
    name = conversations.export_filename(conversation, fmt)
    return HttpResponse(
        write(conversation),
        content_type=content_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def message_image(request: HttpRequest, pk: int, full: bool = False) -> HttpResponse:
    """An image of a chat message (its thumbnail, or the image as sent): its conversation's
    owner only, others get 404. Served as the type the portal found it to be, never sniffed."""
    image = get_object_or_404(
        MessageImage.objects.defer("thumbnail" if full else "data"),
        pk=pk,
        message__conversation__user=request.user,
    )
    data, media_type = (
        (image.data, image.media_type) if full else (image.thumbnail, image.thumbnail_type)
    )
    response = HttpResponse(bytes(data), content_type=media_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    response["Content-Disposition"] = "inline"
    return response


@require_POST
def conversation_stopped(request: HttpRequest, pk: int) -> HttpResponse:
    """Stop: the page says how much of the reply it showed; the stopped answer keeps no more."""
    conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    form = ShownForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"error": "Send content_chars and reasoning_chars as whole numbers."},
                            status=400)  # fmt: skip
    keep_only_shown(conversation, form.cleaned_data["content_chars"],
                    form.cleaned_data["reasoning_chars"])  # fmt: skip
    return HttpResponse(status=204)

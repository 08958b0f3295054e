"""What the chat does to stored conversations: a turn begun (a new message, a regenerated
answer, or an earlier message edited and sent again), the list searched, a conversation
exported as Markdown or JSON. Only the owner's conversations reach here (the views look them
up with `user=`). See docs/chat.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.text import slugify

from servers.chat.attachments import with_attachments
from servers.chat.render import render_markdown
from servers.models import Conversation, Message, MessageImage, ServerProfile

CONVERSATIONS_LISTED = 100


def title_from(text: str, limit: int = 60) -> str:
    """A conversation title from its first message (pure)."""
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    if not line:
        return "New chat"
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class NothingToAnswer(Exception):
    """A retry of a conversation that does not end with a question."""


@dataclass(frozen=True)
class Turn:
    conversation: Conversation
    question: Message  # the message the reply answers (new, edited, or asked again)
    replaced: int = 0  # later messages an edit or a regenerate removed


def _after(message: Message) -> QuerySet[Message]:
    """The messages that come after `message` in its conversation (Message.Meta.ordering)."""
    return Message.objects.filter(conversation_id=message.conversation_id).filter(
        Q(created_at__gt=message.created_at) | Q(created_at=message.created_at, pk__gt=message.pk)
    )


def holds_images(conversation: Conversation, edited: Message | None = None) -> bool:
    """Whether the history a turn of `conversation` sends holds images: any message's, or for an
    edit of `edited`, those up to it (the later messages are deleted). One query."""
    images = MessageImage.objects.filter(message__conversation=conversation)
    if edited is not None:
        images = images.exclude(message__in=_after(edited))
    return images.exists()


def begin_turn(user, profile: ServerProfile, data: dict, settings: dict) -> Turn:
    """Store what sending changes, in one transaction: the conversation (new, with its
    `settings`, or this one with them), then its question — a new message; an earlier message
    edited (`data["edit"]`: its text replaced, every later message deleted and counted on it);
    or, for a retry or a regenerate, the last question again (the answers after it deleted).
    Raises NothingToAnswer when a retry finds no question."""
    with transaction.atomic():
        conversation = data["conversation"]
        if conversation is None:
            names = [f["name"] for f in data["files"]] + [i.name for i in data.get("images", ())]
            first = data["message"] or names[0]
            conversation = Conversation.objects.create(
                user=user, profile=profile, title=title_from(first), **settings
            )
        else:
            changes = {**settings, "profile": profile}
            Conversation.objects.filter(pk=conversation.pk).update(**changes)
            for name, value in changes.items():
                setattr(conversation, name, value)
        if data["retry"]:
            question = conversation.messages.filter(role=Message.Role.USER).last()
            if question is None:
                raise NothingToAnswer("There is no unanswered message to retry.")
            replaced, _ = _after(question).delete()
            return Turn(conversation, question, replaced)
        if data["edit"] is not None:
            question = data["edit"]
            replaced, _ = _after(question).delete()
            question.content = data["message"]
            question.html = render_markdown(question.content)
            question.edited_at = timezone.now()
            question.replaced = replaced
            question.temperature = conversation.temperature
            question.max_tokens = conversation.max_tokens
            question.save()
            return Turn(conversation, question, replaced)
        question = Message.objects.create(
            conversation=conversation,
            role=Message.Role.USER,
            content=data["message"],
            html=render_markdown(data["message"]),
            attachments=data["files"],
            temperature=conversation.temperature,
            max_tokens=conversation.max_tokens,
        )
        MessageImage.objects.bulk_create(
            MessageImage(message=question, **image.fields) for image in data.get("images", ())
        )
        return Turn(conversation, question)


def listed(user, query: str = "") -> QuerySet[Conversation]:
    """The sidebar: the user's conversations, latest first; with `query`, those whose title or
    any message holds it (case-insensitive)."""
    conversations = Conversation.objects.filter(user=user)
    if query:
        matching = Message.objects.filter(conversation__user=user, content__icontains=query)
        conversations = conversations.filter(
            Q(title__icontains=query) | Q(pk__in=matching.values("conversation_id"))
        )
    return conversations[:CONVERSATIONS_LISTED]


# --- export ------------------------------------------------------------------------------------


def export_filename(conversation: Conversation, extension: str) -> str:
    """A file name any system accepts: the title's slug (ASCII letters, digits, dashes)."""
    stem = slugify(conversation.title)[:60].strip("-") or "conversation"
    return f"{stem}-{conversation.pk}.{extension}"


def _speed(message: Message) -> dict:
    return {
        "ttft_ms": message.ttft_ms,
        "tokens_per_second": message.tokens_per_second,
        "completion_tokens": message.completion_tokens,
    }


def as_json(conversation: Conversation) -> str:
    """The conversation as JSON: its settings and every message (attachments with their text,
    images named with their size, not their bytes); `messages` reads as OpenAI's role/content
    list."""
    profile = conversation.profile
    messages = []
    for message in conversation.messages.all():
        item: dict = {
            "role": message.role,
            "content": message.content,
            "created_at": message.created_at.isoformat(),
        }
        if message.role == Message.Role.USER:
            item["attachments"] = message.attachments
            item["images"] = [
                {"name": i.name, "media_type": i.media_type, "width": i.width,
                 "height": i.height, "bytes": i.size}
                for i in message.images.all()
            ]  # fmt: skip
            if message.edited_at:
                item["edited_at"] = message.edited_at.isoformat()
        else:
            item.update(reasoning=message.reasoning, status=message.status, **_speed(message))
        messages.append(item)
    data = {
        "title": conversation.title,
        "created_at": conversation.created_at.isoformat(),
        "server": profile.name if profile else None,
        "model": profile.model_id if profile else None,
        "settings": {
            "system_prompt": conversation.system_prompt,
            "temperature": conversation.temperature,
            "max_tokens": conversation.max_tokens,
        },
        "messages": messages,
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def as_markdown(conversation: Conversation) -> str:
    """The conversation as a Markdown document: a heading per turn, files in fenced blocks,
    each attached image named."""
    profile = conversation.profile
    lines = [f"# {conversation.title}", ""]
    if profile:
        lines.append(f"- Server: {profile.name} (`{profile.model_id}`)")
    lines.append(f"- Started: {conversation.created_at:%Y-%m-%d %H:%M} UTC")
    if conversation.temperature is not None:
        lines.append(f"- Temperature: {conversation.temperature:g}")
    if conversation.max_tokens is not None:
        lines.append(f"- Max tokens: {conversation.max_tokens}")
    if conversation.system_prompt:
        lines += ["", "## System prompt", "", conversation.system_prompt]
    for message in conversation.messages.all():
        if message.role == Message.Role.USER:
            lines += ["", "## You", "", with_attachments(message.content, message.attachments)]
            lines += [
                f"*(Image attached: {i.name}, {i.width}x{i.height}, {i.media_type})*"
                for i in message.images.all()
            ]
            continue
        lines += ["", "## Assistant", ""]
        if message.reasoning:
            lines += [*(f"> {line}".rstrip() for line in message.reasoning.splitlines()), ""]
        lines.append(message.content)
        if message.status != Message.Status.OK:
            lines += ["", f"*({message.get_status_display()})*"]
    return "\n".join(lines).rstrip() + "\n"

"""The chat page's logic: messages for the model, attachments, thinking, safe rendering, and the
stream of one reply (through the same `servers.completions` path as the gateway).

Model output is untrusted: while it streams, the browser inserts it as text only; once complete
it is rendered here, server-side — markdown-it with raw HTML off, then nh3 sanitising — and
stored. See docs/chat.md.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import nh3
from charset_normalizer import from_bytes
from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from markdown_it import MarkdownIt

from servers import completions
from servers.gateway import ClientGone, GatewayError, has_token, sse
from servers.models import Conversation, Message, ServerProfile, UsageRecord
from servers.usage import Caller

# --- rendering ---------------------------------------------------------------------------------

_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(
    ["table", "strikethrough"]
)
_ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code",
    "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
# A cell's class: only the alignments below (nh3's allowed_classes).
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "ol": {"start"}}
_ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
# markdown-it aligns table cells with a style attribute, which the Content-Security-Policy
# (style-src 'self') refuses: a class of static/css/chat.css does it instead.
_CELL_ALIGN = re.compile(r'(<t[hd]) style="text-align:(left|center|right)"')


def render_markdown(text: str) -> str:
    """Safe HTML for a model's (or anyone's) markdown: no raw HTML, no scripts, no handlers,
    no style attributes."""
    html = _CELL_ALIGN.sub(r'\1 class="align-\2"', _markdown.render(text or ""))
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        allowed_classes={"th": _ALIGN_CLASSES, "td": _ALIGN_CLASSES},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


_THINK = re.compile(r"^\s*<think>(.*?)(?:</think>|$)(.*)$", re.DOTALL)


def split_thinking(content: str) -> tuple[str, str]:
    """(reasoning, answer) of a reply whose content may start with `<think>…</think>` (pure).
    An unclosed `<think>` (a reply stopped while thinking) is all reasoning."""
    match = _THINK.match(content or "")
    if not match:
        return "", content or ""
    return match.group(1).strip(), match.group(2).lstrip()


def title_from(text: str, limit: int = 60) -> str:
    """A conversation title from its first message (pure)."""
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    if not line:
        return "New chat"
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


# --- attachments --------------------------------------------------------------------------------

MEDIA_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".svg", ".ico",
    ".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mp3", ".wav", ".m4a", ".flac", ".ogg",
}  # fmt: skip


def is_media(name: str, content_type: str | None) -> bool:
    kind = (content_type or "").split("/", 1)[0]
    return (
        kind in {"image", "video", "audio"} or PurePosixPath(name).suffix.lower() in MEDIA_SUFFIXES
    )


def read_attachment(name: str, data: bytes, content_type: str | None = None) -> dict:
    """A text attachment as stored and sent: {"name", "size", "text"}; ValidationError says why
    a file cannot be attached (pure)."""
    name = PurePosixPath(name or "file").name[:120]
    if is_media(name, content_type):
        raise ValidationError(
            f"“{name}” is an image, audio or video file: that needs a vision-capable server "
            "(mlx-vlm), not supported yet. Attach text files (code, logs, READMEs)."
        )
    limit = settings.CHAT_ATTACHMENT_MAX_BYTES
    if len(data) > limit:
        raise ValidationError(
            f"“{name}” is {filesizeformat(len(data))}; attachments can be at most "
            f"{filesizeformat(limit)}. Attach a smaller excerpt."
        )
    if not data:
        raise ValidationError(f"“{name}” is empty: there is nothing in it to send.")
    text = decode_text(data)
    if text is None:
        raise ValidationError(
            f"“{name}” is not a text file (it reads as no known text encoding, or it holds "
            "binary data). Attach code, logs or other text."
        )
    return {"name": name, "size": len(data), "text": text}


#: Tried, in order, when a file is not UTF-8: Western encodings first (a short file that is
#: not UTF-8 is far more often a Windows or Latin-1 log than anything else), then any.
_WESTERN_ENCODINGS = ["utf_16", "utf_32", "cp1252", "latin_1"]


def decode_text(data: bytes) -> str | None:
    """The text of a file as a person would read it: UTF-8 (with or without a BOM), else the
    encoding charset-normalizer finds; None for binary data (pure)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        best = from_bytes(data, cp_isolation=_WESTERN_ENCODINGS).best() or from_bytes(data).best()
        text = str(best) if best is not None else None
    if text is None or "\x00" in text:
        return None
    return text


def with_attachments(text: str, attachments: list[dict]) -> str:
    """The user's text followed by each attached file in a fenced block (pure)."""
    parts = [text] if text else []
    for attachment in attachments:
        body = attachment["text"]
        longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
        fence = "`" * max(3, longest + 1)
        parts.append(f"File: {attachment['name']}\n{fence}\n{body.rstrip()}\n{fence}")
    return "\n\n".join(parts)


# --- the conversation sent to the model ------------------------------------------------------


def build_messages(conversation: Conversation, profile: ServerProfile) -> list[dict]:
    """The profile's system prompt, then every user turn and every answer (without its
    reasoning, as chat templates expect)."""
    messages = []
    if profile.system_prompt.strip():
        messages.append({"role": "system", "content": profile.system_prompt})
    for message in conversation.messages.all():
        if message.role == Message.Role.USER:
            content = with_attachments(message.content, message.attachments)
            messages.append({"role": "user", "content": content})
        elif message.content:
            messages.append({"role": "assistant", "content": message.content})
    return messages


@dataclass(frozen=True)
class Params:
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass
class Reply:
    """An answer as it streams in, with the timing of its thinking."""

    content: str = ""
    reasoning: str = ""
    thinking_started: float | None = None
    thinking_ended: float | None = None

    def add(self, chunk: dict) -> None:
        now = time.monotonic()
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            thought = delta.get("reasoning") or delta.get("reasoning_content") or ""
            text = delta.get("content") or ""
            if thought:
                self.reasoning += thought
                self.thinking_started = self.thinking_started or now
            if text:
                if "<think>" in text and self.thinking_started is None:
                    self.thinking_started = now
                self.content += text
                thought_done = self.reasoning or "</think>" in self.content
                if self.thinking_started and self.thinking_ended is None and thought_done:
                    self.thinking_ended = now

    def finished(self) -> tuple[str, str, float | None]:
        """(answer, reasoning, thought seconds)."""
        reasoning, answer = self.reasoning, self.content
        if not reasoning:
            reasoning, answer = split_thinking(self.content)
        seconds = None
        if reasoning and self.thinking_started is not None:
            seconds = (self.thinking_ended or time.monotonic()) - self.thinking_started
        return answer, reasoning, seconds


def _save_answer(conversation: Conversation, reply: Reply, status: str, params: Params) -> Message:
    answer, reasoning, seconds = reply.finished()
    message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content=answer,
        reasoning=reasoning,
        thought_seconds=seconds,
        html=render_markdown(answer),
        status=status,
        temperature=params.temperature,
        max_tokens=params.max_tokens,
    )
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=message.created_at)
    return message


def stream_reply(
    user,
    conversation: Conversation,
    profile: ServerProfile,
    params: Params,
    client_socket: socket.socket | None = None,
) -> Iterator[bytes]:
    """Server-sent events for the chat page: `meta`, maybe `status` (starting), the model's
    chunks as they come (OpenAI's shape), then `done` with the stored, rendered answer — or
    `error` with a message and a retry. The answer so far is saved even when the browser stops
    reading (the Stop button) or the server dies.

    `client_socket` (the browser's connection, when the web server gives it) is watched while
    the server is silent — reading a long prompt sends the browser nothing — so Stop or a
    closed tab ends the request upstream at once, as on the API."""
    from django.template.loader import render_to_string

    yield sse(
        {"conversation": conversation.pk, "url": conversation.get_absolute_url(),
         "title": conversation.title},
        "meta",
    )  # fmt: skip
    if not completions.is_ready(profile):
        if not profile.allow_on_demand:
            state = profile.get_instance().state
            yield sse({"message": f"Server '{profile.name}' is {state}; start it on the Servers "
                       "page.", "retry": True}, "error")  # fmt: skip
            return
        yield sse({"state": "starting", "message": f"Starting {profile.name}…"}, "status")
    body = {
        "model": profile.slug,
        "messages": build_messages(conversation, profile),
        "stream": True,
    }
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    caller = Caller(user, UsageRecord.Source.CHAT)
    try:
        relay, _ = completions.start(
            caller, profile, "chat/completions", body, client_socket=client_socket
        )
    except GatewayError as error:
        yield sse({"message": error.message, "retry": True}, "error")
        return
    except ClientGone:
        return
    reply = Reply()
    status = UsageRecord.Status.CANCELLED
    saved = None
    try:
        for event in relay.events():
            if event.data is None or not event.data.get("choices"):
                continue  # keep-alives, the usage chunk and [DONE] stay on this side
            if has_token(event.data):
                reply.add(event.data)
                yield event.raw
        status = UsageRecord.Status.OK
        saved = _save_answer(conversation, reply, Message.Status.OK, params)
        html = render_to_string("servers/chat.html#message", {"message": saved})
        yield sse({"message": saved.pk, "html": html}, "done")
    except GatewayError as error:
        relay.measure.fail(error)
        status = UsageRecord.Status.ERROR
        if reply.content or reply.reasoning:
            saved = _save_answer(conversation, reply, Message.Status.ERROR, params)
        yield sse({"message": error.message, "retry": True}, "error")
    except ClientGone:
        pass  # Stop, or a closed tab: cancelled; what came so far is saved below
    finally:
        relay.close(status)
        if saved is None and (reply.content or reply.reasoning):
            _save_answer(conversation, reply, Message.Status.STOPPED, params)

"""Files attached to a chat message: text only (code, logs, README-style files), decoded as a
person would read them, bounded in size, and sent inline after the message."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from charset_normalizer import from_bytes
from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat

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
            f"“{name}” is an image, audio or video file, not text. Attach images with “Attach "
            "images” (for a server with the vision engine); audio and video cannot be sent."
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

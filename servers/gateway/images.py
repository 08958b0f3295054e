"""Images sent to a vision server, checked in the portal before anything reaches it: the one rule,
for the gateway's `image_url` parts and the chat's attachments alike.

An image is accepted only as bytes the portal holds — a `data:` URL (base64) in the API, a file
in the chat — never as a URL to fetch (the portal never fetches a URL for a client). It must be
a PNG, JPEG, WebP or GIF that Pillow decodes whole, of at most MAX_IMAGE_BYTES and
MAX_IMAGE_PIXELS (a small file can claim a huge picture: a decompression bomb is refused from
its header, before any pixel is decoded), and a message or request holds at most
MAX_IMAGES_PER_MESSAGE / MAX_IMAGES_PER_REQUEST of them. Each refusal is an `ImageRefused`
whose message names the limit.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGE_PIXELS = 25_000_000  # e.g. 5000 x 5000
MAX_IMAGES_PER_MESSAGE = 3
MAX_IMAGES_PER_REQUEST = 10

# Pillow's format name -> the media type the image is sent on with.
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
ACCEPTED = "PNG, JPEG, WebP or GIF"
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)"
                       r";base64,", re.IGNORECASE)  # fmt: skip


class ImageRefused(ValueError):
    """An image the portal does not pass on; the message says why and names the limit."""


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    media_type: str  # what the bytes are (image/png, …), whatever the sender said
    width: int
    height: int

    @property
    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"


def size_text(n: int) -> str:
    """A number of bytes as people read it: 5.0 MiB, 300 KiB."""
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{max(1, n // 1024)} KiB"


LIMIT_TEXT = f"{ACCEPTED}, at most {size_text(MAX_IMAGE_BYTES)} and {MAX_IMAGE_PIXELS:,} pixels"


def check_size(size: int, name: str = "The image") -> None:
    """ImageRefused when an image of `size` bytes is over MAX_IMAGE_BYTES (before reading it)."""
    if size > MAX_IMAGE_BYTES:
        raise ImageRefused(
            f"{name} is {size_text(size)}; an image may be at most {size_text(MAX_IMAGE_BYTES)}."
        )


def check_image(data: bytes, name: str = "The image") -> CheckedImage:
    """`data` as a CheckedImage when it is an accepted image that decodes whole, else
    ImageRefused (`name` says which image in the message)."""
    check_size(len(data), name)
    if data[:5].lstrip().startswith((b"<svg", b"<?xml")) or b"<svg" in data[:1024]:
        raise ImageRefused(f"{name} is an SVG drawing, which is not accepted: send {ACCEPTED}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageRefused(
                        f"{name} is {width:,} x {height:,} pixels; an image may have at most "
                        f"{MAX_IMAGE_PIXELS:,} pixels. Scale it down and send it again."
                    )
                media_type = FORMATS[image.format or ""]
                image.load()  # every pixel decoded: a truncated or corrupt file fails here
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefused(
            f"{name} claims a picture of far more than {MAX_IMAGE_PIXELS:,} pixels, the most an "
            "image may have. Scale it down and send it again."
        ) from None
    except UnidentifiedImageError:
        raise ImageRefused(
            f"{name} is not an image the portal can read: send {ACCEPTED}."
        ) from None
    except (OSError, ValueError, SyntaxError, KeyError, EOFError):
        raise ImageRefused(
            f"{name} does not decode (a damaged or incomplete file): send a {ACCEPTED} that "
            "opens in an image viewer."
        ) from None
    return CheckedImage(data, media_type, width, height)


def image_from_url(url: object, name: str = "The image") -> CheckedImage:
    """An `image_url` part's URL as a CheckedImage: only a base64 `data:` URL of an accepted
    image; a remote URL is refused (the portal never fetches one)."""
    if not isinstance(url, str) or not url:
        raise ImageRefused(f"{name} needs a 'url': a data: URL of a {ACCEPTED} image (base64).")
    head = url[:200].lower()
    if head.startswith(("http://", "https://", "ftp://", "file:", "//")) or (
        not head.startswith("data:") and "://" in head
    ):
        raise ImageRefused(
            f"{name} is a link ({url[:60]}…): the portal never fetches URLs for a client. Send "
            f"the image itself as a data: URL (data:image/png;base64,…), {ACCEPTED}."
        )
    match = _DATA_URL.match(url, 0, 300)
    if not match:
        raise ImageRefused(
            f"{name} must be a base64 data: URL like data:image/png;base64,… ({ACCEPTED})."
        )
    declared = (match.group("type") or "").lower()
    if declared == "image/svg+xml":
        raise ImageRefused(f"{name} is an SVG drawing, which is not accepted: send {ACCEPTED}.")
    if declared not in FORMATS.values():
        raise ImageRefused(f"{name} is of type {declared[:40] or 'unknown'}; accepted: {ACCEPTED}.")
    encoded = url[match.end() :]
    # Base64 holds 3 bytes in 4 characters: refuse by the length before decoding anything.
    if len(encoded) * 3 // 4 > MAX_IMAGE_BYTES + 3:
        raise ImageRefused(
            f"{name} is about {size_text(len(encoded) * 3 // 4)}; an image may be at most "
            f"{size_text(MAX_IMAGE_BYTES)}."
        )
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused(f"{name} is not valid base64 after 'base64,'.") from None
    return check_image(data, name)

"""Images attached to a chat message, for a vision server: checked by the one rule
(servers/gateway/images.py), kept with a thumbnail the portal re-encodes for the page, and sent
as OpenAI `image_url` parts with data: URLs."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.core.exceptions import ValidationError
from PIL import Image

from servers.gateway import images

THUMBNAIL_SIDE = 320


@dataclass(frozen=True)
class ChatImage:
    """An attached image, checked, and its thumbnail: the fields of servers.models.MessageImage."""

    name: str
    media_type: str
    width: int
    height: int
    data: bytes
    thumbnail: bytes
    thumbnail_type: str

    @property
    def fields(self) -> dict:
        return dict(self.__dict__)


def read_image(name: str, upload) -> ChatImage:
    """An uploaded image (a Django UploadedFile) as kept and sent; ValidationError names the
    file and the limit. Its size is checked before it is read."""
    name = PurePosixPath(name or "image").name[:120] or "image"
    try:
        images.check_size(upload.size, f"“{name}”")
        checked = images.check_image(upload.read(), f"“{name}”")
    except images.ImageRefused as exc:
        raise ValidationError(str(exc)) from None
    thumbnail, thumbnail_type = make_thumbnail(checked.data)
    return ChatImage(
        name, checked.media_type, checked.width, checked.height, checked.data, thumbnail,
        thumbnail_type,
    )  # fmt: skip


def make_thumbnail(data: bytes) -> tuple[bytes, str]:
    """A re-encoded picture of at most THUMBNAIL_SIDE pixels a side (the first frame of an
    animation): PNG where there is transparency, else JPEG. `data` was checked already."""
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        picture = image.convert("RGBA" if transparent else "RGB")
    out = io.BytesIO()
    if transparent:
        picture.save(out, "PNG", optimize=True)
        return out.getvalue(), "image/png"
    picture.save(out, "JPEG", quality=85)
    return out.getvalue(), "image/jpeg"


def image_part(media_type: str, data: bytes) -> dict:
    """An OpenAI `image_url` content part carrying the image itself."""
    url = f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}

"""Images for the tests of images through the gateway: real ones made by Pillow, hostile ones."""

from __future__ import annotations

import base64
import io

from PIL import Image

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'


def png(width: int = 64, height: int = 48, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, "GIF")
    return buffer.getvalue()


def bomb() -> bytes:
    """A PNG of a few KiB that decodes to 30 million pixels."""
    buffer = io.BytesIO()
    Image.new("1", (6000, 5000)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{b64(data)}"

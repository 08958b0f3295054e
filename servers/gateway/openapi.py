"""The OpenAPI 3.1 description of the `/v1` gateway: `servers/gateway/openapi.yaml`, one file.

It is written by hand next to the code it describes (servers/gateway/views.py, servers/gateway/)
and served as JSON at `GET /v1/openapi.json`. tests/servers/test_openapi_schemathesis.py
fuzzes the live gateway against it, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

OPENAPI_PATH = Path(__file__).resolve().with_name("openapi.yaml")


@functools.cache
def description() -> dict[str, Any]:
    """The parsed description (read once per process; the file ships with the code)."""
    parsed: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    return parsed

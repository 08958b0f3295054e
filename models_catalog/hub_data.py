"""What Hugging Face says about a model, made safe to keep and to show. Pure functions, no I/O.

Everything a model's repo holds (`config.json`, `tokenizer_config.json`, the README) and much of
what the Hub's API says about it (tags, card data, the short `config`) is written by whoever
pushed the repo. So every JSON value from the Hub or from a model's files — on the Hub or in a
local cache — goes through `loads` (bytes) or `clean` (a parsed value), and every model of
`/api/models` through `model_item`, before the portal uses, stores or renders it:

* `NaN`, `Infinity`, `-Infinity` and numbers beyond ±2**53 (`1e309` and `1e400` parse as
  infinity) become `null`: JSON columns refuse them (SQLite's `JSON_VALID`, PostgreSQL's
  `jsonb`), and no model has a dimension or a count that large;
* strings lose NUL characters and unpaired surrogates (PostgreSQL refuses both), and strings
  longer than `MAX_STRING` become `null`;
* containers nested deeper than `MAX_DEPTH` become `null`; JSON too deep to parse at all, or
  longer than the caller's byte limit, is refused with `HubDataError`;
* `model_item` keeps the fields of a model that the portal uses, each of the type and within
  the bounds of the column it is stored in, and drops the rest.

The catalog's JSON columns are read through `StoredJSONDecoder`, which cleans the same way, so a
row stored before these rules existed never breaks a page.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

#: Largest magnitude a number may have (2**53, the integers a JSON number carries exactly).
MAX_NUMBER = 2**53
#: Longest string kept (a long chat template is ~20 KB).
MAX_STRING = 256 * 1024
#: Longest dict key kept.
MAX_KEY = 1024
#: Deepest nesting kept (real configs nest 3 or 4 levels).
MAX_DEPTH = 32
#: Default limit of `loads`: a JSON file longer than this is refused.
MAX_JSON_BYTES = 8 << 20
#: The largest value of a PostgreSQL `integer` column (likes, trending score).
MAX_INT32 = 2**31 - 1
#: Years a Hub date may fall in (beyond them, time-zone arithmetic in templates overflows).
YEARS = (1970, 2999)

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class HubDataError(ValueError):
    """JSON from the Hub or a model's files that the portal refuses; `message` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- any JSON value -----------------------------------------------------------------------------


def loads(raw: bytes | str, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON as a model's files or the Hub may write it, and `clean` it. Raises
    `HubDataError` for text that is not JSON, longer than `max_bytes`, or nested too deeply
    to parse."""
    if len(raw) > max_bytes:
        raise HubDataError(f"it is larger than {max_bytes // 1024:,} KiB")
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise HubDataError("it is nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, a 5000-digit number
        raise HubDataError(f"it is not valid JSON ({str(exc)[:80]})") from None
    return clean(value)


def clean(value: Any, depth: int = MAX_DEPTH) -> Any:
    """`value` (parsed JSON) with every number finite and within ±`MAX_NUMBER`, every string
    free of NUL and unpaired surrogates and at most `MAX_STRING` long, and nothing nested deeper
    than `depth`; what breaks a rule becomes None (a dict entry with a bad key is dropped)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -MAX_NUMBER <= value <= MAX_NUMBER else None
    if isinstance(value, float):
        return value if -MAX_NUMBER <= value <= MAX_NUMBER else None  # NaN compares False
    if isinstance(value, str):
        return text(value) if len(value) <= MAX_STRING else None
    if depth <= 0 or not isinstance(value, dict | list | tuple):
        return None
    if isinstance(value, dict):
        return {
            text(key): clean(item, depth - 1)
            for key, item in value.items()
            if isinstance(key, str) and len(key) <= MAX_KEY
        }
    return [clean(item, depth - 1) for item in value]


def text(value: Any, limit: int | None = None) -> str:
    """`value` as text a database column takes: "" unless a string, without NUL characters or
    unpaired surrogates, cut to `limit` characters."""
    if not isinstance(value, str):
        return ""
    string: str = value if limit is None else value[:limit]
    if not string.isascii():
        try:
            string.encode("utf-8")
        except UnicodeEncodeError:  # unpaired surrogates ("\ud800" in JSON)
            string = string.encode("utf-8", "replace").decode("utf-8")
    return string.replace("\x00", "") if "\x00" in string else string


def chat_template(value: Any) -> str:
    """A chat template (`tokenizer_config.json`'s `chat_template`): a string, or a list of named
    templates (`[{name, template}]`, joined); "" for anything else or one longer than
    `MAX_STRING`."""
    if isinstance(value, list):
        value = "\n".join(
            t["template"]
            for t in value
            if isinstance(t, dict) and isinstance(t.get("template"), str)
        )
    if not isinstance(value, str) or len(value) > MAX_STRING:
        return ""
    return text(value)


def number(value: Any, low: int = 0, high: int = MAX_NUMBER) -> int | None:
    """An integer within `low..high` (an integral float counts), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():  # also NaN and infinities
            return None
        value = int(value)
    if isinstance(value, int) and low <= value <= high:
        return value
    return None


# --- one model of /api/models -------------------------------------------------------------------


def model_item(item: Any) -> dict[str, Any] | None:
    """The fields of one model of `/api/models` (or `/api/models/{id}`) the portal uses, in the
    Hub's shape (what `huggingface_hub.hf_api.ModelInfo(**item)` takes), each cleaned; None
    when `item` is not a model (no id)."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    repo_id = text(item["id"], 200)
    if not repo_id:
        return None
    found: dict[str, Any] = {
        "id": repo_id,
        "author": text(item.get("author"), 96) or None,
        "sha": _match(_HEX40, item.get("sha")),
        "lastModified": date(item.get("lastModified")),
        "createdAt": date(item.get("createdAt")),
        "private": _bool(item.get("private")),
        "disabled": _bool(item.get("disabled")),
        "gated": _gated(item.get("gated")),
        "downloads": number(item.get("downloads")),
        "likes": number(item.get("likes"), 0, MAX_INT32),
        "trendingScore": number(item.get("trendingScore"), -MAX_INT32, MAX_INT32),
        "pipeline_tag": text(item.get("pipeline_tag"), 64) or None,
        "library_name": text(item.get("library_name"), 64) or None,
        "tags": _tags(item.get("tags")),
        "usedStorage": number(item.get("usedStorage")),
        "safetensors": _safetensors(item.get("safetensors")),
        "config": _dict(item.get("config")),
        "siblings": _siblings(item.get("siblings")),
    }
    return {key: value for key, value in found.items() if value is not None}


def date(value: Any) -> str | None:
    """A Hub date (`2025-06-01T12:00:00.000Z`, ISO 8601) in a year of `YEARS`, written as
    huggingface_hub parses it (`ModelInfo` raises on anything else); None otherwise."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # ~20 times faster than strptime, 30 per page
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not YEARS[0] <= parsed.year <= YEARS[1]:
        return None
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _match(pattern: re.Pattern[str], value: Any) -> str | None:
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _gated(value: Any) -> str | bool | None:
    """The Hub says False, "auto" or "manual"."""
    if value is True:
        return "manual"
    return value if value is False or value in ("auto", "manual") else None


def _tags(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [tag for t in value if isinstance(t, str) and len(t) <= 200 and (tag := text(t))][:200]


def _dict(value: Any) -> dict[str, Any] | None:
    cleaned = clean(value) if isinstance(value, dict) else None
    return cleaned if isinstance(cleaned, dict) else None


def _safetensors(value: Any) -> dict[str, Any] | None:
    """`{"parameters": {dtype: count}, "total": count}`, counts within bounds; None when the
    parameters are not a dict of counts."""
    if not isinstance(value, dict) or not isinstance(value.get("parameters"), dict):
        return None
    parameters = {}
    for dtype, count in value["parameters"].items():
        if (name := text(dtype, 16)) and (count := number(count)) is not None:
            parameters[name] = count
    if not parameters:
        return None
    total = number(value.get("total"))
    return {"parameters": parameters, "total": total if total is not None else 0}


def _siblings(value: Any) -> list[dict[str, Any]] | None:
    """The files: a name, and when given, a size, a git blob id and LFS facts that hold."""
    if not isinstance(value, list):
        return None
    siblings = []
    for entry in value:
        if not isinstance(entry, dict):
            continue
        name = entry.get("rfilename")
        if not isinstance(name, str) or not name or len(name) > 1000 or text(name) != name:
            continue
        sibling: dict[str, Any] = {"rfilename": name, "size": number(entry.get("size"))}
        if blob_id := _match(_HEX40, entry.get("blobId")):
            sibling["blobId"] = blob_id
        lfs = entry.get("lfs")
        if isinstance(lfs, dict):
            sha256, size = _match(_HEX64, lfs.get("sha256")), number(lfs.get("size"))
            if sha256 and size is not None:
                pointer = number(lfs.get("pointerSize")) or 0
                sibling["lfs"] = {"sha256": sha256, "size": size, "pointerSize": pointer}
        siblings.append(sibling)
    return siblings


# --- JSON stored in the database ----------------------------------------------------------------


class StoredJSONDecoder(json.JSONDecoder):
    """The decoder of the catalog's JSON columns: a stored value is cleaned like a fresh one
    (`clean`), and a value that cannot be read at all becomes None, so a row stored before
    these rules (or by hand) never fails the page that loads it."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("parse_constant", _no_constant)
        kwargs.setdefault("parse_float", _float)
        kwargs.setdefault("parse_int", _int)
        super().__init__(**kwargs)

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:
        try:
            value = super().decode(s, *args, **kwargs)
        except (ValueError, RecursionError):
            return None
        return clean(value)


# --- parse hooks --------------------------------------------------------------------------------


def _no_constant(name: str) -> None:
    """NaN, Infinity and -Infinity: not JSON, read as null."""
    return None


def _float(literal: str) -> float | None:
    value = float(literal)  # 1e309 -> inf
    return value if -MAX_NUMBER <= value <= MAX_NUMBER else None


def _int(literal: str) -> int | None:
    # An integer of more than 17 characters is beyond 2**53: it is never converted (Python
    # refuses to convert one of more than 4300 digits at all).
    if len(literal) > 17:
        return None
    value = int(literal)
    return value if -MAX_NUMBER <= value <= MAX_NUMBER else None

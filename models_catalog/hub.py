"""The only code that talks to the Hugging Face Hub.

Every call passes the endpoint, the token and a time-out explicitly (never the `HF_ENDPOINT`
environment variable, which huggingface_hub reads once at import) and turns every failure into a
`HubError` whose `message` can be shown to a user as is.

Listing pages: `HfApi.list_models` hides the Hub's pagination cursor (it follows `Link` headers
itself) and retries 429/5xx for up to ~25 s, so a page of results is fetched here with the same
huggingface_hub session, headers, error mapping and `ModelInfo` type, but one request per page,
no hidden retries, and the `next` cursor kept so that "next page" is a bookmarkable URL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from django.conf import settings
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from models_catalog import hub_files
from models_catalog.local import local_model_path
from models_catalog.validators import validate_repo_id

#: The portal's sort names -> the Hub's sort keys (always descending).
HUB_SORTS: dict[str, str] = {
    "trending": "trendingScore",
    "downloads": "downloads",
    "likes": "likes",
    "updated": "lastModified",
}
#: What a listing asks the Hub to include for each model.
LIST_EXPAND = [
    "author", "downloads", "likes", "trendingScore", "lastModified", "tags", "pipeline_tag",
    "library_name", "gated", "sha", "safetensors", "usedStorage", "config",
]  # fmt: skip
#: A cursor as the Hub writes it (base64-ish); anything else never reaches the Hub.
CURSOR_PATTERN = re.compile(r"[A-Za-z0-9_\-=.%+/]{1,512}")
#: At most this much of a README is read.
README_MAX_BYTES = 256 * 1024


# --- errors -------------------------------------------------------------------------------------


class HubError(Exception):
    """A Hub call failed; `message` says what happened and what to do, for the user."""

    kind = "error"

    def __init__(self, message: str, *, status: int | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class HubUnreachable(HubError):
    kind = "unreachable"


class HubTimeout(HubError):
    kind = "timeout"


class HubRateLimited(HubError):
    kind = "rate_limited"


class HubAuthRequired(HubError):
    kind = "auth"


class HubNotFound(HubError):
    kind = "not_found"


class HubServerError(HubError):
    kind = "server_error"


class HubBadRequest(HubError):
    kind = "bad_request"


# --- settings -----------------------------------------------------------------------------------


def hub_token() -> str | None:
    """The token every Hub call sends: the admin-set one, else `HF_TOKEN`, else none
    (the rule lives in hub_files.hub_token)."""
    return hub_files.hub_token()


def hub_timeout() -> float:
    return float(settings.HUB_TIMEOUT)


def endpoint() -> str:
    return settings.HF_ENDPOINT.rstrip("/")


def api() -> HfApi:
    return HfApi(endpoint=endpoint(), token=hub_token() or False)


def _headers() -> dict[str, str]:
    # token=False: never fall back to a token saved on this machine or in the environment.
    return build_hf_headers(token=hub_token() or False)


# --- listing ------------------------------------------------------------------------------------


@dataclass
class HubPage:
    """One page of `/api/models`: the models and the cursor of the next page (None: last)."""

    models: list[ModelInfo]
    next_cursor: str | None


def list_models_page(
    *, search: str = "", sort: str = "trending", cursor: str = "", limit: int = 30
) -> HubPage:
    """One page of MLX models (`filter=mlx`, every author), sorted descending by `sort`."""
    if sort not in HUB_SORTS:
        raise ValueError(f"Unknown sort {sort!r}")
    if cursor and not CURSOR_PATTERN.fullmatch(cursor):
        raise HubBadRequest("That page link is not valid any more: start again from page 1.")
    params: list[tuple[str, Any]] = [
        ("filter", "mlx"),
        ("sort", HUB_SORTS[sort]),
        ("direction", "-1"),
        ("limit", str(limit)),
    ]
    if search:
        params.append(("search", search))
    params += [("expand", name) for name in LIST_EXPAND]
    if cursor:
        params.append(("cursor", cursor))
    with _translate_errors("search the Hub"):
        response = get_session().get(
            f"{endpoint()}/api/models", params=params, headers=_headers(), timeout=hub_timeout()
        )
        hf_raise_for_status(response)
        items = response.json()
    if not isinstance(items, list):
        raise HubServerError("Hugging Face answered the search with something unexpected.")
    models = []
    for item in items:
        if isinstance(item, dict) and item.get("id"):
            item.setdefault("siblings", None)
            models.append(ModelInfo(**item))
    return HubPage(models=models, next_cursor=_next_cursor(response))


def _next_cursor(response: httpx2.Response) -> str | None:
    url = response.links.get("next", {}).get("url")
    if not url:
        return None
    cursor = (parse_qs(urlsplit(url).query).get("cursor") or [""])[0]
    return cursor if CURSOR_PATTERN.fullmatch(cursor or "") else None


# --- one model ----------------------------------------------------------------------------------


def model_info(repo_id: str) -> ModelInfo:
    """The model's Hub page facts, with its files and their sizes."""
    validate_repo_id(repo_id)
    with _translate_errors(f"look up {repo_id}", repo_id=repo_id):
        return api().model_info(repo_id, files_metadata=True, timeout=hub_timeout())


@dataclass
class ModelFiles:
    """A model's `config.json` and chat template, and where they were read."""

    config: dict[str, Any] | None
    chat_template: str = ""
    source: str = "hub"  # "local" (the Hugging Face cache on this host) or "hub"
    errors: list[str] = field(default_factory=list)


def fetch_config(repo_id: str, *, chat_template: bool = True) -> ModelFiles:
    """`config.json` (and, when asked, the chat template from `tokenizer_config.json`): from the
    local Hugging Face cache when the model is on disk, else from the Hub."""
    validate_repo_id(repo_id)
    if (local := local_model_path(repo_id)) is not None:
        return _local_files(local)
    config = _fetch_json(repo_id, "config.json")
    template = ""
    if chat_template:
        try:
            tokenizer_config = _fetch_json(repo_id, "tokenizer_config.json")
        except HubNotFound:
            tokenizer_config = {}
        template = _template_text(tokenizer_config.get("chat_template"))
    return ModelFiles(config=config, chat_template=template, source="hub")


def fetch_readme(repo_id: str) -> str:
    """The model card (README.md) text, local cache first; empty when the repo has none."""
    validate_repo_id(repo_id)
    if (local := local_model_path(repo_id)) is not None:
        readme = local / "README.md"
        return _read_text(readme, README_MAX_BYTES) if readme.is_file() else ""
    try:
        return _fetch_bytes(repo_id, "README.md")[:README_MAX_BYTES].decode("utf-8", "replace")
    except HubNotFound:
        return ""


def hub_url(repo_id: str) -> str:
    """The model's page on the Hub (for a link)."""
    return f"{endpoint()}/{repo_id}"


# --- helpers ------------------------------------------------------------------------------------


def _fetch_bytes(repo_id: str, filename: str) -> bytes:
    url = hf_hub_url(repo_id, filename, endpoint=endpoint())
    with _translate_errors(f"read {filename} of {repo_id}", repo_id=repo_id, filename=filename):
        response = get_session().get(url, headers=_headers(), timeout=hub_timeout())
        hf_raise_for_status(response)
        return response.content


def _fetch_json(repo_id: str, filename: str) -> dict[str, Any]:
    raw = _fetch_bytes(repo_id, filename)
    try:
        value = json.loads(raw)
    except ValueError:
        raise HubBadRequest(f"{filename} of {repo_id} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise HubBadRequest(f"{filename} of {repo_id} is not a JSON object.")
    return value


def _local_files(snapshot: Path) -> ModelFiles:
    errors = []
    try:
        config = json.loads(_read_text(snapshot / "config.json"))
    except (OSError, ValueError) as exc:
        config, errors = None, [f"config.json on disk is unreadable: {exc}"]
    template = ""
    tokenizer_config = snapshot / "tokenizer_config.json"
    if tokenizer_config.is_file():
        try:
            template = _template_text(json.loads(_read_text(tokenizer_config)).get("chat_template"))
        except (OSError, ValueError, AttributeError):
            template = ""
    jinja = snapshot / "chat_template.jinja"
    if not template and jinja.is_file():
        template = _read_text(jinja)
    return ModelFiles(
        config=config if isinstance(config, dict) else None,
        chat_template=template,
        source="local",
        errors=errors,
    )


def _read_text(path: Path, limit: int = 8 << 20) -> str:
    with open(path, "rb") as handle:
        return handle.read(limit).decode("utf-8", "replace")


def _template_text(value: Any) -> str:
    """A chat template is a string, or a list of named templates (`[{name, template}]`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(t.get("template", "")) for t in value if isinstance(t, dict))
    return ""


@contextmanager
def _translate_errors(action: str, *, repo_id: str = "", filename: str = "") -> Iterator[None]:
    """Turn whatever huggingface_hub / httpx raise into one of the HubError types."""
    try:
        yield
    except HubError:
        raise
    except GatedRepoError as exc:
        raise _auth_error(repo_id, exc) from exc
    except EntryNotFoundError as exc:
        raise HubNotFound(f"{repo_id} has no file {filename} on Hugging Face.", status=404) from exc
    except RepositoryNotFoundError as exc:
        status = _status(exc)
        if status == 401 and not hub_token():
            raise _auth_error(repo_id, exc) from exc
        raise HubNotFound(
            f"No model named {repo_id} on Hugging Face (or it is private and the portal's "
            "token cannot see it).",
            status=status,
        ) from exc
    except HfHubHTTPError as exc:
        raise _http_error(action, exc, repo_id) from exc
    except httpx2.TimeoutException as exc:
        raise HubTimeout(
            f"Hugging Face did not answer within {hub_timeout():g} s when trying to {action}. "
            "It may be slow right now: try again in a moment."
        ) from exc
    except (httpx2.TransportError, OfflineModeIsEnabled, OSError) as exc:
        raise HubUnreachable(
            f"Hugging Face ({endpoint()}) cannot be reached from this host, so the portal "
            f"could not {action}. Models already on disk keep working; try again when the "
            "network is back."
        ) from exc


def _status(exc: HfHubHTTPError) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _auth_error(repo_id: str, exc: Exception) -> HubAuthRequired:
    status = _status(exc) if isinstance(exc, HfHubHTTPError) else None
    what = repo_id or "This request"
    if hub_token():
        message = (
            f"{what} is gated or private and the portal's Hugging Face token is not allowed to "
            "read it: an admin should check the token, or request access on the model's page."
        )
    else:
        message = f"{what} is gated or private: it needs a Hugging Face token, set by an admin."
    return HubAuthRequired(message, status=status)


def _http_error(action: str, exc: HfHubHTTPError, repo_id: str) -> HubError:
    status = _status(exc) or 0
    if status == 429:
        retry_after = _retry_after(exc)
        if retry_after:
            wait = f"in {retry_after} second{'s' if retry_after != 1 else ''}"
        else:
            wait = "in a minute"
        advice = "" if hub_token() else " An admin can set a Hugging Face token to raise the limit."
        return HubRateLimited(
            f"Hugging Face is rate-limiting this portal: try again {wait}.{advice}",
            status=429,
            retry_after=retry_after,
        )
    if status in (401, 403):
        if not repo_id:
            if hub_token():
                return HubAuthRequired(
                    "Hugging Face refused the portal's token: an admin should check the "
                    "Hugging Face token.",
                    status=status,
                )
            return HubAuthRequired(
                "Hugging Face refused the request: it needs a Hugging Face token, set by an admin.",
                status=status,
            )
        return _auth_error(repo_id, exc)
    if status == 404:
        return HubNotFound(f"Hugging Face has no answer for this ({action}).", status=404)
    if status == 400:
        return HubBadRequest(
            f"Hugging Face did not accept the request to {action}: if you followed a page "
            "link, start again from page 1.",
            status=400,
        )
    if status >= 500:
        return HubServerError(
            f"Hugging Face answered with a server error ({status}) when trying to {action}. "
            "It is usually temporary: try again in a minute.",
            status=status,
        )
    return HubError(
        f"Hugging Face answered {status} when trying to {action}.", status=status or None
    )


def _retry_after(exc: HfHubHTTPError) -> int | None:
    response = getattr(exc, "response", None)
    value = (response.headers.get("Retry-After") if response is not None else None) or ""
    value = value.strip()
    return int(value) if value.isdigit() else None

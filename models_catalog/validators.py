"""Validation of everything that names a model or a file before it reaches the disk or a
command line: the one place for repo-id and cache-path rules.
"""

import re
from pathlib import Path

from django.core.exceptions import ValidationError
from huggingface_hub.utils import HFValidationError
from huggingface_hub.utils import validate_repo_id as hub_validate_repo_id

# The Hub's own rules, restricted to ASCII and to the `owner/name` form the portal uses.
_OWNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_REPO_ID_LENGTH = 96
REPO_ID_HELP = (
    "Use the form owner/name, e.g. mlx-community/Qwen3-4B-4bit: letters, digits, '-', '_' "
    "and '.', at most 96 characters, no '--' or '..'."
)
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")


def validate_repo_id(value: str) -> str:
    """Return `value` when it is a valid `owner/name` repo id, else raise ValidationError."""
    if not isinstance(value, str) or not value:
        raise ValidationError("A model repo id is required. " + REPO_ID_HELP, code="required")
    if len(value) > MAX_REPO_ID_LENGTH:
        raise ValidationError(
            f"The repo id is {len(value)} characters long; the Hub allows at most 96.",
            code="too_long",
        )
    if not _OWNER_NAME.fullmatch(value):
        raise ValidationError(f"{value[:100]!r} is not a model repo id. " + REPO_ID_HELP)
    try:
        hub_validate_repo_id(value)
    except HFValidationError as exc:
        raise ValidationError(f"{value!r} is not a valid repo id: {exc}") from None
    return value


def validate_revision(value: str) -> str:
    """A branch, tag or commit hash: no traversal, no spaces, no leading '-'."""
    if not _REVISION.fullmatch(value or "") or ".." in value or value.endswith("/"):
        raise ValidationError(
            f"{(value or '')[:100]!r} is not a revision: use a branch, tag or commit hash."
        )
    return value


def path_inside(root: Path, candidate: Path | str) -> Path:
    """Resolve `candidate` (symlinks included) and return it only if it stays inside `root`.

    A sibling directory that merely shares the prefix (`/cache-evil` next to `/cache`) is
    outside; so is anything a symlink leads out of the root.
    """
    root = Path(root).resolve()
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise ValidationError(f"The path {str(candidate)[:200]!r} leaves the model cache.")
    return resolved

"""Repo ids and cache paths are refused before they touch the disk or a command line."""

import os

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from models_catalog.validators import path_inside, validate_repo_id, validate_revision

GOOD_REPO_IDS = [
    "mlx-community/Qwen3-4B-4bit",
    "a/b",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "user_1/model.v2",
    "o" * 40 + "/" + "n" * 55,  # 96 characters
]

BAD_REPO_IDS = [
    "",
    "gpt2",  # the portal always uses owner/name
    "../x",
    "a/../../etc",
    "%2e%2e/x",
    "a/%2e%2e",
    "a/b/c",
    "-a/b",
    "a/-b",
    "a/b c",
    "a/b;rm -rf ~",
    "a/$(id)",
    "a/b|cat",
    "https://huggingface.co/a/b",
    "a--b/c",
    "a/b..c",
    "a/.b",
    "a/b.git",
    "/etc/passwd",
    "a\\b",
    "ä/b",
    "a/b\n",
    "o" * 48 + "/" + "n" * 48,  # 97 characters
]


@pytest.mark.parametrize("repo_id", GOOD_REPO_IDS)
def test_valid_repo_ids_pass(repo_id):
    assert validate_repo_id(repo_id) == repo_id


@pytest.mark.parametrize("repo_id", BAD_REPO_IDS)
def test_invalid_repo_ids_are_refused_with_a_message(repo_id):
    with pytest.raises(ValidationError) as info:
        validate_repo_id(repo_id)
    assert info.value.messages[0]


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "a" * 40])
def test_valid_revisions_pass(revision):
    assert validate_revision(revision) == revision


@pytest.mark.parametrize("revision", ["", "../main", "-main", "main/", "a b", "x" * 200])
def test_invalid_revisions_are_refused(revision):
    with pytest.raises(ValidationError):
        validate_revision(revision)


def test_path_inside_accepts_a_file_in_the_cache(tmp_path):
    root = tmp_path / "cache"
    (root / "models--a--b").mkdir(parents=True)
    assert path_inside(root, "models--a--b") == (root / "models--a--b").resolve()


@pytest.mark.parametrize("candidate", ["..", "../cache-evil", "/etc", "models--a--b/../../x"])
def test_path_inside_refuses_paths_that_leave_the_cache(tmp_path, candidate):
    root = tmp_path / "cache"
    root.mkdir()
    (tmp_path / "cache-evil").mkdir()  # a sibling that shares the prefix
    with pytest.raises(ValidationError):
        path_inside(root, candidate)


def test_path_inside_refuses_a_symlink_out_of_the_cache(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    os.symlink(tmp_path, root / "escape")
    with pytest.raises(ValidationError):
        path_inside(root, "escape/secret")


# --- generated input (hypothesis) --------------------------------------------------------------

NASTY = st.sampled_from(
    ["..", "/", "\\", "--", "-", ".", "~", "%2e", "\x00", "\n", " ", "$(id)", "`x`", ";", "|",
     "&", "http://", "file:", "a", "b", "Z", "9", "_", "ä", "\u202e", ".git"]
)  # fmt: skip
CANDIDATES = st.one_of(st.text(max_size=120), st.lists(NASTY, max_size=12).map("".join))


def _message(error: ValidationError) -> str:
    return " ".join(error.messages)


@settings(max_examples=400, deadline=None)
@given(value=CANDIDATES)
def test_any_accepted_repo_id_names_one_directory_inside_the_cache(tmp_path_factory, value):
    cache = tmp_path_factory.getbasetemp() / "cache"
    try:
        repo_id = validate_repo_id(value)
    except ValidationError as error:
        assert len(_message(error)) > 20  # says what to do
        return
    owner, name = repo_id.split("/")
    assert repo_id.isascii() and repo_id.isprintable() and ".." not in repo_id
    assert not owner.startswith(("-", ".")) and not name.startswith(("-", "."))
    assert "--" not in repo_id and len(repo_id) <= 96
    folder = path_inside(cache, "models--" + repo_id.replace("/", "--"))
    assert folder.parent == cache.resolve()


@settings(max_examples=400, deadline=None)
@given(value=CANDIDATES)
def test_any_accepted_revision_stays_under_its_snapshots_folder(tmp_path_factory, value):
    snapshots = tmp_path_factory.getbasetemp() / "snapshots"
    try:
        revision = validate_revision(value)
    except ValidationError as error:
        assert len(_message(error)) > 20
        return
    assert not revision.startswith("-") and ".." not in revision
    assert revision.isascii() and not any(c.isspace() for c in revision)
    assert path_inside(snapshots, revision).is_relative_to(snapshots.resolve())


@settings(max_examples=300, deadline=None)
@given(value=CANDIDATES)
def test_path_inside_never_returns_a_path_outside_its_root(tmp_path_factory, value):
    root = tmp_path_factory.getbasetemp() / "root"
    try:
        resolved = path_inside(root, value)
    except (ValidationError, ValueError) as error:  # ValueError: an embedded NUL byte
        assert str(error)
        return
    assert resolved.is_relative_to(root.resolve())

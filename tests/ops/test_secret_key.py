"""The secret key: created by `make run` (`python -m config.secret_key`), only read by the
settings, which write nothing and refuse to load without a key, saying what to do."""

import re
import stat
from pathlib import Path

import pytest

from tests.support.clean_env import run_python as run

ROOT = Path(__file__).resolve().parents[2]
SHOW_KEY = (
    "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
)


def run_python(tmp_path: Path, *args: str, **env: str):
    """A process of the portal's code on its own settings (not the tests')."""
    return run(tmp_path, *args, DJANGO_SETTINGS_MODULE="config.settings", **env)


def create_key(data_dir: Path, tmp_path: Path, **env: str):
    return run_python(tmp_path, "-m", "config.secret_key", MLX_PORTAL_DATA_DIR=str(data_dir), **env)


@pytest.mark.parametrize(
    "args",
    [("-c", "import django; django.setup()"), ("-c", "import config.wsgi"), ("manage.py", "check")],
    ids=["settings", "web tier", "manage.py"],
)
def test_without_a_key_the_portal_refuses_to_start_saying_what_to_do(tmp_path, args):
    fresh = tmp_path / "fresh"
    result = run_python(tmp_path, *args, MLX_PORTAL_DATA_DIR=str(fresh))
    assert result.returncode != 0
    assert "No secret key" in result.stderr
    assert "make run" in result.stderr and "DJANGO_SECRET_KEY" in result.stderr
    assert not fresh.exists()  # the settings write nothing


def test_the_settings_create_no_folder_when_the_key_comes_from_the_environment(tmp_path):
    fresh = tmp_path / "fresh"
    result = run_python(
        tmp_path, "-c", SHOW_KEY, MLX_PORTAL_DATA_DIR=str(fresh), DJANGO_SECRET_KEY="k" * 60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "k" * 60
    assert not fresh.exists()


def test_the_key_command_creates_the_data_dir_and_a_private_key_once(tmp_path):
    data_dir = tmp_path / "new" / "var"
    first = create_key(data_dir, tmp_path)
    assert first.returncode == 0, first.stderr
    key_file = data_dir / "secret_key"
    key = key_file.read_text()
    assert len(key) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in data_dir.iterdir()] == ["secret_key"]  # no temporary file left

    again = create_key(data_dir, tmp_path)
    assert again.returncode == 0, again.stderr
    assert key_file.read_text() == key  # kept: sessions and stored secrets depend on it

    shown = run_python(tmp_path, "-c", SHOW_KEY, MLX_PORTAL_DATA_DIR=str(data_dir))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == key


def test_with_a_key_in_the_environment_the_command_makes_the_folder_and_no_key_file(tmp_path):
    data_dir = tmp_path / "var"
    result = create_key(data_dir, tmp_path, DJANGO_SECRET_KEY="k" * 60)
    assert result.returncode == 0, result.stderr
    assert data_dir.is_dir()
    assert not (data_dir / "secret_key").exists()


def test_an_empty_key_file_is_refused_not_replaced(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text("\n")
    result = create_key(data_dir, tmp_path)
    assert result.returncode == 1
    assert "is missing or empty" in result.stderr
    assert (data_dir / "secret_key").read_text() == "\n"
    refused = run_python(tmp_path, "-c", SHOW_KEY, MLX_PORTAL_DATA_DIR=str(data_dir))
    assert refused.returncode != 0
    assert "No secret key" in refused.stderr


def test_make_run_creates_the_key_before_it_migrates():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, re.M)[1]
    steps = [line.strip() for line in recipe.splitlines()]
    key = next(i for i, s in enumerate(steps) if "-m config.secret_key" in s)
    migrate = next(i for i, s in enumerate(steps) if "manage.py migrate" in s)
    assert key < migrate

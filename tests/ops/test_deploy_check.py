"""Production settings pass Django's deployment checklist."""

import secrets
from pathlib import Path

from tests.support.clean_env import run_python

PRODUCTION_ENV = {
    "DJANGO_PRODUCTION": "1",
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "portal.example.com",
    "EMAIL_URL": "smtp+tls://portal:secret@smtp.example.com:587",
}


def run_check(tmp_path: Path, **env: str):
    return run_python(tmp_path, "manage.py", "check", "--deploy", "--fail-level", "WARNING", **env)


def test_check_deploy_passes_with_production_settings(tmp_path):
    result = run_check(tmp_path, **PRODUCTION_ENV, DJANGO_SECRET_KEY=secrets.token_urlsafe(64))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_development_settings(tmp_path):
    result = run_check(tmp_path)
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout  # no HSTS outside production

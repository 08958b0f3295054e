"""Fixtures of the catalog's download tests (defined in download_helpers.py so that the browser
tests can use them too)."""

import pytest

from tests.models_catalog.download_helpers import hf, purged_queues  # noqa: F401


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Django 6's PBKDF2 takes ~1.5 s per user on this machine; these tests never log in by
    password."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

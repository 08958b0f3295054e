import pytest
from django.core.cache import cache

from tests.conftest import PASSWORD


@pytest.fixture(autouse=True)
def _fresh_rate_limits(db):
    """allauth keeps its rate-limit counters in the (database) cache, which outlives a test."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """PBKDF2's deliberate slowness only slows these tests down; the hasher is not under test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def sign_up():
    """`sign_up(client, "a@example.com")` posts allauth's sign-up form and returns the reply."""

    def post(client, email: str, password: str = PASSWORD, **extra):
        return client.post(
            "/accounts/signup/",
            {"email": email, "password1": password, "password2": password},
            **extra,
        )

    return post


@pytest.fixture
def log_in():
    def post(client, email: str, password: str = PASSWORD, **extra):
        return client.post("/accounts/login/", {"login": email, "password": password}, **extra)

    return post

"""Fixtures of the browser journeys."""

import pytest

from tests.servers.helpers import TINY_REPO, install_model


@pytest.fixture
def tiny_in_cache(settings, tmp_path, tiny_model):
    """The real tiny text model in this test's Hugging Face cache; its repo id."""
    settings.HF_HUB_CACHE = tmp_path / "hub"
    install_model(settings.HF_HUB_CACHE, TINY_REPO, source=tiny_model)
    return TINY_REPO

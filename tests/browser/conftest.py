"""Fixtures of the browser journeys."""

import pytest

from tests.servers.helpers import TINY_REPO, install_model


@pytest.fixture
def tiny_in_cache(settings, tmp_path, tiny_model):
    """The real tiny text model in this test's Hugging Face cache; its repo id."""
    settings.HF_HUB_CACHE = tmp_path / "hub"
    install_model(settings.HF_HUB_CACHE, TINY_REPO, source=tiny_model)
    return TINY_REPO


@pytest.fixture
def hub_settings(hub, settings, tmp_path):
    """The fake Hub, the portal's settings pointed at it, an empty Hugging Face cache, and no
    catalog state left from an earlier test."""
    from models_catalog import catalog

    settings.HF_ENDPOINT = hub.url
    settings.HF_HUB_CACHE = tmp_path / "hf-cache"
    settings.HF_TOKEN = ""
    catalog.forget_process_state()
    yield hub
    catalog.forget_process_state()

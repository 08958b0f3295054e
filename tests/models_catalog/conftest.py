"""The catalog tests talk to the fake Hub through the real huggingface_hub client."""

import shutil
from pathlib import Path

import pytest

from models_catalog import catalog
from models_catalog.models import Host
from tests.models_catalog.download_helpers import hf, purged_queues  # noqa: F401

GIB = 1024**3


@pytest.fixture
def catalog_hub(hub, settings, tmp_path):
    """The fake Hub (knobs reset), the portal's settings pointed at it, an empty local cache."""
    settings.HF_ENDPOINT = hub.url
    settings.HF_HUB_CACHE = tmp_path / "hf-cache"
    settings.HF_TOKEN = ""
    settings.HUB_TIMEOUT = 5.0
    settings.CATALOG_CONFIG_DEADLINE = 20.0
    catalog.forget_process_state()  # nothing of an earlier test may answer for this one
    yield hub
    catalog.forget_process_state()


@pytest.fixture
def host(db, settings):
    """This host, with a known amount of memory (32 GiB) so that fit verdicts are stable."""
    host, _ = Host.objects.update_or_create(
        name=settings.HOST_NAME, defaults={"memory_total": 32 * GIB, "platform": "Linux CPU"}
    )
    return host


def put_in_local_cache(cache: Path, repo_id: str, source: Path, revision: str = "a" * 40) -> Path:
    """Lay out `source` as the Hugging Face cache does (refs/main -> snapshots/<revision>)."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    shutil.copytree(source, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture
def fast_heartbeat(settings):
    """Downloads run in this process renew their lease every 0.2 s, so leases can be tested."""
    settings.DOWNLOAD_HEARTBEAT_SECONDS = 0.2

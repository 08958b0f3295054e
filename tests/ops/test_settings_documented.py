"""Every environment variable the portal reads is listed in README.md and .env.example."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCFILE_VARIABLES = re.compile(r"\$\{([A-Z_0-9]+)(?::-[^}]*)?\}")
# env.str("NAME", …) and the settings' own readers that validate (_bounded("NAME", …), …).
SETTINGS_VARIABLES = re.compile(r'(?:env\.[a-z_]+|\b_[a-z_]+)\(\s*"([A-Z_0-9]+)"')


def variables() -> set[str]:
    names = set(SETTINGS_VARIABLES.findall((ROOT / "config" / "settings.py").read_text()))
    names |= set(PROCFILE_VARIABLES.findall((ROOT / "Procfile").read_text()))
    return names


def test_the_settings_read_some_variables():
    assert {"DATABASE_URL", "REDIS_URL", "HF_HUB_CACHE", "PORTAL_BIND"} <= variables()
    assert {"DOWNLOAD_FILES_AT_ONCE", "MLX_PORTAL_TRUSTED_PROXIES"} <= variables()


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_variable_is_documented(document):
    text = (ROOT / document).read_text()
    missing = sorted(name for name in variables() if f"`{name}`" not in text and name not in text)
    assert not missing, f"{document} does not mention: {', '.join(missing)}"

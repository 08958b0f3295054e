"""Start-up of the web tier: what config/wsgi.py does, and settings refused before they break
requests."""

from pathlib import Path

import pytest

from tests.support.clean_env import run_python as run


def run_python(tmp_path: Path, code: str, **env: str):
    return run(tmp_path, "-c", code, **env)


def test_the_wsgi_application_freezes_its_start_up_objects_out_of_the_collector(tmp_path):
    """Full collector passes in a gunicorn worker must not walk Django and the views again
    (a 73-117 ms pause of every thread; docs/benchmarks.md §2e)."""
    code = (
        "import gc, sys; import config.wsgi; "
        "print(gc.get_freeze_count(), 'servers.gateway.views' in sys.modules)"
    )
    result = run_python(tmp_path, code)
    assert result.returncode == 0, result.stderr
    frozen, views_loaded = result.stdout.split()
    assert int(frozen) > 50_000  # Django, the apps and the views
    assert views_loaded == "True"  # the URLconf's views are imported before the freeze


@pytest.mark.parametrize(
    ("env", "refused", "range_"),
    [
        ({"MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MS": value}, "MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MS",
         "from 0 to 1000")
        for value in ("nan", "-5", "5000", "ten")
    ]
    + [
        ({"MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MS": "20",
          "MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MAX_MS": "10"},
         "MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MAX_MS='10'", "from 20 to 1000"),
    ]
    + [
        ({"MLX_PORTAL_SERVER_STATS_SECONDS": value}, "MLX_PORTAL_SERVER_STATS_SECONDS",
         "from 0.1 to 600")
        for value in ("0", "nan", "-1", "601", "two")
    ]
    + [
        ({"DOWNLOAD_FILES_AT_ONCE": value}, "DOWNLOAD_FILES_AT_ONCE", "from 1 to 32")
        for value in ("0", "33", "many", "2.5")
    ],
)  # fmt: skip
def test_a_setting_out_of_its_range_stops_start_up_with_what_to_set(tmp_path, env, refused, range_):
    result = run_python(
        tmp_path, "import django; django.setup()", DJANGO_SETTINGS_MODULE="config.settings", **env
    )
    assert result.returncode != 0
    assert refused in result.stderr and range_ in result.stderr


def test_a_stream_interval_of_zero_is_accepted(tmp_path):
    code = "import django; django.setup(); from django.conf import settings; "
    code += "print(settings.GATEWAY_STREAM_INTERVAL_MS)"
    result = run_python(
        tmp_path, code,
        DJANGO_SETTINGS_MODULE="config.settings", MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MS="0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.0"


def test_the_stream_interval_maximum_follows_a_larger_interval_by_default(tmp_path):
    code = "import django; django.setup(); from django.conf import settings; "
    code += "print(settings.GATEWAY_STREAM_INTERVAL_MS, settings.GATEWAY_STREAM_INTERVAL_MAX_MS)"
    default = run_python(tmp_path, code, DJANGO_SETTINGS_MODULE="config.settings")
    assert default.stdout.split() == ["20.0", "50.0"], default.stderr
    larger = run_python(
        tmp_path, code,
        DJANGO_SETTINGS_MODULE="config.settings", MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MS="200",
    )  # fmt: skip
    assert larger.stdout.split() == ["200.0", "200.0"], larger.stderr

"""The memory a host's servers may use together (models_catalog/hosts/facts.memory_limit),
and the macOS sysctl it reads, parsed from captured outputs."""

import psutil
import pytest

from models_catalog.hosts import facts

GB = 1024**3


@pytest.mark.parametrize(
    ("system", "total", "available", "wired_mb", "limit", "kind"),
    [
        # macOS with iogpu.wired_limit_mb set by an admin of the Mac: that, at most all memory.
        ("Darwin", 64 * GB, 10 * GB, 57344, 56 * GB, facts.LIMIT_WIRED),
        ("Darwin", 16 * GB, 10 * GB, 99999, 16 * GB, facts.LIMIT_WIRED),
        # 0 (or unreadable): macOS's default share, 2/3 up to 36 GB and 3/4 above.
        ("Darwin", 16 * GB, 3 * GB, 0, int(16 * GB * 2 / 3), facts.LIMIT_MACOS_DEFAULT),
        ("Darwin", 36 * GB, 3 * GB, None, int(36 * GB * 2 / 3), facts.LIMIT_MACOS_DEFAULT),
        ("Darwin", 64 * GB, 3 * GB, 0, 48 * GB, facts.LIMIT_MACOS_DEFAULT),
        ("Darwin", 192 * GB, 3 * GB, None, 144 * GB, facts.LIMIT_MACOS_DEFAULT),
        # Elsewhere: the memory available now (the sysctl is not asked).
        ("Linux", 32 * GB, 20 * GB, None, 20 * GB, facts.LIMIT_AVAILABLE),
        ("Linux", 32 * GB, 20 * GB, 4096, 20 * GB, facts.LIMIT_AVAILABLE),
    ],
)
def test_the_limit_is_the_gpu_wired_limit_on_macos_and_available_memory_elsewhere(
    system, total, available, wired_mb, limit, kind
):
    assert facts.memory_limit(system, total, available, wired_mb) == (limit, kind)


@pytest.mark.parametrize(
    ("output", "mb"),
    [
        ("0\n", 0),  # sysctl -n, never set
        ("57344\n", 57344),
        ("iogpu.wired_limit_mb: 57344\n", 57344),  # without -n
        ("iogpu.wired_limit_mb: 0", 0),
        ("", None),
        ("sysctl: unknown oid 'iogpu.wired_limit_mb'\n", None),  # an older macOS
        ("-1\n", None),
    ],
)
def test_the_sysctls_answer_is_parsed(output, mb):
    assert facts.parse_wired_limit_mb(output) == mb


def test_this_linux_host_reports_its_available_memory_as_its_limit(settings, tmp_path):
    settings.HF_HUB_CACHE = tmp_path
    reported = facts.collect_facts(with_models=False)
    assert reported["memory_limit_kind"] == facts.LIMIT_AVAILABLE
    assert 0 < reported["memory_limit"] <= psutil.virtual_memory().total

"""A model's size against the host's memory: fits / tight / won't fit, with the rule as text."""

import pytest

from models_catalog.fit import FITS, TIGHT, TOO_BIG, UNKNOWN, fit

GB = 1024**3


@pytest.mark.parametrize(
    ("size", "memory", "verdict", "css"),
    [
        (2 * GB, 24 * GB, FITS, "ok"),
        (int(14.4 * GB), 24 * GB, FITS, "ok"),  # exactly 60%
        (15 * GB, 24 * GB, TIGHT, "warn"),
        (18 * GB, 24 * GB, TIGHT, "warn"),  # exactly 75%
        (19 * GB, 24 * GB, TOO_BIG, "bad"),
        (40 * GB, 64 * GB, TIGHT, "warn"),
        (377 * GB, 512 * GB, TIGHT, "warn"),  # DeepSeek V3 4-bit on a 512 GB Mac Studio: 74%
        (None, 24 * GB, UNKNOWN, ""),
        (2 * GB, 0, UNKNOWN, ""),
    ],
)
def test_verdict_by_share_of_memory(size, memory, verdict, css):
    result = fit(size, memory)
    assert (result.verdict, result.css) == (verdict, css)


def test_the_rule_is_stated_with_the_host_memory():
    result = fit(15 * GB, 24 * GB)
    assert result.label == "tight"
    assert "60%" in result.rule and "75%" in result.rule
    assert "24.0\xa0GB" in result.rule  # filesizeformat joins with a no-break space
    assert "62%" in result.rule  # this model's share


def test_estimated_sizes_say_about():
    assert "about" in fit(2 * GB, 24 * GB, estimated=True).rule
    assert "about" not in fit(2 * GB, 24 * GB).rule


def test_runs_means_fits_or_tight():
    assert fit(2 * GB, 24 * GB).runs
    assert fit(16 * GB, 24 * GB).runs
    assert not fit(30 * GB, 24 * GB).runs
    assert not fit(None, 24 * GB).runs


def test_unknown_size_says_so():
    assert "size is unknown" in fit(None, 24 * GB).rule


@pytest.mark.parametrize(
    ("macos_gpu", "says_gpu"),
    [(True, True), (False, False)],
    ids=["macOS with Metal", "elsewhere"],
)
def test_the_rule_speaks_of_the_gpus_share_only_on_macos(macos_gpu, says_gpu):
    result = fit(15 * GB, 24 * GB, macos_gpu=macos_gpu)
    assert ("the share macOS lets the GPU use" in result.rule) is says_gpu
    assert ("GPU" in result.rule or "macOS" in result.rule) is says_gpu
    assert "75%" in result.rule and result.verdict == TIGHT  # the same shares everywhere


@pytest.mark.parametrize(
    ("platform", "macos_gpu"),
    [("macOS Metal", True), ("macOS CPU", False), ("Linux CPU", False), ("Linux CUDA", False),
     ("", False)],
)  # fmt: skip
def test_a_host_uses_the_gpu_of_macos_only_with_metal(platform, macos_gpu):
    from models_catalog.models import Host

    assert Host(name="h", platform=platform).uses_macos_gpu is macos_gpu

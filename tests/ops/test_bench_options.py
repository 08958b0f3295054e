"""The gateway bench's list options: what they accept, and what they say about the rest."""

import argparse

import pytest

from bench.gateway_stream import _concurrencies, _intervals


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,4,16", (1, 4, 16)), ("16", (16,)), ("4,1", (4, 1))],
)
def test_concurrencies_are_read_in_the_order_given(text, expected):
    assert _concurrencies(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,four", "use numbers separated by commas"),
        ("", "use numbers separated by commas"),
        ("1,8", "pick from 1, 4, 16"),
        ("-4", "pick from 1, 4, 16"),
    ],
)
def test_an_unknown_concurrency_is_refused_with_the_choices(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        _concurrencies(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("20,40", (20, 40)), ("0", (0,)), ("1000", (1000,))],
)
def test_stream_intervals_are_whole_milliseconds_the_setting_accepts(text, expected):
    assert _intervals(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20,2.5", "use whole milliseconds separated by commas"),
        ("20,", "use whole milliseconds separated by commas"),
        ("1001", "each interval from 0 to 1000 ms"),
        ("20,-1", "each interval from 0 to 1000 ms"),
    ],
)
def test_a_stream_interval_out_of_the_settings_range_is_refused(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        _intervals(text)

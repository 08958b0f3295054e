"""The status-poll bench's `send lag`: how late the load generator sent against its schedule."""

import pytest

from bench.status_poll import send_lags


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ([0.0, 10.0, 20.0, 30.0], [0.0, 0.0, 0.0, 0.0]),  # on time
        ([3.0, 10.0, 20.0, 30.0], [3.0, 0.0, 0.0, 0.0]),  # a late first send is late only itself
        ([100.0, 110.0, 124.0, 130.0], [0.0, 0.0, 4.0, 0.0]),  # a late send among others
        ([], []),
    ],
)
def test_each_send_is_measured_against_the_schedule_no_send_was_ahead_of(sent, expected):
    assert send_lags(sent, rate=100) == pytest.approx(expected)


def test_no_send_counts_as_early():
    sent = [5.0, 12.0, 26.5, 31.0, 40.2, 57.0]
    assert min(send_lags(sent, rate=100)) == pytest.approx(0.0)

"""The benches' verdicts: a bootstrap interval of the median, and the goal judged on it."""

import math

import pytest

from bench.harness import median, median_interval, verdict


def test_interval_holds_the_median_and_narrows_with_more_rounds():
    few = [0.90, 0.97, 1.02, 0.93, 0.99, 0.95, 1.05]
    many = few * 6
    low, high = median_interval(few)
    assert low <= median(few) <= high
    many_low, many_high = median_interval(many)
    assert many_high - many_low < high - low


def test_interval_is_the_same_for_the_same_rounds():
    rounds = [0.91, 0.96, 1.01, 0.97, 0.94]
    assert median_interval(rounds) == median_interval(list(rounds))


def test_interval_of_too_few_rounds_is_unknown():
    assert all(math.isnan(bound) for bound in median_interval([0.9, 1.0]))


@pytest.mark.parametrize(
    ("low", "high", "goal", "higher_is_better", "expected"),
    [
        (0.96, 1.02, 0.95, True, "met"),
        (0.95, 1.02, 0.95, True, "met"),
        (0.90, 0.94, 0.95, True, "missed"),
        (0.93, 0.98, 0.95, True, "within noise"),
        (3.1, 4.9, 5.0, False, "met"),
        (5.2, 6.0, 5.0, False, "missed"),
        (4.1, 5.6, 5.0, False, "within noise"),
    ],
)
def test_verdict_judges_the_whole_interval(low, high, goal, higher_is_better, expected):
    assert verdict(low, high, goal, higher_is_better) == expected

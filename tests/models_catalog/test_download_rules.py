"""The rules of downloads: state machine (on stored rows), speed and ETA, disk space, formatting,
crypto."""

import pytest

from common.states import InvalidTransition
from models_catalog import crypto
from models_catalog.downloads import disk_shortfall, rate_and_eta, space_message
from models_catalog.models import Download, Host
from models_catalog.templatetags.download_tags import duration

S = Download.State

ALLOWED = {
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.PAUSED),
    (S.QUEUED, S.CANCELLED),
    (S.QUEUED, S.FAILED),
    (S.RUNNING, S.QUEUED),
    (S.RUNNING, S.PAUSED),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.COMPLETED),
    (S.PAUSED, S.QUEUED),
    (S.PAUSED, S.CANCELLED),
    (S.FAILED, S.QUEUED),
    (S.FAILED, S.CANCELLED),
    (S.CANCELLED, S.QUEUED),
    (S.COMPLETED, S.DELETED),  # the model left the cache; downloading it again is a new download
}


def _row(state: str) -> Download:
    return Download.objects.create(
        repo_id="acme/tiny", revision="a" * 40, host=Host.objects.this_machine(), state=state
    )


@pytest.mark.django_db
@pytest.mark.parametrize("source", list(S))
@pytest.mark.parametrize("target", list(S))
def test_transitions_follow_the_one_mapping(source, target):
    download = _row(source)
    if (source, target) in ALLOWED:
        download.transition(target, "because")
        assert download.state == target
        assert download.state_reason == "because"
        download.refresh_from_db()
        assert (download.state, download.state_reason) == (target, "because")
    else:
        with pytest.raises(InvalidTransition):
            download.transition(target)
        assert download.state == source
        download.refresh_from_db()
        assert download.state == source


@pytest.mark.django_db
def test_a_failure_records_its_reason_as_the_error_and_a_retry_clears_it():
    download = _row(S.RUNNING)
    download.transition(S.FAILED, "Hub said no")
    assert download.error == "Hub said no"
    assert download.finished_at is not None
    assert download.finished_at == download.state_changed_at
    download.transition(S.QUEUED, "Retried")
    assert download.error == ""
    assert download.finished_at is None


@pytest.mark.django_db
def test_a_move_is_checked_against_the_state_the_database_holds_now():
    """A caller's copy may be stale (a worker or another page moved the row meanwhile)."""
    download = _row(S.RUNNING)
    Download.objects.filter(pk=download.pk).update(state=S.CANCELLED, state_reason="Cancelled")
    with pytest.raises(InvalidTransition, match="A cancelled download cannot become completed"):
        download.transition(S.COMPLETED, "All files verified")
    download.refresh_from_db()
    assert (download.state, download.state_reason) == (S.CANCELLED, "Cancelled")


@pytest.mark.django_db
def test_a_move_writes_the_callers_other_fields_with_it():
    download = _row(S.QUEUED)
    download.transition(S.RUNNING, "Started", lease_owner="me", attempts=1)
    download.refresh_from_db()
    assert (download.state, download.lease_owner, download.attempts) == (S.RUNNING, "me", 1)


@pytest.mark.parametrize(
    ("samples", "total", "expected"),
    [
        ([], 100, (0, None)),
        ([(0.0, 0)], 100, (0, None)),
        ([(0.0, 0), (1.0, 10)], 100, (10, 9)),
        ([(0.0, 0), (2.0, 50), (4.0, 100)], 500, (25, 16)),
        ([(0.0, 10), (1.0, 10)], 100, (0, None)),  # nothing moved: no ETA
        ([(5.0, 10), (5.0, 20)], 100, (0, None)),  # no time passed
        ([(0.0, 0), (1.0, 100)], 100, (100, 0)),  # done
        ([(0.0, 0), (0.5, 1_000_000)], 3_000_000, (2_000_000, 1)),
    ],
)
def test_speed_and_eta_come_from_the_recent_samples(samples, total, expected):
    assert rate_and_eta(samples, total) == expected


@pytest.mark.parametrize(
    ("needed", "free", "reserve", "short"),
    [
        (100, 1000, 0, 0),
        (100, 1000, 900, 0),
        (100, 1000, 901, 1),
        (5000, 1000, 0, 4000),
        (0, 0, 0, 0),
    ],
)
def test_disk_shortfall_keeps_the_reserve_free(needed, free, reserve, short):
    assert disk_shortfall(needed, free, reserve) == short


def test_the_space_message_says_how_much_and_what_to_do():
    message = space_message("org/model", 5 * 1024**3, 1024**3, 512 * 1024**2)
    assert "org/model" in message
    assert "5.0\xa0GB" in message and "1.0\xa0GB" in message
    assert "My models" in message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0, "0 s"), (59, "59 s"), (65, "1 min 5 s"), (3725, "1 h 2 min")],
)
def test_duration_reads_like_a_human_would_say_it(seconds, text):
    assert duration(seconds) == text


def test_percent_is_bounded_and_complete_is_100():
    assert Download(bytes_total=0, bytes_done=0).percent == 0
    assert Download(bytes_total=200, bytes_done=50).percent == 25
    assert Download(bytes_total=200, bytes_done=500).percent == 100
    assert Download(state=S.COMPLETED, bytes_total=0).percent == 100


def test_secrets_round_trip_and_are_not_stored_in_clear(settings):
    ciphertext = crypto.encrypt("hf_secret_value")
    assert "hf_secret_value" not in ciphertext
    assert crypto.decrypt(ciphertext) == "hf_secret_value"
    settings.SECRET_KEY = "another key entirely, rotated by the operator"
    with pytest.raises(crypto.InvalidToken):
        crypto.decrypt(ciphertext)

"""The downloads panel, the start endpoint, a repo's download action and the controls: whole
pages, HTMX partials that poll only while something is active, clear errors."""

import pytest
from django.utils import timezone

from models_catalog import downloads
from models_catalog.models import Download, Host

pytestmark = pytest.mark.django_db

S = Download.State
TINY = "test-org/tiny-llama"
HTMX = {"HX-Request": "true"}


def make_download(user, state=S.RUNNING, repo_id=TINY, **fields) -> Download:
    defaults = {"bytes_total": 1000, "bytes_done": 400, "speed_bps": 100, "eta_seconds": 6}
    defaults.update(fields)
    host = Host.objects.this_machine()
    return Download.objects.create(
        repo_id=repo_id, revision="c" * 40, host=host, requested_by=user, state=state, **defaults
    )


def test_the_panel_shows_every_download_with_its_numbers_and_polls_while_active(
    member_client, make_user
):
    other = make_user("other@example.com")
    make_download(other)
    make_download(other, state=S.FAILED, repo_id="test-org/broken", error="Hub said 500.")
    html = member_client.get("/models/downloads/").content.decode().replace("\xa0", " ")
    assert "<html" in html and TINY in html
    assert "40%" in html and "400 bytes of 1000 bytes" in html and "100 bytes/s" in html
    assert "6 s left" in html and "other@example.com" in html
    assert "Hub said 500." in html and "Retry" in html
    assert 'hx-trigger="every 1s"' in html

    partial = member_client.get("/models/downloads/", headers=HTMX).content.decode()
    assert "<html" not in partial and 'id="downloads-panel"' in partial
    assert 'hx-trigger="every 1s"' in partial


def test_the_panel_stops_polling_when_every_download_is_final(member_client, member):
    make_download(member, state=S.COMPLETED, finished_at=timezone.now())
    partial = member_client.get("/models/downloads/", headers=HTMX).content.decode()
    assert TINY in partial and "100%" in partial
    assert "hx-trigger" not in partial


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"repo_id": ""}, "Enter a model repo id"),
        ({"repo_id": "not a repo"}, "is not a model repo id"),
        ({"repo_id": "a/b", "revision": "../main"}, "is not a revision"),
    ],
)
def test_the_start_form_explains_what_is_wrong(member_client, data, message):
    response = member_client.post("/models/downloads/start/", data)
    assert response.status_code == 400
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not Download.objects.exists()


def test_starting_from_the_panel_queues_it_and_says_so(hf, member_client):
    response = member_client.post("/models/downloads/start/", {"repo_id": TINY}, follow=True)
    html = response.content.decode()
    assert f"Download of {TINY}" in html and "started" in html
    assert Download.objects.get().state == S.QUEUED
    again = member_client.post("/models/downloads/start/", {"repo_id": TINY}, follow=True)
    assert "already downloading: you joined it" in again.content.decode()
    assert Download.objects.count() == 1


def test_a_refused_start_shows_the_reason_on_the_panel(hf, member_client):
    response = member_client.post("/models/downloads/start/", {"repo_id": "test-org/nope"})
    assert response.status_code == 400
    assert "was not found on Hugging Face" in response.content.decode()


def test_the_download_action_of_a_model_offers_download_then_shows_it_live(hf, member_client):
    action = member_client.get(f"/models/downloads/action/?repo_id={TINY}").content.decode()
    assert ">Download</button>" in action and "hx-trigger" not in action

    started = member_client.post(
        "/models/downloads/start/", {"repo_id": TINY, "fragment": "action"}, headers=HTMX
    ).content.decode()
    assert 'class="download-action"' in started and "<html" not in started
    assert 'data-state="queued"' in started and 'hx-trigger="every 1s"' in started
    assert "Pause" in started and "Cancel" in started


def test_the_download_action_says_when_the_model_is_on_disk(hf, member, member_client):
    download, _ = downloads.start_download(TINY, member)
    Download.objects.filter(pk=download.pk).update(state=S.FAILED, error="x")
    from huggingface_hub import snapshot_download

    snapshot_download(TINY, cache_dir=hf.cache, endpoint=hf.hub.url, token=False)
    action = member_client.get(f"/models/downloads/action/?repo_id={TINY}").content.decode()
    assert "On this host" in action and "hx-trigger" not in action


def test_the_download_action_reports_a_refusal_inside_the_fragment(hf, member_client):
    response = member_client.post(
        "/models/downloads/start/",
        {"repo_id": "test-org/tiny-llama-gated", "fragment": "action"},
        headers=HTMX,
    )
    assert response.status_code == 200  # HTMX swaps it in
    assert (
        "This model is gated: an admin must set a Hugging Face token" in response.content.decode()
    )


def test_a_bad_repo_id_in_the_action_url_is_a_clear_400(member_client):
    response = member_client.get("/models/downloads/action/?repo_id=../../etc")
    assert response.status_code == 400
    assert "is not a model repo id" in response.content.decode().replace("&#x27;", "'")


def test_pause_and_resume_over_htmx_answer_with_the_panel(member_client, member):
    download = make_download(member, state=S.QUEUED)
    paused = member_client.post(f"/models/downloads/{download.pk}/pause/", headers=HTMX)
    assert 'id="downloads-panel"' in paused.content.decode()
    download.refresh_from_db()
    assert download.state == S.PAUSED and "Paused by member@example.com" in download.state_reason
    resumed = member_client.post(
        f"/models/downloads/{download.pk}/resume/", {"fragment": "action"}, headers=HTMX
    )
    assert 'class="download-action"' in resumed.content.decode()
    download.refresh_from_db()
    assert download.state == S.QUEUED


def test_a_control_that_does_not_apply_says_why(member_client, member):
    download = make_download(member, state=S.COMPLETED)
    response = member_client.post(f"/models/downloads/{download.pk}/pause/", follow=True)
    assert "This download is completed: it cannot be paused." in response.content.decode()


def test_only_who_started_a_download_or_an_admin_may_cancel_it(
    client, member, make_user, admin_member
):
    other = make_user("other@example.com")
    download = make_download(other, state=S.PAUSED)
    client.force_login(member)
    assert client.post(f"/models/downloads/{download.pk}/cancel/").status_code == 403
    assert Download.objects.get(pk=download.pk).state == S.PAUSED
    client.force_login(admin_member)
    client.post(f"/models/downloads/{download.pk}/cancel/")
    assert Download.objects.get(pk=download.pk).state == S.CANCELLED


def test_controls_answer_only_to_post(member_client, member):
    download = make_download(member)
    assert member_client.get(f"/models/downloads/{download.pk}/pause/").status_code == 405


def test_the_nav_links_to_downloads_and_my_models(member_client):
    html = member_client.get("/models/downloads/").content.decode()
    assert 'href="/models/downloads/"' in html and 'href="/models/local/"' in html

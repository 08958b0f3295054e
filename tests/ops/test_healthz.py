"""`/healthz` reports the database, Redis and the Celery workers, and says what is down."""

import pytest
from django.test import Client


def get_health(client: Client) -> tuple[int, dict]:
    response = client.get("/healthz")
    return response.status_code, response.json()


@pytest.mark.slow
def test_healthz_is_green_with_a_live_worker(celery_worker):
    status, body = get_health(Client())
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "redis": "ok", "workers": "ok"}
    assert celery_worker.hostname in body["workers"]


@pytest.mark.slow
def test_healthz_turns_503_when_the_last_worker_stops(celery_worker):
    celery_worker.stop()
    status, body = get_health(Client())
    assert status == 503
    assert body["checks"]["workers"].startswith("down")
    assert celery_worker.hostname not in body["workers"]


@pytest.mark.django_db
def test_healthz_names_redis_when_it_does_not_answer(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    status, body = get_health(Client())
    assert status == 503
    assert body["checks"]["redis"].startswith("down")
    assert body["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_healthz_needs_no_login():
    response = Client().get("/healthz")
    assert response.status_code in (200, 503)
    assert response["Content-Type"] == "application/json"

"""`/healthz`: is the database, Redis and at least one Celery worker alive?

Public on purpose (load balancers and service managers call it without a session).
Answers 200 when everything is up and 503 naming what is down.
"""

import redis
from celery import current_app as celery_app
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from accounts.access import public

REDIS_TIMEOUT_S = 1.0
WORKER_PING_TIMEOUT_S = 1.0


def database_status() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "down", with its reason
        return f"down: {exc.__class__.__name__}: {exc}"
    return "ok"


def redis_status() -> str:
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"down: {exc}"
    finally:
        client.close()
    return "ok"


def worker_names() -> list[str]:
    """Names of the Celery workers that answer a broadcast ping within the time-out."""
    replies = celery_app.control.ping(timeout=WORKER_PING_TIMEOUT_S)
    return sorted(name for reply in replies for name in reply)


@public  # load balancers and service managers call it without a session
@never_cache
def healthz(request):
    checks = {"database": database_status(), "redis": redis_status()}
    workers: list[str] = []
    if checks["redis"] == "ok":
        try:
            workers = worker_names()
        except Exception as exc:  # noqa: BLE001
            checks["workers"] = f"down: {exc}"
    if "workers" not in checks:
        checks["workers"] = "ok" if workers else "down: no Celery worker answered"
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if healthy else "down", "checks": checks, "workers": workers}
    return JsonResponse(body, status=200 if healthy else 503)

"""The Celery app shared by the web tier, the workers and beat."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("mlx_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

"""The project's URLs: each app's, and the few that live at the top."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from servers.gateway.views import hop_view
from servers.health import healthz
from servers.sharing.metrics import QueueCollector
from servers.usage.views import metrics_view
from servers.views import home

# The Django admin calls itself by the portal's name, not "Django administration".
admin.site.site_header = f"{settings.PORTAL_NAME} administration"
admin.site.site_title = settings.PORTAL_NAME
admin.site.index_title = "Administration"

urlpatterns = [
    path("", home, name="home"),
    # First of the includes: every API request resolves here without trying the pages' patterns.
    path("v1/", include("servers.gateway.urls")),
    path("healthz", healthz, name="healthz"),
    # The usage records' metrics, and the fair queues' (servers/sharing) read live.
    path("metrics", metrics_view, {"collectors": [QueueCollector()]}, name="metrics"),
    path("accounts/", include("allauth.urls")),
    path("", include("accounts.urls")),
    path("models/", include("models_catalog.urls")),
    path("servers/", include("servers.urls")),
    # Another host's web tier reaching a model server here (servers/gateway/hop.py).
    path("internal/hop/<slug:slug>/v1/<path:endpoint>", hop_view, name="hop"),
    path("admin/", admin.site.urls),
]

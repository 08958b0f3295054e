from django.contrib import admin
from django.urls import include, path

from config.health import healthz
from config.views import home
from servers.hop_views import hop_view
from servers.usage_views import metrics_view

urlpatterns = [
    path("", home, name="home"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("accounts/", include("allauth.urls")),
    path("", include("accounts.urls")),
    path("models/", include("models_catalog.urls")),
    path("servers/", include("servers.urls")),
    path("v1/", include("servers.api_urls")),
    # Another host's web tier reaching a model server here (servers/hop.py, docs/hosts.md).
    path("internal/hop/<slug:slug>/v1/<path:endpoint>", hop_view, name="hop"),
    path("admin/", admin.site.urls),
]

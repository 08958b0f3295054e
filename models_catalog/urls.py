from django.urls import path

from models_catalog import download_views, views

app_name = "catalog"

urlpatterns = [
    path("", views.search, name="search"),
    # Repo ids contain a slash: /models/hub/<owner>/<name>. Validated in the view.
    path("hub/<path:repo_id>", views.model_detail, name="model-detail"),
    # Downloads and My models (models_catalog/download_views.py)
    path("downloads/", download_views.downloads_panel, name="downloads"),
    path("downloads/start/", download_views.download_start, name="download-start"),
    path("downloads/action/", download_views.download_action, name="download-action"),
    path("downloads/<int:pk>/pause/", download_views.download_pause, name="download-pause"),
    path("downloads/<int:pk>/resume/", download_views.download_resume, name="download-resume"),
    path("downloads/<int:pk>/cancel/", download_views.download_cancel, name="download-cancel"),
    path("downloads/<int:pk>/retry/", download_views.download_retry, name="download-retry"),
    path("local/", download_views.my_models, name="my-models"),
    path("local/delete/", download_views.local_model_delete, name="local-model-delete"),
    path("hub-token/", download_views.hub_token, name="hub-token"),
]

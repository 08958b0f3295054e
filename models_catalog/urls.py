from django.urls import path

from models_catalog import views

app_name = "catalog"

urlpatterns = [
    path("", views.search, name="search"),
    # Repo ids contain a slash: /models/hub/<owner>/<name>. Validated in the view.
    path("hub/<path:repo_id>", views.model_detail, name="model-detail"),
]

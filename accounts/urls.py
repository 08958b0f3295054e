from django.urls import path

from accounts import views
from accounts.audit import views as audit_views

app_name = "accounts"

urlpatterns = [
    path("status/pending/", views.pending, name="pending"),
    path("status/disabled/", views.disabled, name="disabled"),
    path("users/", views.users, name="users"),
    path("users/pending-badge/", views.pending_badge, name="pending-badge"),
    path("users/<int:pk>/", views.user_sharing, name="user-sharing"),
    path("users/<int:pk>/<slug:action>/", views.user_action, name="user-action"),
    path("groups/", views.group_list, name="groups"),
    path("groups/<int:pk>/", views.group_detail, name="group"),
    path("groups/<int:pk>/rename/", views.group_rename, name="group-rename"),
    path("groups/<int:pk>/members/", views.group_members, name="group-members"),
    path("groups/<int:pk>/limits/", views.group_limits, name="group-limits"),
    path("groups/<int:pk>/delete/", views.group_delete, name="group-delete"),
    path("api-keys/", views.api_keys, name="api-keys"),
    path("api-keys/<int:pk>/revoke/", views.api_key_revoke, name="api-key-revoke"),
    path("audit/", audit_views.audit_log, name="audit"),
    path("audit/export.csv", audit_views.audit_export, name="audit-export"),
]

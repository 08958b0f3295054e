from django.urls import path

from servers import hosts_guide, route_views, views
from servers.chat import views as chat_views
from servers.sharing import views as sharing_views
from servers.usage import views as usage_views

app_name = "servers"

urlpatterns = [
    path("", views.server_list, name="list"),
    path("chat/", chat_views.chat, name="chat"),
    path("chat/<int:pk>/", chat_views.chat, name="chat-conversation"),
    path("chat/stream/", chat_views.chat_stream, name="chat-stream"),
    path("chat/<int:pk>/rename/", chat_views.conversation_rename, name="chat-rename"),
    path("chat/<int:pk>/delete/", chat_views.conversation_delete, name="chat-delete"),
    path("chat/<int:pk>/settings/", chat_views.conversation_settings, name="chat-settings"),
    path("chat/<int:pk>/stopped/", chat_views.conversation_stopped, name="chat-stopped"),
    path("chat/images/<int:pk>/", chat_views.message_image, name="chat-image"),
    path(
        "chat/images/<int:pk>/full/",
        chat_views.message_image,
        {"full": True},
        name="chat-image-full",
    ),
    path(
        "chat/<int:pk>/export.md",
        chat_views.conversation_export,
        {"fmt": "md"},
        name="chat-export-md",
    ),
    path(
        "chat/<int:pk>/export.json",
        chat_views.conversation_export,
        {"fmt": "json"},
        name="chat-export-json",
    ),
    path("usage/", usage_views.usage_page, name="usage"),
    path("usage/standing/", sharing_views.standing, name="standing"),
    path("usage/today/", sharing_views.today, name="sharing-today"),
    path("hosts/", views.host_list, name="hosts"),
    path("routes/", route_views.route_list, name="routes"),
    path("routes/new/", route_views.route_create, name="route-create"),
    path("routes/<int:pk>/edit/", route_views.route_edit, name="route-edit"),
    path("routes/<int:pk>/delete/", route_views.route_delete, name="route-delete"),
    path("hosts/<slug:name>/plan/", views.host_plan, name="host-plan"),
    path("hosts/guide/", hosts_guide.hosts_guide, name="hosts-guide"),
    path("picker/", views.picker, name="picker"),
    path("need/", views.profile_need, name="profile-need"),
    path("new/", views.profile_create, name="profile-create"),
    path("serve/", views.serve, name="serve"),
    path("api/snippets/", views.api_snippets, name="api-snippets"),
    path("<slug:slug>/edit/", views.profile_edit, name="profile-edit"),
    path("<slug:slug>/duplicate/", views.profile_duplicate, name="profile-duplicate"),
    path("<slug:slug>/delete/", views.profile_delete, name="profile-delete"),
    path("<slug:slug>/start/", views.server_start, name="server-start"),
    path("<slug:slug>/stop/", views.server_stop, name="server-stop"),
    path("<slug:slug>/restart/", views.server_restart, name="server-restart"),
    path("<slug:slug>/log/", views.server_log, name="log"),
]

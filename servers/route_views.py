"""The Routes page: public model names served by one or more profiles (docs/servers.md,
"Routes"). Any member sees the routes and may call them; the owner or an admin edits one."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from servers.models import Route
from servers.route_forms import MEMBER_FIELDS, RouteForm


def route_list(request: HttpRequest) -> HttpResponse:
    routes = Route.objects.select_related("owner").prefetch_related("members__profile")
    rows = [
        {"route": route, "members": [m.profile for m in route.members.all()],
         "can_edit": route.can_edit(request.user)}
        for route in routes
    ]  # fmt: skip
    return render(request, "servers/routes.html", {"rows": rows})


@require_http_methods(["GET", "POST"])
def route_create(request: HttpRequest) -> HttpResponse:
    form = RouteForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            route = form.save(commit=False)
            route.owner = request.user
            route.save()
            form.save_members(route)
        messages.success(request, f"Route “{route.name}” created: clients may call it now.")
        return redirect("servers:routes")
    return _form(request, form, "New route")


def _editable(request: HttpRequest, pk: int) -> Route:
    route = get_object_or_404(Route, pk=pk)
    if not route.can_edit(request.user):
        raise PermissionDenied("Only the route's owner or an admin can change it.")
    return route


@require_http_methods(["GET", "POST"])
def route_edit(request: HttpRequest, pk: int) -> HttpResponse:
    route = _editable(request, pk)
    form = RouteForm(request.POST or None, instance=route, user=request.user)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            form.save()
        messages.success(request, f"Route “{route.name}” saved.")
        return redirect("servers:routes")
    return _form(request, form, f"Edit route {route.name}")


@require_http_methods(["GET", "POST"])
def route_delete(request: HttpRequest, pk: int) -> HttpResponse:
    route = _editable(request, pk)
    if request.method == "POST":
        name = route.name
        route.delete()
        messages.success(request, f"Route “{name}” deleted.")
        return redirect("servers:routes")
    return render(request, "servers/route_delete.html", {"route": route})


def _form(request: HttpRequest, form: RouteForm, title: str) -> HttpResponse:
    members = [form[name] for name in MEMBER_FIELDS]
    return render(
        request, "servers/route_form.html", {"form": form, "members": members, "title": title}
    )

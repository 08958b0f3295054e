"""The Hosts page (admins): every host's state, heartbeat, memory, disk, versions and servers."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.access import staff_only
from servers.operations import host_rows


@staff_only
def host_list(request: HttpRequest) -> HttpResponse:
    """The page; its HTMX poll (every 5 s) gets only the table's body."""
    context = {
        "rows": host_rows(),
        "this_host": settings.HOST_NAME,
        "offline_after": settings.HOST_OFFLINE_AFTER,
    }
    template = "servers/hosts.html#rows" if request.htmx else "servers/hosts.html"
    return render(request, template, context)

"""The dashboard: what this host has and what the portal is doing."""

from django.shortcuts import render

from models_catalog.models import Host
from servers.services import running_count


def home(request):
    host = Host.local()
    host.record_facts()  # fresh memory and disk figures; only the worker vouches it is online
    return render(request, "home.html", {"host": host, "running_servers": running_count()})

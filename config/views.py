"""The dashboard: what this host has and what the portal is doing; and the answer to a form
that Django's CSRF check refused."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from models_catalog.models import Host
from servers.services import running_count


def home(request):
    host = Host.local()
    host.record_facts()  # fresh memory and disk figures; only the worker vouches it is online
    return render(request, "home.html", {"host": host, "running_servers": running_count()})


CSRF_REFUSED = (
    "This form was sent without its security token, or from another site. "
    "Reload the page and send it again."
)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the portal's 403 page saying what to do (JSON for a script that does
    not accept HTML, as the chat's fetch()), instead of Django's page, whose inline style the
    Content-Security-Policy refuses."""
    accept = request.headers.get("Accept", "")
    if accept and "text/html" not in accept and "*/*" not in accept:
        return JsonResponse({"error": CSRF_REFUSED}, status=403)
    return render(request, "403.html", {"reason": CSRF_REFUSED}, status=403)

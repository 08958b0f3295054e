"""Catalog pages: search Hugging Face for MLX models, and one model's details."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from models_catalog import catalog, hub, library
from models_catalog.forms import SearchForm
from models_catalog.models import Host
from models_catalog.validators import validate_repo_id


def _partial(request: HttpRequest) -> bool:
    """An HTMX swap (not a history restore, which needs the whole page)."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def search(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.GET or None)
    host = Host.objects.chosen(request.GET.get("host"))  # "fits" is judged on this host's memory
    context = {
        "form": form,
        "host": host,
        "hosts": Host.objects.order_by("name") if Host.objects.count() > 1 else [],
        "results": None,
        "max_hub_pages": settings.CATALOG_MAX_HUB_PAGES,
    }
    status = 200
    if form.is_bound and not form.is_valid():
        # htmx does not swap 4xx answers: an HTMX request gets its message with a 200.
        status = 200 if _partial(request) else 400
    else:
        if not form.is_bound:
            form = SearchForm({})
            form.is_valid()
            context["form"] = form
        query = form.query()
        results = catalog.search(query, host.memory_total, macos_gpu=host.uses_macos_gpu)
        context.update(
            results=results,
            on_disk=library.models_on(host, [m.repo_id for m in results.models]),
            query=query,
            next_url=_page_url(request, results.next_cursor, query.page + 1),
            first_url=_page_url(request, "", 1),
        )
    template = "models_catalog/search.html#results" if _partial(request) else None
    return render(request, template or "models_catalog/search.html", context, status=status)


def _page_url(request: HttpRequest, cursor: str | None, page: int) -> str:
    """This search's URL at another page (empty when there is no such page)."""
    if page > 1 and not cursor:
        return ""
    params = [(k, v) for k, values in request.GET.lists() for v in values]
    params = [(k, v) for k, v in params if k not in ("cursor", "page")]
    if page > 1:
        params += [("cursor", cursor), ("page", str(page))]
    return reverse("catalog:search") + ("?" + urlencode(params) if params else "")


def model_detail(request: HttpRequest, repo_id: str) -> HttpResponse:
    try:
        validate_repo_id(repo_id)
    except ValidationError as error:
        context = {"repo_id": repo_id[:100], "invalid": error.messages[0]}
        return render(request, "models_catalog/detail.html", context, status=404)
    detail = catalog.model_detail(repo_id)
    host = Host.objects.chosen(request.GET.get("host"))
    status = 200
    if detail.model is None:
        status = 404
        if isinstance(detail.error, hub.HubAuthRequired):
            status = 403
        elif detail.error is not None and not isinstance(detail.error, hub.HubNotFound):
            status = 503
    context = {
        "repo_id": repo_id,
        "detail": detail,
        "model": detail.model,
        "host": host,
        "fit": detail.model.fit_on(host) if detail.model else None,
        "on_disk": library.local_model_on(host, repo_id, here=detail.local),
        "hosts": Host.objects.order_by("name") if Host.objects.count() > 1 else [],
        "hub_url": hub.hub_url(repo_id),
    }
    return render(request, "models_catalog/detail.html", context, status=status)

"""The Audit page and its CSV export. Admins see every entry; a member sees the entries about
their own account and what they own (profiles, keys, downloads), and those they made."""

from __future__ import annotations

import csv
import json

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.audit.forms import AuditFilterForm
from accounts.audit.models import AuditEntry, AuditQuerySet

PAGE_SIZE = 50
CSV_COLUMNS = [
    "when", "who", "actor_id", "kind", "what", "object_type", "object_id", "object",
    "owner_id", "from", "before", "after", "detail",
]  # fmt: skip


def visible_to(user) -> AuditQuerySet:
    entries = AuditEntry.objects.all()
    return entries if user.is_admin else entries.about(user)


def _filtered(request: HttpRequest) -> tuple[AuditFilterForm, AuditQuerySet]:
    form = AuditFilterForm(request.GET, admin=request.user.is_admin)
    return form, form.filter(visible_to(request.user))


@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    form, entries = _filtered(request)
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "filters": query.urlencode()}
    template = "accounts/audit.html#entries" if request.htmx else "accounts/audit.html"
    return render(request, template, context)


def _cell(value: object) -> str:
    """A value for a spreadsheet: text that a spreadsheet would run as a formula (=, +, -, @)
    is quoted with a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _row(entry: AuditEntry) -> list[str]:
    changes = [
        json.dumps(side, sort_keys=True) if side else "" for side in (entry.before, entry.after)
    ]
    values = [
        timezone.localtime(entry.at).isoformat(), entry.actor_label, entry.actor_id, entry.action,
        entry.get_action_display(), entry.object_type, entry.object_id, entry.object_label,
        entry.owner_id, entry.address, *changes, entry.detail,
    ]  # fmt: skip
    return [_cell(value) for value in values]


@require_GET
def audit_export(request: HttpRequest) -> HttpResponse:
    """The entries the page's filters select, all pages, as CSV."""
    form, entries = _filtered(request)
    if not form.is_valid():
        return render(request, "accounts/audit.html", {"form": form, "page": None}, status=400)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="mlx-portal-audit-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_row(entry) for entry in entries.iterator(chunk_size=500))
    return response

"""What a person sees of their limits, and what an admin sees of today's use: fragments that the
Usage page and the API keys page load (`hx-get`), so that those pages' rooms need not know
this one."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db.models import Count, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.access import staff_only
from accounts.models import Limits, User
from accounts.teams import LIMIT_FIELDS, limits_for
from servers.models import REFUSAL_CODES, UsageRecord
from servers.sharing import admission


def standing(request: HttpRequest) -> HttpResponse:
    """The viewer's use now against their limits (blank when they have none)."""
    limits = limits_for(request.user)
    context = {
        "standing": admission.standing(request.user, limits) if limits.any else None,
        "time_zone": settings.TIME_ZONE,
    }
    return render(request, "servers/_standing.html", context)


@staff_only
def today(request: HttpRequest) -> HttpResponse:
    """Per person and per group: today's requests, tokens and refusals, and the limits."""
    records = UsageRecord.objects.filter(finished_at__gte=admission.day_start(), user__isnull=False)
    per_user = {
        row["user"]: row
        for row in records.values("user")
        .annotate(
            requests=Count("id"),
            tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
            refused=Count("id", filter=Q(error_code__in=REFUSAL_CODES)),
        )
        .order_by()
    }
    people = []
    for user in User.objects.filter(pk__in=per_user).order_by("email"):
        row = per_user[user.pk]
        limits = limits_for(user)
        people.append({**row, "user": user, "limits": limits})
    groups = []
    own = {limits.group_id: limits for limits in Limits.objects.filter(group__isnull=False)}
    for group in Group.objects.annotate(members=Count("user")).order_by("name"):
        ids = set(group.user_set.values_list("pk", flat=True))
        used = [per_user[pk] for pk in ids if pk in per_user]
        groups.append(
            {
                "group": group,
                "members": group.members,
                "active": len(used),
                "requests": sum(row["requests"] for row in used),
                "tokens": sum(row["tokens"] or 0 for row in used),
                "refused": sum(row["refused"] for row in used),
                "limits": {name: getattr(own.get(group.pk), name, None) for name in LIMIT_FIELDS},
            }
        )
    return render(request, "servers/_sharing_today.html", {"people": people, "groups": groups})

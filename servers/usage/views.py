"""The Usage page (own usage; admins everyone's) and the Prometheus `/metrics` endpoint."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.access import public
from servers.models import Route, ServerProfile, UsageDay, UsageRecord
from servers.usage import metrics, records

MAX_RANGE_DAYS = 366
EARLIEST = date(2000, 1, 1)  # no usage is older than the portal


class UsageFilterForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    user = forms.ModelChoiceField(
        queryset=get_user_model().objects.order_by("email"),
        required=False,
        to_field_name="email",
        empty_label="Everyone",
        error_messages={"invalid_choice": "No user has that email address."},
    )

    model = forms.ChoiceField(required=False, label="Model")
    route = forms.ChoiceField(required=False, label="Route")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The names usage was recorded under (kept when a profile or route is gone), and today's.
        models = set(UsageDay.objects.values_list("profile_name", flat=True).distinct()[:500])
        models |= set(ServerProfile.objects.values_list("name", flat=True)[:500])
        routes = set(
            UsageRecord.objects.exclude(route_name="")
            .values_list("route_name", flat=True)
            .distinct()[:500]
        )
        routes |= set(Route.objects.values_list("name", flat=True)[:500])
        invalid = "No usage is recorded under that name: pick one from the list."
        self.fields["model"].choices = [("", "Every model"), *((m, m) for m in sorted(models))]
        self.fields["model"].error_messages["invalid_choice"] = invalid
        self.fields["route"].choices = [("", "Any route"), *((r, r) for r in sorted(routes))]
        self.fields["route"].error_messages["invalid_choice"] = invalid

    def clean(self):
        data = super().clean()
        today = timezone.localdate()
        earliest, latest = EARLIEST, today + timedelta(days=MAX_RANGE_DAYS)
        for name in ("start", "end"):
            day = data.get(name)
            if day is not None and not earliest <= day <= latest:
                # Also keeps the arithmetic below and the day series off date.min / date.max.
                self.add_error(name, f"Pick a date between {earliest} and {latest}.")
                return data
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=29)
        if start > end:
            raise ValidationError("The start date must be on or before the end date.")
        if (end - start).days >= MAX_RANGE_DAYS:
            raise ValidationError(f"Pick a range of at most {MAX_RANGE_DAYS} days.")
        data["start"], data["end"] = start, end
        return data


def usage_page(request: HttpRequest) -> HttpResponse:
    """A member sees their own usage; an admin everyone's (or one user's)."""
    is_admin = request.user.is_admin
    form = UsageFilterForm(request.GET)
    if not is_admin:
        del form.fields["user"]
    today = timezone.localdate()
    start, end = today - timedelta(days=29), today
    who = None if is_admin else request.user
    model = route = ""
    if form.is_valid():
        start, end = form.cleaned_data["start"], form.cleaned_data["end"]
        model, route = form.cleaned_data["model"], form.cleaned_data["route"]
        if is_admin:
            who = form.cleaned_data.get("user")
    summary = records.summary(start, end, user=who, model=model, route=route)
    series = records.daily_series(summary.by_day, start, end)
    peak = max((n for _, n in series), default=0)
    context = {
        "form": form,
        "summary": summary,
        "series": series,
        "spark": records.sparkline_points([n for _, n in series], width=600, height=60),
        "peak": peak,
        "start": start,
        "end": end,
        "who": who,
        "everyone": who is None,
        "model": model,
        "route": route,
        "audio_tokens_per_second": records.AUDIO_TOKENS_PER_SECOND,
    }
    return render(request, "servers/usage.html", context)


@public  # Prometheus: the view itself allows a client on this machine or the metrics token
def metrics_view(request: HttpRequest, collectors: Iterable = ()) -> HttpResponse:
    """Prometheus metrics: from localhost, or with `Authorization: Bearer <METRICS_TOKEN>`.
    `collectors` (from the URL's wiring) add their metrics: the fair queues'."""
    if not metrics.allowed(request):
        return HttpResponse(
            "Metrics are served to localhost, or with Authorization: Bearer <METRICS_TOKEN>.\n",
            status=403,
            content_type="text/plain",
        )
    body, content_type = metrics.exposition(collectors)
    return HttpResponse(body, content_type=content_type)

"""Thin views: parse the request, call one function of `accounts.approval` or
`accounts.api_keys`, render a page or its named partial."""

from django.contrib import messages
from django.contrib.auth.models import Group
from django.db.models import Count, Prefetch
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import approval, groups
from accounts.access import staff_only
from accounts.api_keys import create_api_key, revoke_api_key
from accounts.forms import (
    ApiKeyForm,
    GroupForm,
    GroupMembersForm,
    LimitsForm,
    UserFilterForm,
    UserSharingForm,
)
from accounts.models import ApiKey, User


def pending(request: HttpRequest) -> HttpResponse:
    if request.user.is_approved:
        return redirect("home")
    if request.user.status == User.Status.DISABLED or not request.user.is_active:
        return redirect("accounts:disabled")
    return render(request, "accounts/pending.html")


def disabled(request: HttpRequest) -> HttpResponse:
    if request.user.is_approved:
        return redirect("home")
    if request.user.status == User.Status.PENDING and request.user.is_active:
        return redirect("accounts:pending")
    return render(request, "accounts/disabled.html")


# Users page (admins) ----------------------------------------------------------------------

USER_ACTIONS = {
    "approve": (approval.approve, "approved"),
    "disable": (approval.disable, "disabled"),
    "make-admin": (approval.make_admin, "is now an admin"),
    "remove-admin": (approval.remove_admin, "is no longer an admin"),
}


def _status_options() -> list[tuple[str, str, int]]:
    counts = dict(User.objects.order_by().values_list("status").annotate(Count("pk")))
    return [
        ("", "All statuses", sum(counts.values())),
        *((value, label, counts.get(value, 0)) for value, label in User.Status.choices),
    ]


@staff_only
@require_GET
def users(request: HttpRequest) -> HttpResponse:
    form = UserFilterForm(request.GET)
    context = {
        "form": form,
        "users": form.filter(
            User.objects.select_related("approved_by", "limits")
            .prefetch_related(Prefetch("groups", Group.objects.order_by("name")))
            .order_by("-date_joined")
        ),
        "status_options": _status_options(),
        "selected_status": form["status"].value() or "",
    }
    template = "accounts/users.html#user-table" if request.htmx else "accounts/users.html"
    return render(request, template, context)


@staff_only
@require_POST
def user_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    if action not in USER_ACTIONS:
        raise Http404(f"Unknown action {action!r}.")
    user = get_object_or_404(User, pk=pk)
    change, done = USER_ACTIONS[action]
    error = None
    try:
        change([user], by=request.user)
    except approval.LastAdminError as exc:
        error = exc.message
    if not request.htmx:
        if error:
            messages.error(request, error)
        else:
            messages.success(request, f"{user} {done}.")
        return redirect("accounts:users")
    user.refresh_from_db()
    status = request.POST.get("status", "")
    context = {
        "row": user,
        "error": error,
        "notice": None if error else done,
        "pending_count": approval.pending_count(),
        "status_options": _status_options(),
        "selected_status": status if status in User.Status.values else "",
    }
    return render(request, "accounts/_user_action_result.html", context)


@staff_only
@require_http_methods(["GET", "POST"])
def user_sharing(request: HttpRequest, pk: int) -> HttpResponse:
    """A person's groups and their own limits (overriding their groups')."""
    person = get_object_or_404(User, pk=pk)
    if request.method == "POST":
        form = UserSharingForm(request.POST)
        if form.is_valid():
            changed = approval.set_groups(person, form.group_names(), by=request.user)
            changed |= groups.set_limits(person, form.limits(), by=request.user)
            done = "saved" if changed else "unchanged"
            messages.success(request, f"Groups and limits of {person} {done}.")
            return redirect("accounts:user-sharing", pk=person.pk)
    else:
        initial = {"groups": list(person.groups.all()), **groups.limits_of(person)}
        form = UserSharingForm(initial=initial)
    context = {"person": person, "form": form, "applying": groups.applying(person)}
    return render(request, "accounts/user_sharing.html", context)


@staff_only
@require_GET
def pending_badge(request: HttpRequest) -> HttpResponse:
    return render(request, "base.html#pending-badge", {"pending_count": approval.pending_count()})


# Groups page (admins) ---------------------------------------------------------------------


@staff_only
@require_http_methods(["GET", "POST"])
def group_list(request: HttpRequest) -> HttpResponse:
    """The groups with their members and limits; a new group made here."""
    form = GroupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        group = groups.create_group(form.cleaned_data["name"], by=request.user)
        messages.success(request, f"Group “{group.name}” created: add its members and limits.")
        return redirect("accounts:group", pk=group.pk)
    rows = (
        Group.objects.select_related("limits")
        .annotate(member_count=Count("user", distinct=True))
        .prefetch_related("server_profiles")
        .order_by("name")
    )
    return render(request, "accounts/groups.html", {"form": form, "groups": rows})


def _group_page(request: HttpRequest, group: Group, **forms) -> HttpResponse:
    context = {
        "group": group,
        "name_form": forms.get("name_form") or GroupForm(initial={"name": group.name}),
        "members_form": forms.get("members_form")
        or GroupMembersForm(initial={"members": list(group.user_set.all())}),
        "limits_form": forms.get("limits_form") or LimitsForm(initial=groups.limits_of(group)),
        "profiles": group.server_profiles.order_by("name"),
    }
    return render(request, "accounts/group.html", context)


@staff_only
@require_GET
def group_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _group_page(request, get_object_or_404(Group, pk=pk))


@staff_only
@require_POST
def group_rename(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(Group, pk=pk)
    old = group.name
    form = GroupForm(request.POST, group=group)
    if not form.is_valid():
        return _group_page(request, group, name_form=form)
    if groups.rename_group(group, form.cleaned_data["name"], by=request.user):
        messages.success(request, f"Group “{old}” renamed “{group.name}”.")
    return redirect("accounts:group", pk=group.pk)


@staff_only
@require_POST
def group_members(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(Group, pk=pk)
    form = GroupMembersForm(request.POST)
    if not form.is_valid():
        return _group_page(request, group, members_form=form)
    changed = groups.set_members(group, form.cleaned_data["members"], by=request.user)
    messages.success(request, f"Members of “{group.name}” {'saved' if changed else 'unchanged'}.")
    return redirect("accounts:group", pk=group.pk)


@staff_only
@require_POST
def group_limits(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(Group, pk=pk)
    form = LimitsForm(request.POST)
    if not form.is_valid():
        return _group_page(request, group, limits_form=form)
    changed = groups.set_limits(group, form.limits(), by=request.user)
    messages.success(request, f"Limits of “{group.name}” {'saved' if changed else 'unchanged'}.")
    return redirect("accounts:group", pk=group.pk)


@staff_only
@require_http_methods(["GET", "POST"])
def group_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Asks first, saying what the deletion touches; deletes on POST."""
    group = get_object_or_404(Group, pk=pk)
    if request.method == "POST":
        groups.delete_group(group, by=request.user)
        messages.success(request, f"Group “{group.name}” deleted.")
        return redirect("accounts:groups")
    context = {"group": group, "reach": groups.reach(group)}
    return render(request, "accounts/group_confirm_delete.html", context)


# API keys ---------------------------------------------------------------------------------


def api_keys(request: HttpRequest) -> HttpResponse:
    new_key = None
    if request.method == "POST":
        form = ApiKeyForm(request.POST, user=request.user)
        if form.is_valid():
            new_key = create_api_key(request.user, form.cleaned_data["name"])
            form = ApiKeyForm(user=request.user)
    else:
        form = ApiKeyForm(user=request.user)
    context = {
        "form": form,
        "new_key": new_key,
        "keys": _live_keys(request.user),
    }
    template = "accounts/api_keys.html#keys" if request.htmx else "accounts/api_keys.html"
    return render(request, template, context)


def _live_keys(user: User):
    return ApiKey.objects.filter(user=user, revoked_at__isnull=True)


@require_POST
def api_key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    api_key = get_object_or_404(ApiKey, pk=pk, user=request.user, revoked_at__isnull=True)
    revoke_api_key(api_key)
    if request.htmx and request.htmx.target == "keys":  # the key just shown: redraw it all
        context = {
            "form": ApiKeyForm(user=request.user),
            "keys": _live_keys(request.user),
            "revoked": api_key,
        }
        return render(request, "accounts/api_keys.html#keys", context)
    if request.htmx:  # the row goes; the status line says so
        return render(request, "accounts/_key_status.html", {"revoked": api_key, "oob": True})
    messages.success(request, f"Revoked the key “{api_key.name}”.")
    return redirect("accounts:api-keys")


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

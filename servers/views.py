"""Servers pages: profiles (create, edit, duplicate, delete), the tiles, actions and logs.

Access: the accounts middleware lets approved users in; here only the owner-or-admin rule for
editing and deleting is checked. Any member may start, stop and restart any server.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods, require_POST

from accounts.access import staff_only
from accounts.audit import log as audit
from models_catalog.hosts.facts import collect_facts
from models_catalog.models import Host
from servers import memory_plan, serving, tiles
from servers.forms import HostPlanForm, ServerProfileForm
from servers.models import Engine, ServerProfile
from servers.operations import host_rows
from servers.supervision import lifecycle, supervisor
from servers.validation import KV_BITS_CHOICES

LOG_LINES_DEFAULT = 200
LOG_LINES_MAX = 2000
COPIED_FIELDS = [
    f for f in ServerProfileForm.Meta.fields if f not in {"name", "slug", "port", "auto_start"}
]


def _query(request: HttpRequest) -> str:
    """The filter text: control characters (NUL included, which PostgreSQL refuses) dropped."""
    text = "".join(c for c in request.GET.get("q") or "" if c.isprintable())
    return text.strip()[:100]


def server_list(request: HttpRequest) -> HttpResponse:
    """The Servers page; an HTMX request gets only the tiles (the 2 s poll and the search),
    or `204 No Content` when it says it shows them already (servers/tiles.py)."""
    query = _query(request)
    shown = tiles.tiles_for(request.user, query)
    shown_version = tiles.version(shown, query)
    if request.htmx:
        if request.headers.get("X-Tiles-Version") == shown_version:
            return HttpResponse(status=204)  # htmx swaps nothing: no flicker, no work
        # The fragment is the autoescaping template `servers/list.html#tiles`, rendered (and
        # kept) by tiles.fragment: HTML from a template, not built from the request here.
        return HttpResponse(tiles.fragment(shown, query, shown_version))
    return render(request, "servers/list.html", tiles.context(shown, query, shown_version))


def picker(request: HttpRequest) -> HttpResponse:
    """A searchable list of profiles (name or model id) for choosing one, as an HTMX partial."""
    query = _query(request)
    hidden = ServerProfile.objects.hidden_from(request.user)
    profiles = lifecycle.profiles_for_tiles(query).exclude(pk__in=hidden)[:50]
    return render(request, "servers/picker.html", {"profiles": profiles, "q": query})


def _get_profile(request: HttpRequest, slug: str) -> ServerProfile:
    """The profile `slug` if the viewer may see it (servers.models.may_see), else 404: a
    profile of another team is not there for them."""
    profiles = ServerProfile.objects.visible_to(request.user).select_related("host", "owner")
    return get_object_or_404(profiles, slug=slug)


def _editable(request: HttpRequest, slug: str) -> ServerProfile:
    profile = _get_profile(request, slug)
    if not profile.can_edit(request.user):
        raise PermissionDenied("Only the profile's owner or an admin can change it.")
    return profile


@require_http_methods(["GET", "POST"])
def profile_create(request: HttpRequest) -> HttpResponse:
    # ?model=<repo id> picks the model (and the engine that fits it) of a new profile.
    initial = {"model_id": model} if (model := request.GET.get("model", "")[:96]) else {}
    form = ServerProfileForm(request.POST or None, initial=initial, user=request.user)
    if request.method == "POST" and form.is_valid():
        profile = form.save(commit=False)
        profile.owner = request.user
        profile.save()
        form.save_m2m()  # the group rule, when an admin set one
        profile.get_instance()
        audit.record(request.user, audit.Action.PROFILE_CREATE, profile, after=form.cleaned_data)
        messages.success(request, f"Profile “{profile.name}” created. Start it when you need it.")
        return redirect("servers:list")
    return render(request, "servers/form.html", {"form": form, "title": "New server profile"})


@require_http_methods(["GET", "POST"])
def profile_edit(request: HttpRequest, slug: str) -> HttpResponse:
    profile = _editable(request, slug)
    form = ServerProfileForm(request.POST or None, instance=profile, user=request.user)
    if request.method == "POST" and form.is_valid():
        profile = form.save()
        audit.record(request.user, audit.Action.PROFILE_EDIT, profile, **audit.form_changes(form))
        note = ""
        if profile.get_instance().is_active:
            note = " Restart the server to apply the changes."
        messages.success(request, f"Profile “{profile.name}” saved.{note}")
        return redirect("servers:list")
    context = {"form": form, "title": f"Edit {profile.name}", "profile": profile}
    return render(request, "servers/form.html", context)


@require_http_methods(["GET", "POST"])
def profile_duplicate(request: HttpRequest, slug: str) -> HttpResponse:
    """A new profile prefilled from another one (any member may copy any profile)."""
    source = _get_profile(request, slug)
    initial = {field: getattr(source, field) for field in COPIED_FIELDS}
    initial["host"] = source.host_id
    initial["name"] = f"Copy of {source.name}"[:80]
    initial["allowed_groups"] = list(source.allowed_groups.all())
    if not request.user.is_admin:
        # Only an admin turns on trust-remote-code (a copy may serve another model): a
        # member's copy starts without it, and says so.
        initial["trust_remote_code"] = False
    form = ServerProfileForm(request.POST or None, initial=initial, user=request.user)
    if source.trust_remote_code and not request.user.is_admin:
        form.fields["trust_remote_code"].help_text = (
            f"“{source.name}” runs with trust-remote-code; this copy runs without it (only an "
            "admin can turn it on)."
        )
    if request.method == "POST" and form.is_valid():
        profile = form.save(commit=False)
        profile.owner = request.user
        profile.save()
        form.save_m2m()  # the group rule an admin chose
        if "allowed_groups" not in form.fields:  # a member's copy keeps the source's rule
            profile.allowed_groups.set(source.allowed_groups.all())
        profile.get_instance()
        audit.record(
            request.user, audit.Action.PROFILE_CREATE, profile, after=form.cleaned_data,
            detail=f"A copy of “{source.name}”.",
        )  # fmt: skip
        messages.success(request, f"Profile “{profile.name}” created from “{source.name}”.")
        return redirect("servers:list")
    context = {"form": form, "title": f"Duplicate {source.name}", "source": source}
    return render(request, "servers/form.html", context)


@require_http_methods(["GET", "POST"])
def profile_delete(request: HttpRequest, slug: str) -> HttpResponse:
    profile = _editable(request, slug)
    if refusal := profile.delete_refusal():
        messages.error(request, refusal)
        return redirect("servers:list")
    if request.method == "POST":
        name = profile.name
        with transaction.atomic():
            audit.record(request.user, audit.Action.PROFILE_DELETE, profile)
            profile.delete()
        messages.success(request, f"Profile “{name}” deleted.")
        return redirect("servers:list")
    return render(request, "servers/confirm_delete.html", {"profile": profile})


@require_POST
def serve(request: HttpRequest) -> HttpResponse:
    """Serve a model on disk (the catalog's, My models' and a finished download's button): its
    profile (found or created), started, and the chat opened on it (servers/serving.py)."""
    repo_id = request.POST.get("repo_id", "")[:200]
    host = Host.objects.chosen(request.POST.get("host"))
    try:
        served = serving.serve_model(repo_id, request.user, host)
    except serving.ServeRefused as exc:
        messages.error(request, exc.message)
        return redirect("catalog:my-models")
    profile = served.profile
    made = "Created the profile" if served.created else "Using the profile"
    if served.start_error:
        messages.error(request, f"{made} “{profile.name}”, but it cannot start: "
                       f"{served.start_error}")  # fmt: skip
    else:
        messages.success(
            request, f"{made} “{profile.name}”; its server is starting. Ask away: the reply "
            "comes once the model is loaded.",
        )  # fmt: skip
    if profile.engine in (Engine.EMBEDDINGS, Engine.SPEECH):  # nothing to chat with
        return redirect(reverse("servers:list") + "?" + urlencode({"q": profile.slug}))
    return redirect(reverse("servers:chat") + "?" + urlencode({"profile": profile.slug}))


def api_snippets(request: HttpRequest) -> HttpResponse:
    """How to call the profiles the viewer may use from code (curl and Python's openai): a
    fragment the API keys page and a server tile load (`?profile=<slug>`: that one only)."""
    profiles = ServerProfile.objects.visible_to(request.user).order_by("name")
    slug = request.GET.get("profile")
    if slug is not None:
        profiles = profiles.filter(slug=slug[:80])
    context = {
        "profiles": profiles[:50],
        "one": slug is not None,
        "base_url": request.build_absolute_uri("/v1"),
    }
    return render(request, "servers/_api_snippets.html", context)


def _action_response(request: HttpRequest, profile: ServerProfile, error: str = "") -> HttpResponse:
    if request.htmx:
        context = {"tile": tiles.tiles_for(request.user, pk=profile.pk)[0], "error": error}
        return render(request, "servers/list.html#tile", context)
    if error:
        messages.error(request, error)
    return redirect("servers:list")


@require_POST
def server_start(request: HttpRequest, slug: str) -> HttpResponse:
    profile = _get_profile(request, slug)
    override = request.POST.get("override_memory") == "1"
    if override and not request.user.is_admin:
        raise PermissionDenied("Only an admin can start a server despite the memory check.")
    try:
        lifecycle.request_start(
            profile, request.user, override_memory=override, room=memory_plan.make_room
        )
    except lifecycle.StartRefused as exc:
        return _action_response(request, profile, str(exc))
    return _action_response(request, profile)


@require_POST
def server_stop(request: HttpRequest, slug: str) -> HttpResponse:
    profile = _get_profile(request, slug)
    try:
        lifecycle.request_stop(profile, request.user)
    except lifecycle.QueueUnavailable as exc:
        return _action_response(request, profile, str(exc))
    return _action_response(request, profile)


@require_POST
def server_restart(request: HttpRequest, slug: str) -> HttpResponse:
    profile = _get_profile(request, slug)
    try:
        lifecycle.request_restart(profile, request.user)
    except lifecycle.StartRefused as exc:
        return _action_response(request, profile, str(exc))
    return _action_response(request, profile)


def server_log(request: HttpRequest, slug: str) -> HttpResponse:
    """The server's current log, tailed live (HTMX polls the `lines` partial)."""
    profile = _get_profile(request, slug)
    instance = profile.get_instance()
    raw = request.GET.get("lines", str(LOG_LINES_DEFAULT))
    try:
        lines = int(raw)
    except ValueError:
        lines = LOG_LINES_DEFAULT
        if not request.htmx:
            messages.warning(request, f"“{raw[:20]}” is not a number of lines; showing {lines}.")
    lines = max(1, min(lines, LOG_LINES_MAX))
    text = supervisor.read_log_tail(instance.log_path, lines=lines, max_bytes=lines * 400)
    context = {"profile": profile, "instance": instance, "text": text, "lines": lines}
    if request.htmx:
        return render(request, "servers/log.html#log-body", context)
    return render(request, "servers/log.html", context)


def home(request: HttpRequest) -> HttpResponse:
    """The dashboard: this machine as it is now (measured, not stored: a page never writes
    host facts; the worker's heartbeat does) and how many servers run."""
    host = {"name": settings.HOST_NAME, **collect_facts(with_models=False)}
    context = {"host": host, "running_servers": lifecycle.running_count()}
    if request.user.is_admin:
        steps = serving.first_steps()
        if not all(step.done for step in steps):
            context["first_steps"] = {step.key: step.done for step in steps}
    return render(request, "home.html", context)


@staff_only
def host_list(request: HttpRequest) -> HttpResponse:
    """The Hosts page (admins): every host with its servers; its HTMX poll (every 5 s) gets
    only the table's body."""
    context = {
        "rows": host_rows(),
        "this_host": settings.HOST_NAME,
        "offline_after": settings.HOST_OFFLINE_AFTER,
    }
    template = "servers/hosts.html#rows" if request.htmx else "servers/hosts.html"
    return render(request, template, context)


@staff_only
@require_POST
def host_plan(request: HttpRequest, name: str) -> HttpResponse:
    """An admin sets a host's memory plan (policy, idle minutes, cap) on the Hosts page."""
    host = get_object_or_404(Host, name=name)
    form = HostPlanForm(request.POST, instance=host)
    if form.is_valid():
        form.save()
        audit.record(request.user, audit.Action.SETTING_CHANGE, host, **audit.form_changes(form))
        messages.success(request, f"The memory plan of {host.name} is saved.")
    else:
        errors = " ".join(" ".join(e) for e in form.errors.values())
        messages.error(request, f"The memory plan of {host.name} was not saved: {errors}")
    return redirect("servers:hosts")


def profile_need(request: HttpRequest) -> HttpResponse:
    """The memory need of the profile form's model, draft model and KV-cache bits on its host,
    as the form changes (an HTMX fragment of the profile form, servers/memory_plan.py)."""
    raw_host = request.GET.get("host") or ""
    host = Host.objects.filter(pk=int(raw_host)).first() if raw_host.isdigit() else None
    host = host or Host.objects.this_machine()  # a value that names no host: this machine
    raw_bits = request.GET.get("kv_bits") or ""
    kv_bits = int(raw_bits) if raw_bits.isdigit() and int(raw_bits) in KV_BITS_CHOICES else None
    model_id = (request.GET.get("model_id") or "")[:96]
    draft_id = (request.GET.get("draft_model_id") or "")[:96]
    need = memory_plan.need_for(host, model_id, draft_id, kv_bits) if model_id else None
    context = {"need": need, "text": memory_plan.describe(need) if need else "", "host": host}
    return render(request, "servers/_need.html", context)

"""Pages of the download side: the downloads panel, a repo's download action, My models and
the Hugging Face token. Thin: parse, call one function, render (HTMX gets the named partial)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods, require_POST

from accounts.access import staff_only
from accounts.audit import log as audit
from models_catalog import downloads, library, tokens
from models_catalog.forms import (
    DeleteModelForm,
    HostChoiceForm,
    HubTokenForm,
    RepoIdForm,
    StartDownloadForm,
)
from models_catalog.hub import HubError
from models_catalog.models import Download, Host

PANEL = "models_catalog/downloads.html"
ACTION = "models_catalog/_download_action.html"
MY_MODELS = "models_catalog/my_models.html"


def _panel_context(form: StartDownloadForm | None = None) -> dict:
    items = list(Download.objects.select_related("host", "requested_by")[:200])
    return {
        "downloads": items,
        "any_active": any(d.is_active for d in items),
        "form": form or StartDownloadForm(),
    }


def downloads_panel(request: HttpRequest) -> HttpResponse:
    template = f"{PANEL}#panel" if request.htmx else PANEL
    return render(request, template, _panel_context())


def _action(request: HttpRequest, repo_id: str, error: str = "", status: int = 200) -> HttpResponse:
    host = Host.objects.chosen(request.POST.get("host") or request.GET.get("host"))
    context = {"repo_id": repo_id, "action_error": error, "host": host}
    return render(request, ACTION, context, status=status)


def download_action(request: HttpRequest) -> HttpResponse:
    """The live download state of one repo: what the model page includes and polls."""
    form = RepoIdForm(request.GET)
    if not form.is_valid():
        # The refusal is the fragment itself, which says what is wrong with the repo id
        # (escaped, as all template output): never the message pasted into a text/html body,
        # since the repo id is the visitor's text (a <script> in the attack report).
        return _action(request, request.GET.get("repo_id", "")[:200], status=400)
    return _action(request, form.cleaned_data["repo_id"])


@require_POST
def download_start(request: HttpRequest) -> HttpResponse:
    form = StartDownloadForm(request.POST)
    from_action = request.POST.get("fragment") == "action"
    if form.is_valid():
        repo_id = form.cleaned_data["repo_id"]
        try:
            download, joined = downloads.start_download(
                repo_id,
                request.user,
                revision=form.cleaned_data["revision"],
                host=Host.objects.chosen(request.POST.get("host")),
            )
        except downloads.DownloadRefused as exc:
            form.add_error(None, exc.message)
        else:
            if from_action:
                return _action(request, repo_id)
            size = filesizeformat(download.bytes_total)
            if downloads.waits_for_the_queue(download):
                messages.warning(
                    request,
                    f"Download of {repo_id} ({size}) queued; {downloads.WAITING_FOR_QUEUE}: "
                    "Redis is not answering, and the portal sends it again every "
                    f"{settings.DOWNLOAD_REQUEUE_SECONDS:g} s.",
                )
            elif joined:
                messages.info(request, f"{repo_id} is already downloading: you joined it.")
            else:
                messages.success(request, f"Download of {repo_id} ({size}) started.")
            return redirect("catalog:downloads")
    if from_action:
        errors = [e for field_errors in form.errors.values() for e in field_errors]
        return _action(request, request.POST.get("repo_id", "")[:200], error=" ".join(errors))
    return render(request, PANEL, _panel_context(form), status=400)


def _control(request: HttpRequest, pk: int, change) -> HttpResponse:
    try:
        download = change(pk, request.user)
    except downloads.DownloadRefused as exc:
        download = Download.objects.filter(pk=pk).first()
        error = exc.message
    else:
        error = ""
    if request.htmx and request.POST.get("fragment") == "action" and download is not None:
        return _action(request, download.repo_id, error=error)
    if error:
        messages.error(request, error)
    if request.htmx:
        return render(request, f"{PANEL}#panel", _panel_context())
    return redirect("catalog:downloads")


@require_POST
def download_pause(request: HttpRequest, pk: int) -> HttpResponse:
    return _control(request, pk, downloads.pause_download)


@require_POST
def download_resume(request: HttpRequest, pk: int) -> HttpResponse:
    return _control(request, pk, downloads.resume_download)


@require_POST
def download_retry(request: HttpRequest, pk: int) -> HttpResponse:
    return _control(request, pk, downloads.retry_download)


@require_POST
def download_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    download = Download.objects.filter(pk=pk).first()
    if download is not None and not download.can_be_cancelled_by(request.user):
        raise PermissionDenied("Only who started a download, or an admin, can cancel it.")
    return _control(request, pk, downloads.cancel_download)


def _my_models(request: HttpRequest, host: Host) -> HttpResponse:
    Host.objects.this_machine()  # one of the hosts to pick, even before its worker starts
    models = library.my_models(host, viewer=request.user)
    context = {"models": models, "host": host, "hosts": list(Host.objects.all())}
    template = f"{MY_MODELS}#models" if request.htmx else MY_MODELS
    return render(request, template, context)


def _chosen_host(request: HttpRequest, form: HostChoiceForm) -> Host:
    if form.is_valid():
        return form.cleaned_data["host"] or Host.objects.this_machine()
    messages.error(request, f"{form.errors['host'][0]} Showing this machine's models.")
    return Host.objects.this_machine()


def my_models(request: HttpRequest) -> HttpResponse:
    """The models on a host's disk (`?host=<name>`, this machine's by default)."""
    return _my_models(request, _chosen_host(request, HostChoiceForm(request.GET)))


@require_POST
def local_model_delete(request: HttpRequest) -> HttpResponse:
    form = DeleteModelForm(request.POST)
    form.is_valid()
    host = form.cleaned_data.get("host") or Host.objects.this_machine()
    if form.errors:
        field = "host" if "host" in form.errors else "repo_id"
        messages.error(request, f"{form.errors[field][0]} Nothing was deleted.")
    else:
        repo_id = form.cleaned_data["repo_id"]
        try:
            if not library.may_delete(request.user, repo_id, host):
                raise library.DeleteRefused(
                    f"Only an admin or whoever downloaded {repo_id} here may delete it: the "
                    "cache is shared by the whole team. Nothing was deleted."
                )
            freed = library.delete_model(repo_id, host, by=str(request.user))
        except library.DeleteRefused as exc:
            messages.error(request, exc.message)
        else:
            audit.record(
                request.user, audit.Action.MODEL_DELETE,
                audit.Target("model", f"{host.name}:{repo_id}", f"{repo_id} on {host.name}"),
                after={"freed_bytes": freed} if freed is not None else {},
            )  # fmt: skip
            if freed is None:
                messages.info(
                    request,
                    f"Deleting {repo_id} on {host.name}: it leaves this list once "
                    f"{host.name}'s worker has removed it (a few seconds).",
                )
            else:
                messages.success(request, f"Deleted {repo_id}: {filesizeformat(freed)} freed.")
    if request.htmx:
        return _my_models(request, host)
    url = reverse("catalog:my-models")
    return redirect(url if host.is_this_machine else f"{url}?{urlencode({'host': host.name})}")


@staff_only
@require_http_methods(["GET", "POST"])
def hub_token(request: HttpRequest) -> HttpResponse:
    """Admins set, check and remove the portal's Hugging Face token (the access middleware
    answers 403 to everyone else)."""
    form = HubTokenForm()
    if request.method == "POST":
        action = request.POST.get("action", "save")
        if action == "save":
            form = HubTokenForm(request.POST)
            if form.is_valid():
                try:
                    row, warning = tokens.save_hub_token(form.cleaned_data["token"], request.user)
                except HubError as exc:
                    form.add_error("token", exc.message)
                else:
                    if warning:
                        messages.warning(request, warning)
                    else:
                        messages.success(request, f"Token saved: it belongs to {row.checked_user}.")
                    return redirect("catalog:hub-token")
        elif action == "check":
            try:
                name = tokens.check_hub_token()
            except HubError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, f"The token works: it belongs to {name}.")
            return redirect("catalog:hub-token")
        elif action == "remove":
            tokens.clear_hub_token(request.user)
            messages.success(request, "The portal's token was removed.")
            return redirect("catalog:hub-token")
        else:
            messages.error(request, "Unknown action: use Save, Check or Remove.")
    status = 400 if form.errors else 200
    return render(
        request,
        "models_catalog/hub_token.html",
        {"form": form, "status": tokens.token_status()},
        status=status,
    )

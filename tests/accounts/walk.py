"""Shared by the walks of tests/accounts (escaping, security headers): the XSS markers, the
roles, who reaches which view, and the paths of the objects stored for a walk."""

import itertools
import re
from urllib.parse import urlsplit

from django.contrib import admin
from django.urls import NoReverseMatch, Resolver404, resolve, reverse

from accounts import access
from tests.support.url_walk import all_urls

ROLES = ["anonymous", "pending", "disabled", "member", "admin"]

# The tags raw, whatever became of the rest (a message may quote the text with repr()).
RAW_MARKER = re.compile(r"<script>alert\(/?(\w+)?|<img src=x onerror=alert\(/?(\w+)?")


def marker(token: str) -> str:
    """Breaks out of a quoted attribute and opens two tags that run script, naming `token`
    (in a regex literal: no quote inside, which a message could escape)."""
    return f"""\"'><script>alert(/{token}/)</script><img src=x onerror=alert(/{token}/)>"""


def path_marker(token: str) -> str:
    """The same without a slash, for path parameters."""
    return f"""\"'><img src=x onerror=alert({token})>"""


def user_for(role: str, member, admin_member, make_user):
    """The user a walk signs in as for `role` (None: anonymous)."""
    if role == "member":
        return member
    if role == "admin":
        return admin_member
    if role in ("pending", "disabled"):
        return make_user(f"{role}-walker@example.com", status=role)
    return None


def reaches(role: str, path: str) -> bool:
    """Whether the access rules let `role` reach the view of `path` (else the middleware
    answers for it, whatever the request carries)."""
    try:
        match = resolve(urlsplit(path).path)
    except Resolver404:
        match = None
    if match is None:  # the 404 page
        return role in ("member", "admin")
    if match.view_name in access.PUBLIC_URL_NAMES or access.is_public(match.func):
        return True
    if role == "anonymous" or access.is_self_authenticating(match.func):
        return False
    if match.view_name in access.STATUS_URL_NAMES:
        return True
    if role in ("pending", "disabled"):
        return False
    return role == "admin" or not access.is_staff_only(match.func, match.namespace)


def object_paths(arguments: dict[str, list]) -> list[str]:
    """Every named URL whose arguments `arguments` offers values for, with each combination;
    and the Django admin's pages of every object of every registered model."""
    paths = []
    for url in all_urls():
        if not url.params or not url.name or url.name.startswith("admin:"):
            continue
        choices = [arguments.get(param, []) for param in url.params]
        for values in itertools.product(*choices):
            try:
                paths.append(reverse(url.name, kwargs=dict(zip(url.params, values, strict=True))))
            except NoReverseMatch:
                continue
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        for obj in model._default_manager.all()[:3]:
            paths += [reverse(f"{prefix}_{view}", args=[obj.pk]) for view in ("change", "history")]
    return paths

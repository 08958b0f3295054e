"""Writing the audit log: `record()` is the one function every action site calls,
imported as `from accounts.audit import log as audit`:

    audit.record(request.user, audit.Action.PROFILE_EDIT, profile, before=…, after=…)
    audit.record(audit.SUPERVISOR, audit.Action.SERVER_RESTART, profile, detail=reason)

The actor is a user, or one of the system actors below (the supervisor, the idle stop, an
on-demand start, auto-start, an operator's command, single sign-on's rules). The object is a
model instance, or a `Target` for what has no row (a model in a host's cache, a setting).
`before` and `after` keep only the fields that changed, and never a secret: callers pass what
may be shown (a token is "set" or "not set", never its value).

The client's address comes from the request being served: `AuditAddressMiddleware` notes it
for the duration of the request, so actions deep below a view (a server's start) record it
without every function passing it on. Outside a request (Celery, commands) there is none.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models, transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.audit.models import Action, AppendOnlyError, AuditEntry
from common.client_address import client_address

__all__ = ["Action", "AppendOnlyError", "AuditEntry", "prune", "record"]


@dataclass(frozen=True)
class SystemActor:
    """Something other than a person that changes what runs (shown as "system: <name>")."""

    name: str

    def __str__(self) -> str:
        return f"system: {self.name}"


SYSTEM = SystemActor("portal")
SUPERVISOR = SystemActor("supervisor")
IDLE_STOP = SystemActor("idle stop")
ON_DEMAND = SystemActor("on-demand start")
AUTOSTART = SystemActor("auto-start")
OPERATOR = SystemActor("operator command")
MEMORY_PLAN = SystemActor("memory plan")  # a server stopped to make room (servers/memory_plan)


def sso(provider: str) -> SystemActor:
    """Single sign-on's rules (approval by domain or claim, groups from a claim)."""
    return SystemActor(f"single sign-on ({provider})")


Actor = AbstractBaseUser | SystemActor | None


@dataclass(frozen=True)
class Target:
    """An object without a row of its own, e.g. `Target("model", "local:org/repo", "org/repo")`."""

    type: str
    id: str
    label: str
    owner_id: int | None = None


# The client address of the request being served, for entries written while serving it. A
# context variable, so each request (thread) sees its own; the middleware resets it after.
_address: contextvars.ContextVar[str | None] = contextvars.ContextVar("audit_address", default=None)


class AuditAddressMiddleware:
    """Notes the client's address (read through the trusted proxies) for `record()`."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        token = _address.set(client_address(request) or None)
        try:
            return self.get_response(request)
        finally:
            _address.reset(token)


def _plain(value: object) -> object:
    """A value as JSON keeps it: model instances and sets become text and lists."""
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, (set, frozenset, tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, (str, int, float, bool, type(None), datetime)):
        return value
    return str(value)


def changes(before: dict, after: dict) -> tuple[dict, dict]:
    """Only the fields whose value differs, as plain values."""
    keys = [key for key in dict.fromkeys([*before, *after]) if before.get(key) != after.get(key)]
    return (
        {key: _plain(before.get(key)) for key in keys if key in before},
        {key: _plain(after.get(key)) for key in keys if key in after},
    )


def form_changes(form) -> dict[str, dict]:
    """`before` and `after` of a bound, valid ModelForm's changed fields (for `record(**…)`)."""
    names = form.changed_data
    before = {name: form.initial.get(name) for name in names}
    after = {name: form.cleaned_data.get(name) for name in names}
    old, new = changes(before, after)
    return {"before": old, "after": new}


def _owner_id(obj: object) -> int | None:
    if isinstance(obj, AbstractBaseUser):
        return obj.pk
    if isinstance(obj, Target):
        return obj.owner_id
    for attribute in ("owner_id", "user_id", "requested_by_id"):
        if (value := getattr(obj, attribute, None)) is not None:
            return value
    return None


def record(
    actor: Actor,
    action: Action | str,
    obj: object = None,
    *,
    before: dict | None = None,
    after: dict | None = None,
    detail: str = "",
    address: str | None = None,
    owner_id: int | None = None,
) -> AuditEntry:
    """Append one entry: `actor` did `action` to `obj`. Inside the caller's transaction when
    there is one, so a change that rolls back leaves no entry."""
    before, after = changes(before or {}, after or {})
    person = actor if isinstance(actor, AbstractBaseUser) and actor.is_authenticated else None
    if person is not None:
        label = getattr(person, "email", "") or person.get_username()
    else:
        label = str(actor if isinstance(actor, SystemActor) else SYSTEM)
    if isinstance(obj, Target):
        kind, ident, text = obj.type, obj.id, obj.label
    elif isinstance(obj, models.Model):
        kind, ident, text = str(obj._meta.verbose_name), str(obj.pk), str(obj)
    else:
        kind = ident = text = ""
    entry = AuditEntry(
        actor=person,
        actor_label=label[:254],
        action=str(action),
        object_type=kind[:40],
        object_id=ident[:255],
        object_label=text[:255],
        owner_id=owner_id if owner_id is not None else _owner_id(obj),
        address=address or _address.get(),
        before=before,
        after=after,
        detail=detail[:500],
    )
    entry.save(force_insert=True)
    return entry


def prune(older_than_days: int, *, actor: Actor = OPERATOR, dry_run: bool = False) -> int:
    """Remove the entries older than `older_than_days` days (a whole number, 1 or more) and
    record that it was done, in one transaction; with `dry_run`, only count them."""
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int):
        raise ValueError("Give the age in whole days, e.g. 365.")
    if older_than_days < 1:
        raise ValueError("Give an age of 1 day or more: today's entries always stay.")
    cutoff = timezone.now() - timedelta(days=older_than_days)
    old = AuditEntry.objects.filter(at__lt=cutoff)
    if dry_run:
        return old.count()
    with transaction.atomic():
        removed, _ = models.QuerySet.delete(old)  # the one way out (AuditQuerySet refuses)
        record(
            actor,
            Action.AUDIT_PRUNE,
            Target("audit log", "", "audit log"),
            after={"removed": removed, "older_than_days": older_than_days},
            detail=f"Removed the entries from before {cutoff:%Y-%m-%d %H:%M %Z}.",
        )
    return removed

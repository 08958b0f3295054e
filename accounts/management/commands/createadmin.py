"""`manage.py createadmin --email admin@example.com [--password-from-env VAR]`

Creates an approved admin without prompting (for provisioning scripts), or makes an existing
user one; running it again changes nothing. The password comes from an environment variable,
never from the command line (which `ps` and shell histories show); without one the account
gets no usable password and its owner sets one with "Forgot password?".
"""

from __future__ import annotations

import os

from allauth.account.models import EmailAddress
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.db import transaction

from accounts import approval
from accounts.audit import log as audit
from accounts.models import User


class Command(BaseCommand):
    help = "Create an approved admin non-interactively (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", required=True, help="The admin's email (their login).")
        parser.add_argument(
            "--password-from-env",
            metavar="VAR",
            help="Name of an environment variable holding the password (checked against the "
            "portal's password rules). Without it an existing password is kept, and a new "
            "account gets none (its owner uses 'Forgot password?').",
        )

    def handle(self, *args, email: str, password_from_env: str | None = None, **options) -> str:
        email = email.strip().lower()
        try:
            validate_email(email)
        except ValidationError:
            raise CommandError(f"{email!r} is not a valid email address.") from None
        password = None
        if password_from_env:
            password = os.environ.get(password_from_env)
            if not password:
                raise CommandError(
                    f"The environment variable {password_from_env} is not set or empty."
                )

        with transaction.atomic():
            user = User.objects.filter(email__iexact=email).order_by("pk").first()
            created = user is None
            if created:
                user = User(email=email, username=_unique_username(email))
            if password is not None:
                try:
                    validate_password(password, user)
                except ValidationError as exc:
                    message = "The password is refused: " + " ".join(exc.messages)
                    raise CommandError(message) from None
                user.set_password(password)
            elif created:
                user.set_unusable_password()
            if created:
                # The accounts rules (the first user becomes the admin), done by the operator.
                approval.register(user, by=audit.OPERATOR, via="createadmin")
            else:
                user.is_active = True
                user.save()
            approval.approve([user], by=audit.OPERATOR)
            approval.make_admin([user], by=audit.OPERATOR)
            EmailAddress.objects.update_or_create(
                user=user, email=email, defaults={"primary": True, "verified": True}
            )
        user.refresh_from_db()
        verb = "Created" if created else "Updated"
        note = "" if user.has_usable_password() else " (no password yet: use 'Forgot password?')"
        self.stdout.write(self.style.SUCCESS(f"{verb} admin {user.email}{note}."))
        return ""


def _unique_username(email: str) -> str:
    base = (email.split("@", 1)[0] or "admin")[:140]
    candidate, n = base, 1
    while User.objects.filter(username=candidate).exists():
        n += 1
        candidate = f"{base}{n}"
    return candidate

"""Random sequences of approve / disable / send back to pending / promote / demote / delete,
on one user or several at once, through accounts.approval (what the Users page and the Django
admin call): an active admin always remains, and a change is refused exactly when it would
leave none — checked against a plain model of who is an active admin."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from accounts import approval
from accounts.models import User

EMAILS = [f"u{n}@example.com" for n in range(5)]
OPERATIONS = ["approve", "disable", "pending", "make_admin", "remove_admin", "delete"]


def _new_user(email: str) -> User:
    """An unsaved sign-up, as allauth hands it to accounts.approval.register."""
    return User(username=email.split("@")[0], email=email, password="!")


class AdminRules(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        User.objects.all().delete()
        approval.register(_new_user(EMAILS[0]))  # the first user: an approved admin
        # model: email -> (status, admin)
        self.model = {EMAILS[0]: ("approved", True)}

    def _active_admins(self, model) -> set[str]:
        return {email for email, (status, admin) in model.items() if status == "approved" and admin}

    @rule(email=st.sampled_from(EMAILS[1:]))
    def sign_up(self, email):
        if email in self.model:
            return
        approval.register(_new_user(email))
        self.model[email] = ("pending", False)

    @rule(
        operation=st.sampled_from(OPERATIONS),
        emails=st.sets(st.sampled_from(EMAILS), min_size=1, max_size=3),
    )
    def change(self, operation, emails):
        targets = [email for email in emails if email in self.model]
        if not targets:
            return
        actor = User.objects.filter(email__in=self._active_admins(self.model)).first()
        users = list(User.objects.filter(email__in=targets))
        after = dict(self.model)
        for email in targets:
            status, admin = after[email]
            if operation == "delete":
                del after[email]
            elif operation in ("approve", "disable", "pending"):
                after[email] = (
                    {"approve": "approved", "disable": "disabled"}.get(operation, "pending"),
                    admin,
                )
            else:
                after[email] = (status, operation == "make_admin")
        should_refuse = not self._active_admins(after)
        try:
            if operation == "delete":
                approval.delete_users(users, by=actor)
            elif operation == "pending":
                approval.set_status(users, User.Status.PENDING, by=actor)
            else:
                getattr(approval, operation)(users, by=actor)
        except approval.LastAdminError as error:
            assert should_refuse, f"{operation} {targets} was refused but leaves an admin"
            assert "admin" in error.message.lower()
            return
        assert not should_refuse, f"{operation} {targets} left no active admin"
        self.model = after

    @invariant()
    def an_active_admin_remains_and_the_database_matches_the_model(self):
        assert approval.active_admins().exists()
        stored = {u.email: (u.status, u.is_admin) for u in User.objects.all()}
        assert stored == self.model


@pytest.mark.django_db
def test_random_admin_changes_always_leave_an_active_admin():
    run_state_machine_as_test(
        AdminRules,
        settings=settings(
            max_examples=60, stateful_step_count=20, deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )  # fmt: skip

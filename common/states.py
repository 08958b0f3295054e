"""The one state-machine helper, for every row that moves through states (downloads, servers).

A `StateMachine` is a table of allowed moves for a model's state column, and `move()` the one
way to make them, under one lock discipline: inside a transaction the row is locked
(`SELECT … FOR UPDATE`; SQLite's IMMEDIATE transactions queue writers the same way), the move
is checked against the state the database holds *now* — not the caller's copy, which a worker
or another web process may have changed meanwhile — and the new state is written with why and
when, and any other fields that change with it. The caller's instance is then brought up to
date. A move the table does not allow raises InvalidTransition and changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from django.db import models, transaction
from django.utils import timezone


class InvalidTransition(ValueError):
    """A row was asked to move to a state its current state does not lead to."""


class StateMachine:
    """The allowed moves of one model's `state` field, and how a move is recorded.

    `transitions` maps each state to the states it may move to; `reason_field` and
    `changed_at_field` name the columns that record why and when; `what` names a row in
    messages ("server", "download").
    """

    def __init__(
        self,
        transitions: Mapping[str, Collection[str]],
        *,
        what: str,
        state_field: str = "state",
        reason_field: str = "reason",
        changed_at_field: str = "state_changed_at",
        reason_length: int = 500,
    ) -> None:
        self.transitions = {state: frozenset(to) for state, to in transitions.items()}
        self.what = what
        self.state_field = state_field
        self.reason_field = reason_field
        self.changed_at_field = changed_at_field
        self.reason_length = reason_length

    def can(self, current: str, new: str) -> bool:
        return new in self.transitions.get(current, frozenset())

    def move(self, row: models.Model, new: str, reason: str = "", **fields: Any) -> None:
        """Move `row` to `new` (if its current state allows it), recording `reason`, the time
        and `fields`; raise InvalidTransition otherwise. `row` is up to date afterwards."""
        model = type(row)
        with transaction.atomic():
            current = (
                model._default_manager.select_for_update()
                .values_list(self.state_field, flat=True)
                .get(pk=row.pk)
            )
            if not self.can(current, new):
                raise InvalidTransition(f"A {current} {self.what} cannot become {new}.")
            changes = {
                self.state_field: new,
                self.reason_field: reason[: self.reason_length],
                self.changed_at_field: timezone.now(),
                **fields,
            }
            model._default_manager.filter(pk=row.pk).update(**changes)
        row.refresh_from_db()

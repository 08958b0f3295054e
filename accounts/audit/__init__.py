"""The audit log: who changed who may do what, and what runs (docs/accounts.md, "Audit log").

A Django app of its own inside the accounts room (`accounts.audit`, label `audit`, with its own
migrations), so this package imports nothing at start-up. `log.py` is its interface, imported
as `from accounts.audit import log as audit`: `audit.record(actor, audit.Action.…, obj, …)`
appends an entry, `audit.prune()` removes old ones. `models.py` holds the append-only table,
`views.py` the Audit page and its CSV, `admin.py` the Django admin's read-only view.
"""

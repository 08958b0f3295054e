"""Deprecated alias of `models_catalog.last_used` (renamed: "usage" is the servers' request
metering). servers/apps.py and servers/supervision/lifecycle.py still import from here; new
code imports `models_catalog.last_used`."""

from models_catalog.last_used import (
    InUseProvider,
    last_used_times,
    mark_model_used,
    models_in_use,
    register_in_use_provider,
    unregister_in_use_provider,
)

last_used = last_used_times  # its old name

__all__ = [
    "InUseProvider",
    "last_used",
    "mark_model_used",
    "models_in_use",
    "register_in_use_provider",
    "unregister_in_use_provider",
]

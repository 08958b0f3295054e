"""The WSGI application that gunicorn serves (Procfile: `gunicorn config.wsgi`): `/v1/` to the
gateway's own handler (servers/gateway/entry.py: only the middleware an API-key request needs,
default-deny kept there), every other path to Django's whole stack."""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

pages = get_wsgi_application()  # sets Django up: the gateway's modules import models

from servers.gateway.entry import GatewayHandler, is_gateway_path  # noqa: E402

gateway = GatewayHandler()


def application(environ, start_response):
    if is_gateway_path(environ.get("PATH_INFO", "")):
        return gateway(environ, start_response)
    return pages(environ, start_response)


# What is loaded at start-up (Django, the apps, the URLconf and every view module it imports)
# lives as long as the worker. Left to the garbage collector, each of its full passes walks
# those ~130,000 objects again: 73-117 ms on the 2-core VM, during which every thread of the
# worker waits, which is what the Servers page's poll showed as its p99. Frozen, a full pass
# takes 5-10 ms (docs/benchmarks.md §2e); what requests allocate is collected as before.
get_resolver().url_patterns  # noqa: B018 (import the view modules now, not on a first request)
gc.collect()
gc.freeze()

"""The WSGI application that gunicorn serves (Procfile: `gunicorn config.wsgi`)."""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()

# What is loaded at start-up (Django, the apps, the URLconf and every view module it imports)
# lives as long as the worker. Left to the garbage collector, each of its full passes walks
# those ~130,000 objects again: 73-117 ms on the 2-core VM, during which every thread of the
# worker waits, which is what the Servers page's poll showed as its p99. Frozen, a full pass
# takes 5-10 ms (docs/benchmarks.md §2e); what requests allocate is collected as before.
get_resolver().url_patterns  # noqa: B018 (import the view modules now, not on a first request)
gc.collect()
gc.freeze()

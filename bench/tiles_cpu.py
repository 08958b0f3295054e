"""CPU time of one tiles poll, in-process: steadier than wall-clock figures on a loaded machine.

    python -m bench.tiles_cpu [--requests 200] [--profile]

The status-poll bench's data (`bench.status_poll.setup_rows`: 20 profiles, 8 running, 2,000
usage records), Django's test `Client` logged in as the bench admin, the whole middleware
stack. Interleaved, it measures `time.process_time()` per request for:

* `tiles`: `GET /servers/` with `HX-Request` (the 2-s poll), the same client each time, as
  as a page polls: with the version of the tiles it shows (`X-Tiles-Version`, once it has
  one), so an unchanged poll is answered `204`;
* `tiles (new client)`: the same request without the version (what `wrk` sends);
* `empty view`: a logged-in view that returns an empty response — the floor of the
  middleware stack (sessions, auth, allauth, django-htmx, the access middleware).

`--profile` prints a pyinstrument profile of `--requests` cold tiles requests
(`pip install pyinstrument`; it is not a dependency of the portal).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import types

from bench.harness import Bench, median, percentile, print_machine, table


def _urlconf_with_empty_view() -> str:
    from django.http import HttpResponse
    from django.urls import include, path

    module = types.ModuleType("bench_tiles_urls")
    module.urlpatterns = [
        path("bench-empty/", lambda request: HttpResponse(b"")),
        path("", include("config.urls")),
    ]
    sys.modules[module.__name__] = module
    return module.__name__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print_machine()

    with Bench("tiles-cpu") as bench:
        bench.setup_django()
        from bench.status_poll import setup_rows

        setup_rows(bench)
        from servers.supervision.monitor import sample_servers

        sample_servers()  # what the worker stores every 2 s: the tiles show memory and CPU
        from django.db import connection
        from django.test import Client, override_settings
        from django.test.utils import CaptureQueriesContext

        from bench.harness import admin_user

        user = admin_user()
        hx = {"HX-Request": "true"}
        with override_settings(ROOT_URLCONF=_urlconf_with_empty_view(), ALLOWED_HOSTS=["*"]):
            browser = Client()
            browser.force_login(user)
            session = browser.cookies

            def poll_same_browser():
                response = browser.get("/servers/", headers={**hx, **shown})
                found = re.search(rb'data-tiles-version="(\w+)"', response.content)
                if response.status_code == 200 and found:
                    shown["X-Tiles-Version"] = found.group(1).decode()
                return response

            shown: dict[str, str] = {}  # the version the "page" shows (static/js/servers.js)
            fresh = Client()
            fresh.cookies = session
            targets = {
                "tiles": poll_same_browser,
                "tiles (new client)": lambda: fresh.get("/servers/", headers=hx),
                "empty view": lambda: fresh.get("/bench-empty/"),
            }
            for name, call in targets.items():  # warm up, and the status of each
                statuses = {call().status_code for _ in range(5)}
                with CaptureQueriesContext(connection) as ctx:
                    call()
                print(f"{name:<20} status {sorted(statuses)}  queries {len(ctx.captured_queries)}")
            cpu: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(args.requests):
                for name, call in targets.items():
                    start = time.process_time()
                    call()
                    cpu[name].append((time.process_time() - start) * 1000)
            rows = [["target", "CPU ms p50", "CPU ms p90", "CPU ms p99", "CPU ms max",
                     "CPU ms mean"]]  # fmt: skip
            for name, values in cpu.items():
                rows.append([name, f"{median(values):.2f}", f"{percentile(values, 90):.2f}",
                             f"{percentile(values, 99):.2f}", f"{max(values):.2f}",
                             f"{sum(values) / len(values):.2f}"])  # fmt: skip
            print(f"\n{args.requests} requests each, interleaved:\n")
            print(table(rows))

            if args.profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0005)
                with profiler:
                    for _ in range(args.requests):
                        fresh.get("/servers/", headers=hx)
                print(profiler.output_text(unicode=True, color=False, show_all=False))


if __name__ == "__main__":
    main()

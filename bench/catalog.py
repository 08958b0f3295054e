"""Catalog search: a 50-result page whose configs are not cached, the Hub 100 ms away.

    python -m bench.catalog [--rounds 3] [--warm 20] [--latency 0.1]

The fake Hub in its own process (`python -m tests.support.fake_hub --latency 0.1
--page-size 50`, its built-in catalog) and `models_catalog.catalog.search` in this process
(`CATALOG_PAGE_SIZE=50`; what the Models page calls, without the template):

* **round trip**: `hub.list_models_page(limit=50)` alone, the floor of any page (one request).
* **cold**: the catalog rows deleted and the cached listings forgotten first, so the listing
  is asked and stored again and every model's `config.json` is read (`CATALOG_FETCH_WORKERS`
  at a time: the default, 64, so all 50 at once; also run with 4, the old default).
* **warm**: the same search again within `CATALOG_LISTING_TTL`: the listing comes from the
  cache, the configs are stored: no Hub request, the database only.
* **revalidate**: the same search with `CATALOG_LISTING_TTL=0` (as when the cached listing
  expired): one Hub request, and nothing written because nothing changed.

Goals: cold <= 3 x one round trip; warm p50 < 50 ms.
"""

from __future__ import annotations

import argparse
import time

from bench.harness import Bench, median, percentile, print_machine, table

PAGE = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    print_machine()

    with Bench("catalog") as bench:
        hub_url = bench.start_fake_hub("--latency", str(args.latency), "--page-size", str(PAGE))
        bench.setup_django(HF_ENDPOINT=hub_url, CATALOG_PAGE_SIZE=str(PAGE))
        from django.conf import settings

        from models_catalog import catalog, hub
        from models_catalog.models import CatalogModel

        memory = 64 * 2**30
        query = catalog.SearchQuery()
        found = len(catalog.search(query, memory).models)
        print(f"page: {found} models (fake Hub latency {args.latency * 1000:.0f} ms)")
        if found < PAGE:
            print(f"  (the fake Hub's catalog has {found} MLX models, fewer than {PAGE})")

        results: dict[str, list[float]] = {}

        def timed(name: str, call) -> float:
            started = time.perf_counter()
            call()
            elapsed = time.perf_counter() - started
            results.setdefault(name, []).append(elapsed * 1000)
            return elapsed * 1000

        default_workers = settings.CATALOG_FETCH_WORKERS

        def cold(workers: int):
            def run():
                settings.CATALOG_FETCH_WORKERS = workers
                page = catalog.search(query, memory)
                assert page.pending_configs == 0, page.pending_configs
                assert all(m.config for m in page.models if not m.config_error)

            return run

        def repeated(name: str, ttl: int) -> float:
            settings.CATALOG_LISTING_TTL = ttl
            catalog.search(query, memory)  # configs stored, listing cached (ttl > 0)
            for _ in range(args.warm):
                ms = timed(name, lambda: catalog.search(query, memory))
            settings.CATALOG_LISTING_TTL = 60
            return ms

        for index in range(args.rounds):
            steps = ["rtt", "cold-4", f"cold-{default_workers}", "revalidate", "warm"]
            for name in steps if index % 2 == 0 else steps[::-1]:
                if name == "rtt":
                    ms = timed(name, lambda: hub.list_models_page(limit=PAGE))
                elif name.startswith("cold"):
                    CatalogModel.objects.all().delete()
                    catalog.forget_listings()
                    ms = timed(name, cold(int(name.split("-")[1])))
                elif name == "revalidate":
                    ms = repeated(name, ttl=0)
                else:
                    ms = repeated(name, ttl=60)
                print(f"  round {index + 1} {name:<10} {ms:8.1f} ms")
        settings.CATALOG_FETCH_WORKERS = default_workers

        rtt = median(results["rtt"])
        rows = [["measure", "p50 ms", "p99 ms", "x one round trip", "goal"]]
        cold_default = f"cold-{default_workers}"
        goals = {"rtt": "", "cold-4": "<= 3x", cold_default: "<= 3x", "revalidate": "",
                 "warm": "p50 < 50 ms"}  # fmt: skip
        labels = {"rtt": "one round trip (listing)", "cold-4": "cold page, 4 config readers",
                  cold_default: f"cold page, {default_workers} config readers (default)",
                  "revalidate": "same page, listing expired (TTL 0)",
                  "warm": "warm page (listing cached)"}  # fmt: skip
        for name in ("rtt", "cold-4", cold_default, "revalidate", "warm"):
            values = results[name]
            rows.append([labels[name], f"{median(values):.1f}", f"{percentile(values, 99):.1f}",
                         f"{median(values) / rtt:.2f}", goals[name]])  # fmt: skip
        print(f"\nMedians over {args.rounds} rounds ({args.warm} warm searches each):\n")
        print(table(rows))


if __name__ == "__main__":
    main()

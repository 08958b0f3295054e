"""Catalog search: a 50-result page whose configs are not cached, the Hub 100 ms away.

    python -m bench.catalog [--rounds 3] [--warm 20] [--latency 0.1]

The fake Hub in its own process (`python -m tests.support.fake_hub --latency 0.1
--page-size 50`, its built-in catalog) and `models_catalog.catalog.search` in this process
(`CATALOG_PAGE_SIZE=50`; what the Models page calls, without the template):

* **round trip**: `hub.list_models_page(limit=50)` alone, the floor of any page (one request).
* **cold**: the catalog rows deleted first, so the listing is stored again and every model's
  `config.json` is read (`CATALOG_FETCH_WORKERS` at a time, default 4; also run with 16).
* **warm**: the same search again, configs stored: one Hub request plus the database.

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

        def cold(workers: int):
            def run():
                settings.CATALOG_FETCH_WORKERS = workers
                page = catalog.search(query, memory)
                assert page.pending_configs == 0, page.pending_configs
                assert all(m.config for m in page.models if not m.config_error)

            return run

        for index in range(args.rounds):
            steps = ["rtt", "cold-4", "cold-16", "warm"]
            for name in steps if index % 2 == 0 else steps[::-1]:
                if name == "rtt":
                    ms = timed(name, lambda: hub.list_models_page(limit=PAGE))
                elif name.startswith("cold"):
                    CatalogModel.objects.all().delete()
                    ms = timed(name, cold(int(name.split("-")[1])))
                else:
                    catalog.search(query, memory)  # configs stored
                    for _ in range(args.warm):
                        ms = timed(name, lambda: catalog.search(query, memory))
                print(f"  round {index + 1} {name:<8} {ms:8.1f} ms")
        settings.CATALOG_FETCH_WORKERS = 4

        rtt = median(results["rtt"])
        rows = [["measure", "p50 ms", "p99 ms", "x one round trip", "goal"]]
        goals = {"rtt": "", "cold-4": "<= 3x", "cold-16": "<= 3x", "warm": "p50 < 50 ms"}
        labels = {"rtt": "one round trip (listing)", "cold-4": "cold page, 4 config readers",
                  "cold-16": "cold page, 16 config readers", "warm": "warm page"}  # fmt: skip
        for name in ("rtt", "cold-4", "cold-16", "warm"):
            values = results[name]
            rows.append([labels[name], f"{median(values):.1f}", f"{percentile(values, 99):.1f}",
                         f"{median(values) / rtt:.2f}", goals[name]])  # fmt: skip
        print(f"\nMedians over {args.rounds} rounds ({args.warm} warm searches each):\n")
        print(table(rows))


if __name__ == "__main__":
    main()

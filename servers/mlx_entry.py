"""How the portal runs `mlx_lm.server`: the server's own `main()`, with one scheduling change.

    python /path/to/servers/mlx_entry.py <mlx_lm.server options>

mlx_lm.server (0.32) generates for a continuous batch of requests in one thread, and takes
new requests off its queue only between time slices of that loop (`TimeBudget`): a slice
ends after 0.5 s, or when the batch has nothing left. A request that arrives while others
are streaming therefore waits for the running batch to finish — up to half a second —
before it is even tokenized, and clients that do not arrive within the same millisecond
are served in separate, smaller batches (docs/benchmarks.md §1e measures it: four clients
arriving 0 to 10 ms apart lost 14 % of the throughput, and a proxy's few milliseconds did the
same).

Here a slice lasts ADMISSION_SLICE_SECONDS: the loop looks at its queue about once per
generation step, so a new request joins the running batch within a step or two. Looking at
an empty queue costs microseconds against milliseconds per step. Nothing else changes: the
options, the HTTP server and the generation code are mlx_lm's own.

This file runs as a script in the model server's process and imports nothing of the portal.
Where mlx_lm has no `TimeBudget` taking a `budget` (another version), the server runs
unchanged, and its log says so on the first line.
"""

from __future__ import annotations

import sys

ADMISSION_SLICE_SECONDS = 0.005


def admit_often(server_module) -> bool:
    """Make `server_module` (mlx_lm.server) look at its request queue every
    ADMISSION_SLICE_SECONDS; False (nothing changed) when its scheduler is not the known one."""
    import functools
    import inspect

    budget = getattr(server_module, "TimeBudget", None)
    try:
        known = "budget" in inspect.signature(budget).parameters
    except (TypeError, ValueError):
        known = False
    if not known:
        return False
    # ResponseGenerator looks the name up when it is created (in main()), so this is the one
    # it uses; distributed runs (not started by the portal) keep their own iteration count.
    server_module.TimeBudget = functools.partial(budget, budget=ADMISSION_SLICE_SECONDS)
    return True


def main(argv: list[str]) -> None:
    import mlx_lm.server as server

    if admit_often(server):
        note = f"new requests join the running batch every {ADMISSION_SLICE_SECONDS * 1000:g} ms"
    else:
        note = "mlx_lm's scheduler is not the known one; it runs unchanged"
    print(f"MLX Portal: mlx_lm.server, {note} (servers/mlx_entry.py)", file=sys.stderr, flush=True)
    sys.argv = ["mlx_lm.server", *argv]
    server.main()


if __name__ == "__main__":
    # This folder is sys.path[0]: its modules (models.py, tasks.py, …) must not shadow what
    # mlx_lm and its dependencies import.
    sys.path.pop(0)
    main(sys.argv[1:])

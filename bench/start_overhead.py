"""Start overhead: from the Start button to `running` through the portal (the web tier's
request_start, the Celery worker's spawn and readiness probe), against launching
`mlx_lm.server` by hand and polling it until its first chat completion answers. Same tiny
model, same cache, interleaved, `--rounds` times.

    python -m bench.start_overhead [--rounds 4]

The portal runs from the Procfile: gunicorn (web) and the Celery worker. The clock starts when
the bench sends `POST /servers/<slug>/start/` (logged in, CSRF token, as the page does) and
stops when the instance row says `running` (read every 20 ms). By hand: the clock starts at
`Popen` and stops when a one-token chat completion answers (tried every 50 ms). One unmeasured
start of each kind first warms the page cache and the web worker.
Goal: portal <= 1.2 x by hand.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request

import httpx

from bench.harness import (
    PY,
    Bench,
    admin_user,
    free_port,
    install_model,
    login_cookie,
    median,
    print_machine,
    table,
)

REPO = "bench-org/tiny-llama"


def by_hand(bench: Bench, snapshot) -> float:
    port = free_port()
    env = {**bench.env, "HF_HUB_OFFLINE": "1"}
    command = [PY, "-m", "mlx_lm", "server", "--model", str(snapshot),
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    started = time.perf_counter()
    proc = bench.spawn(f"by-hand-{port}", command, env)
    body = json.dumps({"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1})
    try:
        while True:
            if proc.process.poll() is not None:
                raise RuntimeError(f"mlx_lm.server exited:\n{proc.log_tail()}")
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/chat/completions", data=body.encode(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    if json.loads(answer.read()).get("choices"):
                        return time.perf_counter() - started
            except (OSError, urllib.error.HTTPError, ValueError):
                pass
            time.sleep(0.05)
    finally:
        proc.stop()
        bench.procs.remove(proc)


def through_portal(client: httpx.Client, profile) -> float:
    from servers.models import ServerInstance, State
    from servers.supervision import lifecycle

    instance = ServerInstance.objects.get(profile=profile)
    started = time.perf_counter()
    answer = client.post(f"/servers/{profile.slug}/start/", headers={"HX-Request": "true"})
    if answer.status_code != 200:
        raise RuntimeError(f"start: HTTP {answer.status_code} {answer.text[:300]}")
    while True:
        instance.refresh_from_db(fields=["state", "reason", "last_error"])
        if instance.state == State.STOPPED and instance.last_error:
            raise RuntimeError(f"start refused: {instance.last_error}")
        if instance.state == State.RUNNING:
            elapsed = time.perf_counter() - started
            break
        if instance.state == State.FAILED:
            raise RuntimeError(f"the server failed: {instance.reason}")
        if time.perf_counter() - started > 60:
            raise RuntimeError(f"not running after 60 s: {instance.state} {instance.reason}")
        time.sleep(0.02)
    lifecycle.request_stop(profile, reason="bench")
    deadline = time.monotonic() + 60
    while instance.state != State.STOPPED and time.monotonic() < deadline:
        time.sleep(0.1)
        instance.refresh_from_db(fields=["state"])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    print_machine()

    with Bench("start") as bench:
        bench.setup_django()
        from models_catalog.models import Host
        from servers.models import ServerProfile
        from tests.support.tiny_models import tiny_model_cache

        snapshot = install_model(REPO, tiny_model_cache("text"), bench.hf_cache)
        user = admin_user()
        profile = ServerProfile.objects.create(
            name="Bench start", slug="bench-start", model_id=REPO, owner=user,
            host=Host.objects.this_machine(), port=free_port(),
        )  # fmt: skip
        profile.get_instance()
        base = bench.start_web()
        bench.start_worker()
        cookie = login_cookie(base)
        csrf = dict(part.split("=", 1) for part in cookie.split("; "))["csrftoken"]
        headers = {"Cookie": cookie, "X-CSRFToken": csrf, "Referer": f"{base}/servers/"}
        portal_times: list[float] = []
        hand_times: list[float] = []
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            by_hand(bench, snapshot)  # warm up the page cache for python, mlx and the model
            # and the portal's first start (a gunicorn worker's first POST imports the views
            # and compiles the tile's templates: ~0.1-0.3 s, once per worker process)
            through_portal(client, profile)
            for index in range(args.rounds):
                steps = [("by hand", by_hand, (bench, snapshot)),
                         ("portal", through_portal, (client, profile))]  # fmt: skip
                for name, function, call_args in steps if index % 2 == 0 else steps[::-1]:
                    seconds = function(*call_args)
                    (portal_times if name == "portal" else hand_times).append(seconds)
                    print(f"  round {index + 1} {name:<8} {seconds:6.2f} s")
        ratios = [p / h for p, h in zip(portal_times, hand_times, strict=True)]
        print(f"\nMedians over {args.rounds} interleaved rounds:\n")
        print(table([
            ["path", "start -> answering (s)", "x by hand"],
            ["by hand (Popen -> first completion)", f"{median(hand_times):.2f}", "1.00"],
            ["portal (POST start -> running)", f"{median(portal_times):.2f}",
             f"{median(ratios):.2f}"],
        ]))  # fmt: skip


if __name__ == "__main__":
    main()

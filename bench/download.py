"""Model download: the portal's download path against the `hf` CLI, same files, same endpoint.

    python -m bench.download [--rounds 3] [--megabytes 500] [--connection-mbps 100]

A repo of a few random files (~500 MB in all, generated once into
~/.cache/mlx-portal-bench/download-repo/) served by the fake Hub in its own process
(`python -m tests.support.fake_hub --repo ID=DIR`, loopback, no added latency). With
`--connection-mbps N` each file response is capped at N MB/s, as a CDN caps one connection:
a client that fetches several files at once is then faster than one that fetches them in turn.

* **portal**: `models_catalog.downloads.start_download(...)` in this process (the manifest from
  the Hub, the disk check, the row), then the real Celery worker started from the Procfile runs
  `run_download` (per-file fetch, sha256 check, the heartbeat writing progress rows); the clock
  stops when the row reads `completed` (polled every 50 ms).
* **hf**: `hf download REPO --cache-dir DIR` with `HF_ENDPOINT` pointing at the fake Hub (a
  fresh process each time, so its interpreter start is in the figure: ~0.5 s, said below).

Interleaved (the order alternates every round); each round starts from empty caches and
deletes what it downloaded, so at most one copy is on disk beside the source files.
Throughput = repo bytes / wall time. Goal: portal >= 0.95 x hf.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.harness import CACHE, VENV_BIN, Bench, admin_user, median, print_machine, table

REPO_ID = "bench-org/random-500mb"
FILES = 4  # weight files, plus a config.json


def make_repo(megabytes: int) -> Path:
    """The random files, generated once (the same bytes every run after that)."""
    directory = CACHE / f"download-repo-{megabytes}mb"
    done = directory / ".complete"
    if done.exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "llama"}\n')
    per_file = megabytes * 2**20 // FILES
    for index in range(FILES):
        with open(directory / f"weights-{index + 1:05d}-of-{FILES:05d}.bin", "wb") as handle:
            for _ in range(per_file // 2**20):
                handle.write(os.urandom(2**20))
    done.touch()
    return directory


def repo_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if not p.name.startswith("."))


def portal_download(user) -> float:
    from models_catalog.downloads import start_download
    from models_catalog.models import Download

    started = time.perf_counter()
    download, _ = start_download(REPO_ID, user)

    deadline = started + 600
    while True:
        state = Download.objects.values_list("state", flat=True).get(pk=download.pk)
        if state in ("completed", "failed", "cancelled") or time.perf_counter() > deadline:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if state != "completed":
        reason = Download.objects.values_list("state_reason", flat=True).get(pk=download.pk)
        raise SystemExit(f"portal download ended {state}: {reason}")
    return elapsed


def hf_download(hub_url: str, cache_dir: Path, env: dict[str, str]) -> float:
    command = [str(VENV_BIN / "hf"), "download", REPO_ID, "--cache-dir", str(cache_dir)]
    started = time.perf_counter()
    subprocess.run(
        command,
        env={**env, "HF_ENDPOINT": hub_url, "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=500)
    parser.add_argument(
        "--connection-mbps",
        type=float,
        default=0,
        metavar="MB/S",
        help="cap each file response at this many MB/s, as a CDN caps one connection "
        "(0: no cap, loopback speed)",
    )
    args = parser.parse_args()
    print_machine()
    source = make_repo(args.megabytes)
    size = repo_bytes(source)
    print(f"repo: {FILES + 1} files, {size / 1e6:.0f} MB in {source}")

    with Bench("download") as bench:
        throttle = ["--throttle-bps", str(int(args.connection_mbps * 1e6))]
        hub_url = bench.start_fake_hub(
            "--no-catalog",
            "--repo",
            f"{REPO_ID}={source}",
            *(throttle if args.connection_mbps else ()),
        )
        bench.setup_django(HF_ENDPOINT=hub_url)
        bench.start_worker()
        user = admin_user()
        portal_copy = bench.hf_cache / f"models--{REPO_ID.replace('/', '--')}"
        hf_dir = bench.root / "hf-cli"

        times: dict[str, list[float]] = {"portal": [], "hf": []}
        for index in range(args.rounds):
            order = ["portal", "hf"] if index % 2 == 0 else ["hf", "portal"]
            for name in order:
                if name == "portal":
                    elapsed = portal_download(user)
                    shutil.rmtree(portal_copy)
                else:
                    elapsed = hf_download(hub_url, hf_dir, bench.env)
                    shutil.rmtree(hf_dir)
                times[name].append(elapsed)
                print(f"  round {index + 1} {name:<6} {elapsed:6.2f} s  "
                      f"{size / elapsed / 1e6:7.1f} MB/s")  # fmt: skip

        rows = [["target", "seconds (median)", "MB/s (median)", "x hf (median of rounds)"]]
        for name in ("hf", "portal"):
            ratios = [h / p for p, h in zip(times["portal"], times["hf"], strict=True)]
            rows.append([
                name, f"{median(times[name]):.2f}", f"{size / median(times[name]) / 1e6:.1f}",
                "1.00" if name == "hf" else f"{median(ratios):.2f}",
            ])  # fmt: skip
        print(f"\nMedians over {args.rounds} interleaved rounds ({size / 1e6:.0f} MB):\n")
        print(table(rows))


if __name__ == "__main__":
    main()

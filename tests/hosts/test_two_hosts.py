"""Two hosts on this machine: real Celery workers `alpha` and `beta` (MLX_PORTAL_HOST), each with
its own model cache (HF_HUB_CACHE), and beta's own web tier (gunicorn) for the hop, behind its
nginx front as shipped (deploy/nginx/mlx-portal.conf): alpha reaches beta through it.

The test process plays alpha's web tier. It starts one tiny-model server on each host through
the portal's services, checks that each process belongs to the right worker and cache, that the
gateway reaches both (beta's through the authenticated hop), and that stopping alpha's worker
makes only alpha offline and its server "unknown" — not failed, not restarted anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import psutil
import pytest
from django.utils import timezone

from accounts.api_keys import create_api_key
from models_catalog.models import Host
from models_catalog.tasks import delete_model as delete_task
from servers.models import ServerInstance, ServerProfile, State, UsageRecord
from servers.supervision import lifecycle, supervisor
from servers.supervision.ports import suggest_port
from tests.servers.helpers import TINY_REPO, install_model, wait_for
from tests.support.front import start_nginx
from tests.support.mlx_server import free_port
from tests.support.tiny_models import REPLY
from tests.support.workers import ROOT, WorkerProcess, process_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SECRET = "test-hop-secret-" + "x" * 20
EXTRA_REPO = "test-org/extra-on-beta"
OFFLINE_AFTER = "4"


@pytest.fixture
def cluster(settings, tmp_path, tiny_model, queues):
    """alpha's and beta's caches and workers, beta's web tier; everything stopped at the end."""
    settings.HOST_NAME = "alpha"
    settings.HOP_SECRET = SECRET
    settings.HOST_OFFLINE_AFTER = float(OFFLINE_AFTER)
    caches = {}
    for name in ("alpha", "beta"):
        caches[name] = tmp_path / name / "hub"
        install_model(caches[name], TINY_REPO, source=tiny_model)
    install_model(caches["beta"], EXTRA_REPO, source=tiny_model)  # to delete from alpha's page
    settings.HF_HUB_CACHE = caches["alpha"]  # this process is alpha's web tier

    web_port, front_port = free_port(), free_port()
    web_url = f"http://127.0.0.1:{front_port}"  # beta's front, as MLX_PORTAL_HOST_URL names it
    common = {"MLX_PORTAL_HOP_SECRET": SECRET, "MLX_PORTAL_HOST_OFFLINE_AFTER": OFFLINE_AFTER,
              "MLX_PORTAL_HEARTBEAT_SECONDS": "0.5"}  # fmt: skip
    front = start_nginx(tmp_path, [f"127.0.0.1:{front_port}"], upstream=f"127.0.0.1:{web_port}")
    web_log = tmp_path / "beta-web.log"
    with web_log.open("ab") as log:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{web_port}",
             "--worker-class", "gthread", "--workers", "1", "--threads", "8",
             "--access-logfile", "-"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=process_env(MLX_PORTAL_HOST="beta", HF_HUB_CACHE=str(caches["beta"]), **common),
        )  # fmt: skip
    workers = {
        name: WorkerProcess(
            hostname=f"{name}@localhost",
            queues=["default", f"host.{name}"],
            log_path=tmp_path / f"{name}-worker.log",
            env_extra={"MLX_PORTAL_HOST": name, "HF_HUB_CACHE": str(caches[name]),
                       "MLX_PORTAL_HOST_URL": web_url if name == "beta" else "", **common},
        ).start()
        for name in ("alpha", "beta")
    }  # fmt: skip
    pids: list[tuple[int, float]] = []
    try:
        for worker in workers.values():
            worker.wait_ready()
        wait_for(lambda: _answers(web_url), timeout=30, what="beta's web tier")
        yield {"caches": caches, "workers": workers, "web_log": web_log, "web_url": web_url,
               "pids": pids}  # fmt: skip
    finally:
        for worker in workers.values():
            worker.stop()
        front.stop()
        os.killpg(web.pid, signal.SIGTERM)  # gunicorn leads its own session
        try:
            web.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(5)
        for pid, create_time in pids:
            supervisor.kill(pid, create_time)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def _ask(client, key: str, slug: str, stream: bool = False) -> str:
    response = client.post(
        "/v1/chat/completions",
        data=json.dumps({"model": slug, "stream": stream,
                         "messages": [{"role": "user", "content": "hi"}]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip
    assert response.status_code == 200, response.content
    if not stream:
        return response.json()["choices"][0]["message"]["content"]
    text = ""
    for line in b"".join(response.streaming_content).decode().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
    return text


def test_two_hosts_serve_route_and_go_offline_independently(cluster, member, admin_member, client):
    caches, workers = cluster["caches"], cluster["workers"]

    # Each worker registered its host with its own cache, its models and (beta) its web tier.
    def registered():
        hosts = {h.name: h for h in Host.objects.filter(name__in=["alpha", "beta"])}
        ok = len(hosts) == 2 and all(
            h.is_online and TINY_REPO in h.model_ids() for h in hosts.values()
        )
        return hosts if ok else None

    hosts = wait_for(registered, timeout=30, what="both hosts' heartbeats")
    for name in ("alpha", "beta"):
        assert hosts[name].hf_cache_dir == str(caches[name])
        reported = {m["repo_id"] for m in hosts[name].local_models}
        assert reported == ({TINY_REPO, EXTRA_REPO} if name == "beta" else {TINY_REPO})
        assert hosts[name].platform == "Linux CPU" and hosts[name].mlx_lm_version
    assert hosts["beta"].web_url == cluster["web_url"] and hosts["alpha"].web_url == ""

    taken: set[int] = set()
    profiles = {}
    for name in ("alpha", "beta"):
        port = suggest_port(taken)
        taken.add(port)
        profiles[name] = ServerProfile.objects.create(
            name=f"tiny {name}", slug=f"tiny-{name}", model_id=TINY_REPO, host=hosts[name],
            port=port, owner=member,
        )  # fmt: skip
        lifecycle.request_start(profiles[name], member)

    def both_running():
        instances = {i.profile.host.name: i for i in ServerInstance.objects.select_related(
            "profile__host")}  # fmt: skip
        for instance in instances.values():
            if instance.pid:
                pair = (instance.pid, instance.process_create_time)
                if pair not in cluster["pids"]:
                    cluster["pids"].append(pair)
            assert instance.state != State.FAILED, (instance.reason, instance.log_tail)
        ok = len(instances) == 2 and all(i.state == State.RUNNING for i in instances.values())
        return instances if ok else None

    instances = wait_for(both_running, timeout=120, what="both servers running")

    # Each server was spawned by its own host's worker, from its own host's cache.
    for name in ("alpha", "beta"):
        process = psutil.Process(instances[name].pid)
        assert process.ppid() == workers[name].pid
        assert process.environ()["HF_HUB_CACHE"] == str(caches[name])
        assert str(caches[name]) in " ".join(instances[name].command)

    # The gateway (alpha's web tier, this process) reaches both; beta's through the hop.
    key = create_api_key(member, "two hosts").secret
    assert _ask(client, key, "tiny-alpha") == REPLY
    assert _ask(client, key, "tiny-beta") == REPLY
    assert _ask(client, key, "tiny-beta", stream=True) == REPLY

    def hops() -> list[str]:
        # gunicorn logs a streamed answer's line once the stream has closed: wait for both.
        lines = cluster["web_log"].read_text().splitlines()
        return [line for line in lines if "/internal/hop/" in line]

    wait_for(lambda: len(hops()) >= 2, 30, what="beta's web tier to log both hops")
    assert len(hops()) == 2
    assert all("/internal/hop/tiny-beta/v1/chat/completions" in h for h in hops())
    usage = list(UsageRecord.objects.values_list("profile_name", "host__name", "status"))
    assert sorted(usage) == [("tiny alpha", "alpha", "ok"), ("tiny beta", "beta", "ok"),
                             ("tiny beta", "beta", "ok")]  # fmt: skip

    # My models on alpha's web tier lists beta's disk, and a delete there is done by beta's
    # worker: the files go from beta's cache and its next report no longer has the model (an
    # admin's delete: the models were put there by its worker, not downloaded by a member).
    client.force_login(admin_member)
    page = client.get("/models/local/", {"host": "beta"}).content.decode()
    assert f'data-repo="{EXTRA_REPO}"' in page and f'data-repo="{TINY_REPO}"' in page
    refused = client.post("/models/local/delete/", {"repo_id": TINY_REPO, "host": "beta"},
                          follow=True).content.decode()  # fmt: skip
    assert "in use by a running server" in refused
    # A delete the page sent before a server started is refused by beta's worker itself,
    # and the page that sent it says so (as if the page had checked a moment earlier).
    delete_task.apply_async(args=[TINY_REPO], queue="host.beta")
    wait_for(lambda: Host.objects.get(name="beta").last_delete.get("repo_id") == TINY_REPO,
             timeout=30, what="beta's worker answering the delete")  # fmt: skip
    page = client.get("/models/local/", {"host": "beta"}).content.decode().replace("&#x27;", "'")
    assert "beta's worker, " in page and f"ago: Not deleted: {TINY_REPO} is in use" in page
    done = client.post("/models/local/delete/", {"repo_id": EXTRA_REPO, "host": "beta"},
                       follow=True).content.decode()  # fmt: skip
    assert f"Deleting {EXTRA_REPO} on beta" in done
    extra_dir = caches["beta"] / "models--test-org--extra-on-beta"
    wait_for(lambda: not extra_dir.exists(), timeout=30, what="beta's worker deleting it")
    wait_for(lambda: EXTRA_REPO not in Host.objects.get(name="beta").model_ids(), timeout=30,
             what="beta's report without it")  # fmt: skip
    page = client.get("/models/local/", {"host": "beta"}).content.decode().replace("&#x27;", "'")
    assert f"ago: Deleted {EXTRA_REPO}" in page
    assert (caches["beta"] / "models--mlx-community--tiny-text-test").exists()
    assert (caches["alpha"] / "models--mlx-community--tiny-text-test").exists()

    # alpha's worker stops: alpha goes offline, its server "unknown"; beta is untouched.
    workers["alpha"].stop()
    wait_for(lambda: not Host.objects.get(name="alpha").is_online, timeout=30, what="offline")
    assert Host.objects.get(name="beta").is_online

    client.force_login(member)
    page = client.get("/servers/").content.decode()
    assert 'id="server-tiny-alpha" data-state="unknown" data-host="alpha"' in page
    assert 'id="server-tiny-beta" data-state="running" data-host="beta"' in page
    assert "Host alpha is offline" in page

    # Nothing failed or restarted it: the row still says running and the process lives.
    alpha = ServerInstance.objects.get(profile__slug="tiny-alpha")
    assert alpha.state == State.RUNNING and alpha.pid == instances["alpha"].pid
    assert supervisor.is_alive(alpha.pid, alpha.process_create_time)
    with pytest.raises(lifecycle.StartRefused, match="Host alpha is offline"):
        lifecycle.request_restart(profiles["alpha"], member)
    assert ServerInstance.objects.get(profile__slug="tiny-beta").state == State.RUNNING
    assert Host.objects.get(name="alpha").last_heartbeat < timezone.now()

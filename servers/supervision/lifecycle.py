"""Server lifecycle: start, stop, restart, readiness, reconcile, auto-start, on-demand start.

Views and Celery tasks call these functions; so do tests, directly. Requests (`request_*`) run
anywhere (usually the web tier): they move the state machine and enqueue the work on the
profile's host queue. The work (`launch`, `stop`, `reconcile`) runs on the host's worker, because
pids, ports and model files are facts of that machine.

For the chat and gateway code: `upstream_for(profile)`, `ensure_running(profile, timeout)`,
`touch_last_request(profile)` and `running_model_ids()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psutil
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from accounts.audit import log as audit
from common.states import InvalidTransition
from models_catalog.hosts.queue import enqueue
from models_catalog.last_used import mark_model_used
from models_catalog.local import local_model_path, serving_facts, weight_bytes
from models_catalog.models import Host
from servers.models import ACTIVE_STATES, Engine, ServerInstance, ServerProfile, State
from servers.supervision import probes, supervisor
from servers.supervision.command import (
    ENTRY_ENGINES,
    ServerOptions,
    build_engine_command,
    build_server_command,
    build_vision_command,
)
from servers.supervision.ports import port_holder, port_is_free
from servers.validation import resolve_adapter_path

log = logging.getLogger(__name__)

# Environment variables a model server inherits; everything else (database, Redis, secrets,
# tokens) stays with the portal.
_ENV_KEEP = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "SYSTEMROOT"}
_ENV_KEEP_PREFIXES = ("LC_", "MLX_", "METAL_", "OMP_", "VECLIB_", "OPENBLAS_")


class StartRefused(Exception):
    """A start that cannot happen; the message says why and what to do."""

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind


class QueueUnavailable(StartRefused):
    """The work could not be queued for the host's worker: Redis does not answer."""

    def __init__(self, message: str):
        super().__init__(message, "queue")


#: The host's memory plan (servers/memory_plan.make_room), which the callers above supervision
#: pass in: `room(profile, evict=…)` raises StartRefused when the start does not fit.
Room = Callable[..., None]


class ServerUnavailable(Exception):
    """`ensure_running` could not get the server running in time."""


@dataclass(frozen=True)
class LaunchPlan:
    model_path: Path
    draft_model_path: Path | None
    adapter_path: Path | None


def is_local(host: Host) -> bool:
    return host.name == settings.HOST_NAME


def check_host_online(profile: ServerProfile) -> None:
    """Refuse work for a host whose worker is silent: nothing would pick it up."""
    host = Host.objects.get(pk=profile.host_id)
    profile.host = host
    if not host.is_online:
        age = host.heartbeat_age
        since = f"for {round(age)} s" if age is not None else "yet"
        raise StartRefused(
            f"Host {host.name} is offline: its worker has not reported {since}. Start the "
            f"worker of {host.name} (see the Hosts page), then try again.",
            "host",
        )


# --- checks before a start --------------------------------------------------------------------


def preflight(profile: ServerProfile, *, override_memory: bool = False) -> LaunchPlan:
    """Check, on the profile's host, that the server can start; raise StartRefused if not."""
    model_path = local_model_path(profile.model_id)
    if model_path is None:
        raise StartRefused(
            f"The model {profile.model_id} is not on this host's disk. Download it from the "
            "catalog first, or pick another model in the profile.",
            "model",
        )
    draft_path = None
    if profile.draft_model_id:
        draft_path = local_model_path(profile.draft_model_id)
        if draft_path is None:
            raise StartRefused(
                f"The draft model {profile.draft_model_id} is not on this host's disk. "
                "Download it, or clear the draft model in the profile.",
                "model",
            )
    adapter_path = None
    if profile.adapter_path:
        try:
            adapter_path = resolve_adapter_path(profile.adapter_path)
        except ValueError as exc:
            raise StartRefused(str(exc), "adapter") from None
    if not port_is_free(profile.port):
        holder = port_holder(profile.port)
        by = f" by {holder}" if holder else " by another program"
        raise StartRefused(
            f"Port {profile.port} is already in use{by}. Stop that program or give the "
            "profile another port.",
            "port",
        )
    need = weight_bytes(model_path) + (weight_bytes(draft_path) if draft_path else 0)
    available = psutil.virtual_memory().available
    if need * settings.SERVER_MEMORY_HEADROOM > available and not override_memory:
        raise StartRefused(
            f"The model needs about {filesizeformat(need)} of memory (plus "
            f"{round((settings.SERVER_MEMORY_HEADROOM - 1) * 100)}% headroom) but only "
            f"{filesizeformat(available)} is free. Stop another server first; an admin can "
            "start it anyway.",
            "memory",
        )
    return LaunchPlan(model_path, draft_path, adapter_path)


# --- requests (any tier) ----------------------------------------------------------------------


def _enqueue(task_name: str, instance: ServerInstance, **kwargs) -> None:
    """Send servers.tasks.<task_name> for the instance to its host's queue once the transaction
    commits (models_catalog.hosts.queue). When Redis does not take the message, the instance
    says so — a start or restart that nothing will carry out is marked failed, with the reason
    — and the commit raises QueueUnavailable, whose message the page shows (never a 500)."""

    def refused(error: Exception) -> None:
        raise _queue_failed(instance, task_name) from error

    enqueue(
        f"servers.tasks.{task_name}",
        instance.profile.host,
        args=[instance.pk],
        kwargs=kwargs,
        on_failure=refused,
    )


def _queue_failed(instance: ServerInstance, task_name: str) -> QueueUnavailable:
    """Record on the instance that its work could not be queued; the error to raise."""
    if task_name == "stop_server":
        # Still stopping: the supervisor finishes a stop whose task was lost once beat runs.
        message = (
            "The stop could not be queued: Redis (the task queue) is not answering. The server "
            "is stopped once Redis is back (/healthz shows what is down)."
        )
        ServerInstance.objects.filter(pk=instance.pk).update(reason=message)
        return QueueUnavailable(message)
    message = (
        "The start could not be queued: Redis (the task queue) is not answering, so no worker "
        "can start the server. Start it again once Redis is back (/healthz shows what is down)."
    )
    with contextlib.suppress(InvalidTransition):
        instance.transition(
            State.FAILED,
            "Not started: the start could not be queued",
            desired_state=ServerInstance.Desired.STOPPED,
            next_restart_at=None,
            last_error=message,
            last_error_kind="queue",
        )
    return QueueUnavailable(message)


def _record_refusal(instance: ServerInstance, exc: StartRefused) -> None:
    ServerInstance.objects.filter(pk=instance.pk).update(
        last_error=str(exc)[:500], last_error_kind=exc.kind
    )
    instance.last_error, instance.last_error_kind = str(exc)[:500], exc.kind


def _who(user) -> str:
    return f" by {user.email or user.username}" if user is not None else ""


def request_start(
    profile: ServerProfile,
    user=None,
    *,
    override_memory: bool = False,
    reason: str = "",
    actor: audit.Actor = None,
    room: Room | None = None,
) -> ServerInstance:
    """Ask for the profile's server to run. A no-op when it already runs or starts. The audit
    log records who asked: `user`, else the system `actor` (auto-start, on-demand start).

    On the web tier of the same machine the checks run at once, so the user sees a refusal
    (port busy, model missing, memory) immediately; the worker checks again before spawning.
    With `room`, the host's memory plan is checked too (nothing is stopped here: the worker
    makes the room, servers/memory_plan.py), unless an admin overrides the memory checks.
    """
    instance = profile.get_instance()
    if instance.state in (State.STARTING, State.RUNNING, State.RESTARTING):
        if instance.desired_state != ServerInstance.Desired.RUNNING:
            ServerInstance.objects.filter(pk=instance.pk).update(desired_state="running")
        return instance
    if instance.state == State.STOPPING:
        raise StartRefused("The server is still stopping; start it again in a moment.", "busy")
    check_host_online(profile)
    try:
        if is_local(profile.host):
            preflight(profile, override_memory=override_memory)
        if room is not None and not override_memory:
            room(profile, evict=False)
    except StartRefused as exc:
        _record_refusal(instance, exc)
        raise
    with transaction.atomic():
        before = instance.state
        try:
            instance.transition(
                State.STARTING,
                reason or f"Start requested{_who(user)}",
                desired_state=ServerInstance.Desired.RUNNING,
                restart_count=0,
                next_restart_at=None,
                failed_probes=0,
                last_error="",
                last_error_kind="",
            )
        except InvalidTransition:
            return instance  # someone else started it a moment ago
        _enqueue("launch_server", instance, override_memory=override_memory)
        _record(user or actor, audit.Action.SERVER_START, profile, before, instance)
    return instance


def _record(actor: audit.Actor, action, profile: ServerProfile, before: str, instance) -> None:
    audit.record(
        actor or audit.SYSTEM, action, profile, before={"state": before},
        after={"state": instance.state}, detail=instance.reason,
    )  # fmt: skip


def request_stop(
    profile: ServerProfile, user=None, *, reason: str = "", actor: audit.Actor = None
) -> ServerInstance:
    """Ask for the profile's server to stop; it will not be restarted automatically. The audit
    log records `user`, else the system `actor` (the idle stop, an operator's command)."""
    instance = profile.get_instance()
    host = Host.objects.get(pk=profile.host_id)
    if not reason and not host.is_online:
        # Queued on its host's queue: said so, not "Stopped" while nobody knows.
        reason = (
            f"Stop requested{_who(user)}: host {host.name} is offline, so its worker stops the "
            "server when it is back."
        )
    reason = reason or f"Stopped{_who(user)}"
    with transaction.atomic():
        ServerInstance.objects.filter(pk=instance.pk).update(desired_state="stopped")
        instance.refresh_from_db()
        if instance.state in (State.STOPPED, State.STOPPING):
            return instance
        before = instance.state
        if instance.state == State.FAILED and not supervisor.is_alive(
            instance.pid, instance.process_create_time
        ):
            instance.transition(State.STOPPED, reason, next_restart_at=None)
        else:
            instance.transition(State.STOPPING, reason)
            _enqueue("stop_server", instance)
        _record(user or actor, audit.Action.SERVER_STOP, profile, before, instance)
    return instance


def request_restart(profile: ServerProfile, user=None) -> ServerInstance:
    """Stop the profile's server (if any) and start a fresh one."""
    instance = profile.get_instance()
    if instance.state == State.STOPPED:
        return request_start(profile, user, reason=f"Restart requested{_who(user)}")
    if instance.state == State.STOPPING:
        raise StartRefused("The server is still stopping; start it again in a moment.", "busy")
    check_host_online(profile)
    with transaction.atomic():
        before = instance.state
        try:
            instance.transition(
                State.RESTARTING,
                f"Restart requested{_who(user)}",
                desired_state=ServerInstance.Desired.RUNNING,
                restart_count=0,
                next_restart_at=None,
                last_error="",
                last_error_kind="",
            )
        except InvalidTransition:
            return instance
        _enqueue("launch_server", instance)
        _record(user, audit.Action.SERVER_RESTART, profile, before, instance)
    return instance


# --- work (on the host's worker) --------------------------------------------------------------


def server_env() -> dict[str, str]:
    """The environment of a model server: no portal secrets, offline Hub, unbuffered logs."""
    env = {
        key: value
        for key, value in os.environ.items()
        if (key in _ENV_KEEP or key.startswith(_ENV_KEEP_PREFIXES))
        and not key.startswith("MLX_PORTAL_")
    }
    env.update(
        {
            "HF_HUB_CACHE": str(settings.HF_HUB_CACHE),
            "HF_HUB_OFFLINE": "1",  # a request naming another model must not download it
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def new_log_path(profile: ServerProfile) -> Path:
    """A fresh log file for one launch, under LOG_DIR/servers/<slug>/; old ones are pruned."""
    directory = Path(settings.LOG_DIR) / "servers" / profile.slug
    directory.mkdir(parents=True, exist_ok=True)
    logs = sorted(directory.glob("*.log"))
    for old in logs[: max(0, len(logs) - settings.SERVER_LOGS_KEPT + 1)]:
        old.unlink(missing_ok=True)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S-%f")
    return directory / f"{stamp}.log"


def _failure_fields(instance: ServerInstance, exit_code: int | None) -> dict:
    fields = {
        "exit_code": exit_code,
        "log_tail": supervisor.read_log_tail(instance.log_path, lines=40),
        "failed_probes": 0,
        "next_restart_at": None,
    }
    if (
        instance.desired_state == ServerInstance.Desired.RUNNING
        and instance.restart_count < settings.SERVER_MAX_RESTARTS
    ):
        delay = settings.SERVER_RESTART_BACKOFF * (2**instance.restart_count)
        fields["next_restart_at"] = timezone.now() + timedelta(seconds=delay)
    return fields


def _fail(instance: ServerInstance, reason: str, *, kill: bool = True) -> None:
    """Mark the instance failed (killing what is left of its process group)."""
    code = None
    if kill:
        code = supervisor.terminate(instance.pid, instance.process_create_time, grace=0.0)
    if code is None:
        code = supervisor.exit_code(instance.pid)
    try:
        instance.transition(State.FAILED, reason, **_failure_fields(instance, code))
    except InvalidTransition:
        log.info("Instance %s changed state while failing: %s", instance.pk, reason)


def _mark_dead(instance: ServerInstance, when: str) -> None:
    code = supervisor.exit_code(instance.pid, wait=2.0)
    _fail(instance, f"The server {supervisor.describe_exit(code)} {when}.")


def launch(instance_id: int, *, override_memory: bool = False, room: Room | None = None) -> None:
    """Spawn the server of a `starting` (or `restarting`) instance and wait until it answers.
    With `room`, the host's memory plan makes room first (or refuses the start).

    Idempotent: a redelivered task finds the live process and only waits for it.
    """
    instance = ServerInstance.objects.select_related("profile__host").get(pk=instance_id)
    profile = instance.profile
    if instance.state == State.RESTARTING:
        supervisor.terminate(
            instance.pid, instance.process_create_time, grace=settings.SERVER_STOP_GRACE
        )
        try:
            instance.transition(State.STARTING, instance.reason or "Restarting")
        except InvalidTransition:
            return
    if instance.state != State.STARTING:
        return
    if not supervisor.is_alive(instance.pid, instance.process_create_time):
        try:
            plan = preflight(profile, override_memory=override_memory)
            if room is not None and not override_memory:
                room(profile, evict=True)
        except StartRefused as exc:
            _record_refusal(instance, exc)
            with contextlib.suppress(InvalidTransition):
                instance.transition(
                    State.FAILED,
                    f"Not started: {exc}",
                    desired_state=ServerInstance.Desired.STOPPED,
                    next_restart_at=None,
                )
            return
        argv = server_command(profile, plan)
        log_path = new_log_path(profile)
        log_path.write_text(
            f"# MLX Portal: starting {profile.name} at {timezone.now().isoformat()}\n"
            f"# {' '.join(argv)}\n"
        )
        with transaction.atomic():
            current = ServerInstance.objects.select_for_update().get(pk=instance.pk)
            if current.state != State.STARTING:
                return
            # A second delivery of the task may have raced this one and spawned first: then
            # there is nothing to spawn, only the same process to wait for.
            raced = supervisor.is_alive(current.pid, current.process_create_time)
            if not raced:
                spawned = supervisor.spawn(argv, log_path, server_env(), cwd=log_path.parent)
                now = timezone.now()
                ServerInstance.objects.filter(pk=instance.pk).update(
                    pid=spawned.pid,
                    process_create_time=spawned.create_time,
                    command=argv,
                    log_path=str(log_path),
                    port=profile.port,
                    started_at=now,
                    ready_at=None,
                    exit_code=None,
                    log_tail="",
                    failed_probes=0,
                    last_request_at=now,
                )
        instance.refresh_from_db()
    wait_until_ready(instance)


def server_command(profile: ServerProfile, plan: LaunchPlan) -> list[str]:
    """The command line of the profile's server, by its engine (servers/supervision/command)."""
    if profile.engine in ENTRY_ENGINES:
        return build_engine_command(sys.executable, plan.model_path, profile.engine, profile.port)
    options = ServerOptions.from_profile(
        profile, context_length=serving_facts(profile.model_id).context_length
    )
    if profile.engine == Engine.VISION:
        return build_vision_command(
            sys.executable, plan.model_path, options, adapter_path=plan.adapter_path
        )
    return build_server_command(
        sys.executable,
        plan.model_path,
        options,
        draft_model_path=plan.draft_model_path,
        adapter_path=plan.adapter_path,
    )


# While a starting server's port refuses connections, its row (a stop meanwhile) is re-read
# this often; once the port accepts, a probe that is not answered yet is retried this often.
READY_RECHECK_INTERVAL = 0.25
# What the readiness probe of an engine asked (probes.probe_ready_for), for the state's reason.
READY_WHAT = {"embeddings": "an embeddings request", "speech-to-text": "a transcription"}
PROBE_RETRY_INTERVAL = 0.1


def wait_until_ready(instance: ServerInstance) -> None:
    """Probe a starting server until it answers (→ running), dies or times out (→ failed)."""
    timeout = settings.SERVER_START_TIMEOUT
    started = instance.started_at or timezone.now()
    deadline = time.monotonic() + max(0.0, timeout - (timezone.now() - started).total_seconds())
    while True:
        instance.refresh_from_db()
        if instance.state != State.STARTING:
            return
        if not supervisor.is_alive(instance.pid, instance.process_create_time):
            _mark_dead(instance, "while starting")
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _fail(instance, f"The model did not answer within {timeout:g} s of starting.")
            return
        # While the server imports and loads its model its port refuses connections: wait for
        # it to accept (checking the process between attempts), then send the real probe.
        if not probes.wait_for_port(
            instance.base_url,
            timeout=min(remaining, READY_RECHECK_INTERVAL),
            keep_waiting=lambda: supervisor.is_alive(instance.pid, instance.process_create_time),
        ):
            continue  # re-read the row: stopped meanwhile, died, or out of time
        result = probes.probe_ready_for(
            instance.profile.engine, instance.base_url, timeout=min(remaining, 60.0)
        )
        if result.ok:
            with contextlib.suppress(InvalidTransition):
                instance.transition(
                    State.RUNNING,
                    "Ready: the model answered "
                    + READY_WHAT.get(instance.profile.engine, "a chat completion"),
                    ready_at=timezone.now(),
                    failed_probes=0,
                )
            profile = instance.profile
            for repo_id in filter(None, (profile.model_id, profile.draft_model_id)):
                mark_model_used(repo_id, host=profile.host)
            return
        time.sleep(PROBE_RETRY_INTERVAL)  # the port accepts but the model does not answer yet


def stop(instance_id: int) -> None:
    """Terminate the server of a `stopping` instance (SIGTERM, SIGKILL after the grace)."""
    instance = ServerInstance.objects.get(pk=instance_id)
    if instance.state != State.STOPPING:
        return
    code = supervisor.terminate(
        instance.pid, instance.process_create_time, grace=settings.SERVER_STOP_GRACE
    )
    with contextlib.suppress(InvalidTransition):
        instance.transition(State.STOPPED, instance.reason or "Stopped", exit_code=code)


def evict(profile_id: int, reason: str) -> None:
    """Stop a server to make room for another (the memory plan, on the host's worker): the
    reason goes to its tile, the audit log (the system actor "memory plan") and its log file;
    returns once its process is gone."""
    profile = ServerProfile.objects.select_related("host").get(pk=profile_id)
    instance = request_stop(profile, reason=reason[:500], actor=audit.MEMORY_PLAN)
    if instance.log_path:
        with contextlib.suppress(OSError), open(instance.log_path, "a") as log_file:
            log_file.write(f"# MLX Portal: {reason} ({timezone.now().isoformat()})\n")
    stop(instance.pk)


# --- supervision ------------------------------------------------------------------------------


def reconcile(host: Host | None = None) -> None:
    """One pass of supervision over the host's instances (the beat task calls it every ~3 s).

    Re-adopts live servers (the DB row plus pid and create time is all it takes: nothing is
    started twice), marks dead and hung ones failed, restarts failed ones with back-off unless
    the user stopped them, stops idle ones, and finishes stops whose task was lost.
    """
    host = host or Host.objects.this_machine()
    instances = ServerInstance.objects.filter(profile__host=host).select_related("profile__host")
    for instance in instances:
        try:
            reconcile_instance(instance)
        except Exception:
            log.exception("Reconciling server %s failed", instance.profile.slug)


def _age(moment) -> float:
    return (timezone.now() - moment).total_seconds() if moment else float("inf")


def reconcile_instance(instance: ServerInstance) -> None:
    state = instance.state
    alive = supervisor.is_alive(instance.pid, instance.process_create_time)
    if state == State.RUNNING:
        if not alive:
            _mark_dead(instance, "while running")
            return
        result = probes.check_alive(instance.base_url, timeout=settings.SERVER_PROBE_TIMEOUT)
        if not result.ok:
            misses = instance.failed_probes + 1
            ServerInstance.objects.filter(pk=instance.pk).update(failed_probes=misses)
            if misses >= settings.SERVER_HUNG_CHECKS:
                instance.refresh_from_db()
                _fail(instance, f"The server stopped answering ({result.detail}, {misses} checks).")
            return
        updates = {}
        if instance.failed_probes:
            updates["failed_probes"] = 0
        if instance.restart_count and _age(instance.ready_at) > settings.SERVER_RESTART_RESET_AFTER:
            updates["restart_count"] = 0
        if updates:
            ServerInstance.objects.filter(pk=instance.pk).update(**updates)
        idle = instance.profile.idle_timeout_minutes
        slack = LAST_REQUEST_RESOLUTION.total_seconds()  # last_request_at may lag this much
        if idle and _age(instance.last_request_at or instance.ready_at) > idle * 60 + slack:
            request_stop(
                instance.profile,
                reason=f"Idle for {idle} min: stopped automatically",
                actor=audit.IDLE_STOP,
            )
    elif state == State.STARTING:
        if instance.pid is None:
            if _age(instance.state_changed_at) > settings.SERVER_START_TIMEOUT:
                _fail(
                    instance,
                    f"No worker of host {instance.profile.host.name} started the server within "
                    f"{settings.SERVER_START_TIMEOUT:g} s. Is its worker running?",
                )
        elif not alive:
            _mark_dead(instance, "while starting")
        elif _age(instance.started_at) > settings.SERVER_START_TIMEOUT:
            _fail(instance, "The model did not answer within the start time-out.")
        elif (
            _age(instance.started_at) > 10
            and probes.probe_ready_for(instance.profile.engine, instance.base_url, timeout=2.0).ok
        ):
            # Re-adoption of a start whose worker went away: it answers, so it is ready.
            with contextlib.suppress(InvalidTransition):
                instance.transition(
                    State.RUNNING,
                    "Ready (re-adopted by the supervisor)",
                    ready_at=timezone.now(),
                    failed_probes=0,
                )
    elif state == State.RESTARTING:
        if _age(instance.state_changed_at) > settings.SERVER_START_TIMEOUT:
            _fail(instance, "The restart did not complete in time. Is the host's worker running?")
    elif state == State.STOPPING:
        if _age(instance.state_changed_at) > settings.SERVER_STOP_GRACE + 20:
            stop(instance.pk)  # the stop task was lost; finish it here
    elif state == State.FAILED:
        if alive:
            supervisor.kill(instance.pid, instance.process_create_time)
        if (
            instance.desired_state == ServerInstance.Desired.RUNNING
            and instance.next_restart_at is not None
            and instance.next_restart_at <= timezone.now()
            and instance.restart_count < settings.SERVER_MAX_RESTARTS
        ):
            attempt = instance.restart_count + 1
            with transaction.atomic():
                before = instance.state
                try:
                    instance.transition(
                        State.RESTARTING,
                        f"Automatic restart {attempt} of {settings.SERVER_MAX_RESTARTS} "
                        f"after: {instance.reason}",
                        restart_count=attempt,
                        next_restart_at=None,
                    )
                except InvalidTransition:
                    return
                _enqueue("launch_server", instance)
                _record(
                    audit.SUPERVISOR,
                    audit.Action.SERVER_RESTART,
                    instance.profile,
                    before,
                    instance,
                )


def autostart(host: Host | None = None) -> list[str]:
    """Start the host's auto-start profiles that are not running; returns their slugs."""
    host = host or Host.objects.this_machine()
    started = []
    for profile in ServerProfile.objects.filter(host=host, auto_start=True).select_related(
        "host", "instance"
    ):
        instance = profile.get_instance()
        if instance.state not in (State.STOPPED, State.FAILED):
            continue
        try:
            request_start(
                profile,
                reason=f"Auto-start: the worker of host {host.name} started",
                actor=audit.AUTOSTART,
            )
        except StartRefused as exc:
            log.warning("Auto-start of %s refused: %s", profile.slug, exc)
            continue
        started.append(profile.slug)
    return started


# --- for the chat and gateway code ------------------------------------------------------------


def upstream_for(profile: ServerProfile) -> str | None:
    """The base URL of the profile's running server (fresh from the DB), else None."""
    instance = ServerInstance.objects.filter(profile=profile).first()
    if instance is None or instance.state != State.RUNNING:
        return None
    return instance.base_url


# A busy server's last request is written at most this often: one write per request would
# queue every request behind the database's write lock (SQLite) on the way to its first token.
LAST_REQUEST_RESOLUTION = timedelta(seconds=5)


def touch_last_request(profile: ServerProfile) -> None:
    """Record that a request reached the profile's server (for the idle time-out), at most
    once per LAST_REQUEST_RESOLUTION when the profile's instance is already loaded."""
    now = timezone.now()
    instance = None
    if ServerProfile.instance.is_cached(profile):  # else it costs a query: just write
        instance = getattr(profile, "instance", None)
    last = instance.last_request_at if instance is not None else None
    if last is not None and timedelta(0) <= now - last < LAST_REQUEST_RESOLUTION:
        return
    ServerInstance.objects.filter(profile=profile).update(last_request_at=now)
    if instance is not None:
        instance.last_request_at = now


# How often a request waiting for an on-demand start re-reads the instance (one indexed read).
ON_DEMAND_POLL_INTERVAL = 0.1


def ensure_running(profile: ServerProfile, timeout: float = 120.0) -> str:
    """The base URL of the profile's server, starting it on demand and waiting until ready.

    Raises ServerUnavailable with a message for the user when it cannot run (on-demand start
    not allowed, a refused start, a failure, or `timeout` seconds without becoming ready).
    """
    url = upstream_for(profile)
    if url:
        touch_last_request(profile)
        return url
    if not profile.allow_on_demand:
        raise ServerUnavailable(
            f"The server {profile.name} is not running and its profile does not allow starting "
            "it on demand. Start it on the Servers page."
        )
    try:
        request_start(profile, reason="Started on demand by a request", actor=audit.ON_DEMAND)
    except StartRefused as exc:
        raise ServerUnavailable(str(exc)) from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        instance = ServerInstance.objects.get(profile=profile)
        if instance.state == State.RUNNING:
            touch_last_request(profile)
            return instance.base_url
        if instance.state in (State.FAILED, State.STOPPED):
            raise ServerUnavailable(f"The server {profile.name} did not start: {instance.reason}")
        time.sleep(ON_DEMAND_POLL_INTERVAL)
    raise ServerUnavailable(
        f"The server {profile.name} is still starting after {timeout:g} s; try again shortly."
    )


def running_model_ids(host: Host | None = None) -> set[str]:
    """Repo ids of models (and draft models) held by a server process that may be running."""
    instances = ServerInstance.objects.filter(state__in=ACTIVE_STATES)
    if host is not None:
        instances = instances.filter(profile__host=host)
    ids: set[str] = set()
    for model_id, draft_id in instances.values_list("profile__model_id", "profile__draft_model_id"):
        ids.add(model_id)
        if draft_id:
            ids.add(draft_id)
    return ids


def running_count() -> int:
    return ServerInstance.objects.filter(state=State.RUNNING).count()


def profiles_for_tiles(query: str = ""):
    """Profiles with everything a tile shows, in a constant number of queries."""
    profiles = ServerProfile.objects.select_related("instance", "host", "owner")
    if query:
        profiles = profiles.filter(Q(name__icontains=query) | Q(model_id__icontains=query))
    return profiles.order_by("name")

"""How the portal runs `mlx_lm.server`: the server's own `main()`, with a few changes that make
it fit to be shared by a team.

    python servers/supervision/mlx_entry.py [--portal-context-length N] <mlx_lm.server options>

1. **Admission.** mlx_lm.server (0.32) generates for a continuous batch of requests in one
   thread, and takes new requests off its queue only between time slices of that loop
   (`TimeBudget`): a slice ends after 0.5 s, or when the batch has nothing left. A request that
   arrives while others are streaming therefore waits up to half a second before it is even
   tokenized (docs/benchmarks.md §1e). Here a slice lasts ADMISSION_SLICE_SECONDS.
2. **A client that leaves stops its request.** mlx_lm.server notices a gone client only when a
   write fails; a non-streamed request writes nothing until its answer is complete, so a client
   that gave up on a long prompt kept the server busy for everyone until the end. Here every
   request watches its connection between prompt chunks and tokens, and stops (the generation
   loop drops it at its next step) within CLIENT_CHECK_SECONDS of the client closing it.
3. **Prompts longer than the context are refused** with 400 `context_length_exceeded` (OpenAI's
   code), counted exactly (the tokens the chat template produced), and `max_tokens` is cut to
   what is left of the context. `--portal-context-length` comes from the portal, which reads the
   model's `config.json` by its one rule (models_catalog.characteristics.context_length).
4. **A listen backlog of LISTEN_BACKLOG** instead of socketserver's 5: a burst of 60 clients
   got connection resets from a healthy server.
5. **`GET /portal/status`** lists the requests in flight (age, prompt progress, tokens), for the
   portal's worker to show a server busy on one long request on its tile.
6. The `system_fingerprint` of the answers is opaque, as OpenAI's (`fp_` and a hash of the
   mlx-lm and mlx versions: it changes with them), instead of naming the host's operating
   system, kernel, C library and GPU.

Nothing else changes: the options, the HTTP server and the generation code are mlx_lm's own.
This file runs as a script in the model server's process and imports nothing of the portal.
Where mlx_lm lacks what a change patches (another version), that change is skipped and the
server's log says so on its first line.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import inspect
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

ADMISSION_SLICE_SECONDS = 0.005
CLIENT_CHECK_SECONDS = 0.05
LISTEN_BACKLOG = 1024
STATUS_PATH = "/portal/status"
CONTEXT_OPTION = "--portal-context-length"


def admit_often(server_module) -> bool:
    """Make `server_module` (mlx_lm.server) look at its request queue every
    ADMISSION_SLICE_SECONDS; False (nothing changed) when its scheduler is not the known one."""
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


# --- requests in flight -------------------------------------------------------------------------


# Both end a request across mlx_lm's handler, whose `except Exception` would answer 404 instead:
# its `finally` still stops the generation.
class ClientGone(BaseException):
    """The client of a request closed its connection: stop working on the request."""


class Answered(BaseException):
    """The request was answered here (an error); mlx_lm's handler has nothing more to do."""


def peer_closed(sock: socket.socket) -> bool:
    """Whether the other end of `sock` has closed it (nothing is read: a peek). Here a request
    body is read in full before generation starts, so anything readable is the end of the
    connection; the gateway asks the same of its clients' sockets (it imports this)."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    return data == b""


@dataclass
class InFlight:
    """One request being served, as `GET /portal/status` tells it."""

    connection: socket.socket
    stream: bool
    started: float = field(default_factory=time.monotonic)
    prompt_done: int = 0
    prompt_total: int = 0
    generated: int = 0
    _checked: float = 0.0

    def check(self) -> None:
        """Raise ClientGone when the client has left (looked at most every
        CLIENT_CHECK_SECONDS)."""
        now = time.monotonic()
        if now - self._checked < CLIENT_CHECK_SECONDS:
            return
        self._checked = now
        if peer_closed(self.connection):
            raise ClientGone

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "age_seconds": round(now - self.started, 3),
            "stream": self.stream,
            "prompt_tokens_done": self.prompt_done,
            "prompt_tokens": self.prompt_total,
            "generated_tokens": self.generated,
        }


class Registry:
    """The requests in flight in this server, and how many were stopped for gone clients."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[int, InFlight] = {}
        self.stopped_for_gone_clients = 0

    def add(self, request: InFlight) -> None:
        with self._lock:
            self._requests[id(request)] = request

    def remove(self, request: InFlight, *, client_gone: bool = False) -> None:
        with self._lock:
            self._requests.pop(id(request), None)
            if client_gone:
                self.stopped_for_gone_clients += 1

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            requests = sorted(self._requests.values(), key=lambda r: r.started)
            return {
                "requests": [r.as_dict(now) for r in requests],
                "stopped_for_gone_clients": self.stopped_for_gone_clients,
            }


registry = Registry()
_current = threading.local()  # the handler thread's `handler` and its `entry` (InFlight)


def _send_json(handler, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    handler._set_completion_headers(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()


def watch_requests(server_module) -> bool:
    """Make every completion request of `server_module` (mlx_lm.server) stop when its client
    leaves, and be listed by `GET /portal/status`; False when the handler is not the known one."""
    handler = getattr(server_module, "APIHandler", None)
    generator = getattr(server_module, "ResponseGenerator", None)
    if not all(
        callable(getattr(cls, name, None))
        for cls, name in ((handler, "handle_completion"), (handler, "do_GET"),
                          (generator, "generate"))
    ):  # fmt: skip
        return False
    handle_completion, do_get, generate = (
        handler.handle_completion,
        handler.do_GET,
        generator.generate,
    )

    def watched_handle_completion(self, request, stop_words):
        entry = InFlight(connection=self.connection, stream=bool(getattr(self, "stream", False)))
        registry.add(entry)
        _current.handler, _current.entry = self, entry
        gone = False
        try:
            return handle_completion(self, request, stop_words)
        except (ClientGone, BrokenPipeError, ConnectionResetError):
            gone = True
            print(
                f"MLX Portal: the client left after {entry.prompt_done}/{entry.prompt_total} "
                f"prompt tokens and {entry.generated} generated; the request was stopped.",
                file=sys.stderr,
                flush=True,
            )
        except Answered:
            pass
        finally:
            _current.handler = _current.entry = None
            registry.remove(entry, client_gone=gone)

    def watched_generate(self, request, generation_args, progress_callback=None):
        entry = getattr(_current, "entry", None)
        if entry is None:  # not a request of the HTTP handler
            return generate(self, request, generation_args, progress_callback)

        def progress(processed: int, total: int) -> None:
            entry.prompt_done, entry.prompt_total = processed, total
            entry.check()
            if progress_callback is not None:
                progress_callback(processed, total)

        entry.check()  # it may have waited in the queue
        ctx, tokens = generate(self, request, generation_args, progress)
        entry.prompt_total = entry.prompt_total or len(getattr(ctx, "prompt", ()))

        def watched_tokens():
            for token in tokens:
                entry.generated += 1
                entry.check()
                yield token

        return ctx, watched_tokens()

    def status_do_get(self):
        if self.path == STATUS_PATH:
            _send_json(self, 200, registry.status())
            return
        do_get(self)

    handler.handle_completion = watched_handle_completion
    handler.do_GET = status_do_get
    generator.generate = watched_generate
    return True


# --- the context ------------------------------------------------------------------------------


class PromptTooLong(Exception):
    def __init__(self, tokens: int, context: int):
        super().__init__(
            f"This model's maximum context length is {context} tokens, but the prompt has "
            f"{tokens} tokens. Shorten the messages (or the prompt) and try again."
        )
        self.tokens, self.context = tokens, context


def limit_context(server_module, context: int) -> bool:
    """Refuse prompts of `context` tokens or more, and cut `max_tokens` to what is left of the
    context; False when mlx_lm's tokenizing step is not the known one."""
    generator = getattr(server_module, "ResponseGenerator", None)
    tokenize = getattr(generator, "_tokenize", None)
    generate = getattr(generator, "generate", None)
    if not callable(tokenize) or not callable(generate):
        return False

    def limited_tokenize(self, tokenizer, request, args):
        result = tokenize(self, tokenizer, request, args)
        tokens = len(result[0])
        if tokens >= context:
            raise PromptTooLong(tokens, context)
        if isinstance(getattr(args, "max_tokens", None), int):
            args.max_tokens = max(1, min(args.max_tokens, context - tokens))
        return result

    def refusing_generate(self, request, generation_args, progress_callback=None):
        try:
            return generate(self, request, generation_args, progress_callback)
        except PromptTooLong as exc:
            handler = getattr(_current, "handler", None)
            if handler is None:
                raise
            _send_json(handler, 400, {"error": {
                "message": str(exc), "type": "invalid_request_error", "param": "messages",
                "code": "context_length_exceeded",
            }})  # fmt: skip
            raise Answered from None

    generator._tokenize = limited_tokenize
    generator.generate = refusing_generate
    return True


# --- start-up ---------------------------------------------------------------------------------


def take_portal_options(argv: list[str]) -> tuple[dict[str, int], list[str]]:
    """The portal's own options out of `argv` (they are not mlx_lm.server's); SystemExit with
    a message for a bad value."""
    options: dict[str, int] = {}
    rest: list[str] = []
    items = iter(argv)
    for item in items:
        name, _, value = item.partition("=")
        if name != CONTEXT_OPTION:
            rest.append(item)
            continue
        value = value or next(items, "")
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"{CONTEXT_OPTION} needs a positive whole number, not {value!r}")
        options["context"] = int(value)
    return options, rest


def main(argv: list[str]) -> None:
    # Here, not at the top: the portal imports this module (peer_closed, STATUS_PATH), and only
    # the model server's process must load mlx and mlx_lm.
    import mlx.core as mx
    import mlx_lm
    import mlx_lm.server as server

    options, argv = take_portal_options(argv)
    notes = []
    if admit_often(server):
        notes.append(
            f"new requests join the running batch every {ADMISSION_SLICE_SECONDS * 1e3:g} ms"
        )
    else:
        notes.append("mlx_lm's scheduler is not the known one: it admits as it ships")
    watched = watch_requests(server)
    notes.append("requests stop when their client leaves" if watched else
                 "requests are not watched (unknown handler)")  # fmt: skip
    if "context" in options:
        # The refusal is written through the handler that watch_requests keeps per thread.
        if watched and limit_context(server, options["context"]):
            notes.append(f"prompts of {options['context']} tokens or more are refused")
        else:
            notes.append("the context is not enforced (unknown tokenizing step)")
    http.server.ThreadingHTTPServer.request_queue_size = LISTEN_BACKLOG
    versions = f"mlx-lm {mlx_lm.__version__}, mlx {mx.__version__}"
    fingerprint = "fp_" + hashlib.sha256(versions.encode()).hexdigest()[:10]
    server.get_system_fingerprint = lambda: fingerprint
    print(f"MLX Portal: mlx_lm.server; {'; '.join(notes)} (servers/supervision/mlx_entry.py)",
          file=sys.stderr, flush=True)  # fmt: skip
    sys.argv = ["mlx_lm.server", *argv]
    server.main()


if __name__ == "__main__":
    # This folder is sys.path[0]: its modules (models.py, tasks.py, …) must not shadow what
    # mlx_lm and its dependencies import.
    sys.path.pop(0)
    main(sys.argv[1:])

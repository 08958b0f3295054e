"""How the portal runs `mlx_vlm.server` (the vision engine): its own `main()`, with the changes
that make it fit to be shared behind the portal.

    python servers/supervision/vlm_entry.py <mlx_vlm.server options>

1. **Only its own model.** mlx_vlm.server (0.7) loads whatever a request's `model` names — a
   local path or a Hugging Face repo, downloaded on the fly — and also serves image generation,
   speech, embeddings and rerankers by name. Here every chat request is answered by the model
   given with `--model` (the portal sends "default_model", as to mlx_lm.server), and a request
   for any other kind of model is refused with 404: nothing is loaded or downloaded by name.
2. **Cross-origin requests only from its own origin** (mlx_vlm allows `*`, with credentials).
3. **A request whose client leaves is stopped**, streamed or not: mlx-vlm (0.7) notices a gone
   client only while it streams, and generates a whole answer to the end for nobody (the
   gateway closes its connection when its own client leaves). An ASGI middleware (`Watch`)
   listens for the client's `http.disconnect` while the request runs, and the request's token
   iterator (`ResponseGenerator.generate`, wrapped) stops at the next token once it came: its
   `close()` cancels the generation in mlx-vlm's batch.
4. **`GET /portal/status`** lists the chat requests in flight (age, stream, prompt tokens,
   tokens generated) and how many were stopped for gone clients, as mlx_entry.py's does: the
   tiles' "busy" notice and the memory plan's eviction read it (servers/supervision/probes.py).

Nothing else changes: the options, the HTTP server (uvicorn) and the generation code are
mlx_vlm's own. What the text engine's entry (mlx_entry.py) adds and this one does not — the
portal's own context check — is listed in docs/servers.md ("The vision engine"). This file
runs as a script in the model server's process and imports nothing of the portal.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# The model kinds a chat request loads (mlx_vlm.server.app.get_cached_model's `model_kind`).
CHAT_KINDS = frozenset({"auto", "text_generation"})
# The same as mlx_entry.py's (a test checks): the portal's probes read every server alike.
STATUS_PATH = "/portal/status"
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})


@dataclass
class InFlight:
    """One chat request being served, as `GET /portal/status` tells it."""

    stream: bool
    started: float = field(default_factory=time.monotonic)
    prompt_tokens: int = 0
    generated: int = 0
    client_gone: bool = False  # its client closed the connection before the answer ended
    stopped: bool = False  # and its generation was cancelled for it
    answered: bool = False  # the whole answer was handed to the server

    def as_dict(self, now: float) -> dict[str, Any]:
        # mlx-vlm counts the prompt at once (no progress while it is read): done or not yet.
        done = self.prompt_tokens if self.generated else 0
        return {
            "age_seconds": round(now - self.started, 3),
            "stream": self.stream,
            "prompt_tokens_done": done,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated,
        }


class Registry:
    """The chat requests in flight in this server, and how many were stopped for gone
    clients (mlx_entry.Registry's answer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[int, InFlight] = {}
        self.stopped_for_gone_clients = 0

    def add(self, entry: InFlight) -> None:
        with self._lock:
            self._requests[id(entry)] = entry

    def remove(self, entry: InFlight, *, stopped: bool = False) -> None:
        with self._lock:
            self._requests.pop(id(entry), None)
            if stopped:
                self.stopped_for_gone_clients += 1

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            entries = sorted(self._requests.values(), key=lambda e: e.started)
            return {
                "requests": [e.as_dict(now) for e in entries],
                "stopped_for_gone_clients": self.stopped_for_gone_clients,
            }


registry = Registry()
# The request a generation belongs to: set by `Watch` for the request's task, and carried into
# the thread mlx-vlm generates from (asyncio.to_thread copies the context).
_current: contextvars.ContextVar[InFlight | None] = contextvars.ContextVar("request", default=None)


def wants_stream(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("stream") is True


class Watch:
    """ASGI middleware: answers `GET /portal/status`, and lists each chat request while it runs,
    listening for its client's `http.disconnect` (uvicorn's receive() says it once the body has
    been read); the app's own receive() says it too, once it came."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == STATUS_PATH and scope["method"] == "GET":
            body = json.dumps(registry.status()).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return None
        if scope["method"] != "POST" or scope["path"] not in CHAT_PATHS:
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        entry = InFlight(stream=wants_stream(body))
        gone = asyncio.Event()

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not entry.answered:
                entry.client_gone = True
            gone.set()

        given = False

        async def replay():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def answer(message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                entry.answered = True
            await send(message)

        registry.add(entry)
        listener = asyncio.create_task(listen())
        token = _current.set(entry)
        try:
            await self.app(scope, replay, answer)
        finally:
            _current.reset(token)
            listener.cancel()
            registry.remove(entry, stopped=entry.stopped)
            if entry.stopped:
                print(f"MLX Portal: the client left after {entry.generated} generated tokens; "
                      "the request was stopped.", file=sys.stderr, flush=True)  # fmt: skip
        return None


class WatchedTokens:
    """A generation's token iterator (mlx-vlm's `_TokenIterator`) that counts the tokens for
    `GET /portal/status` and ends at the next token once the request's client has left: its
    `close()` cancels the generation in mlx-vlm's batch."""

    def __init__(self, tokens, entry: InFlight) -> None:
        self.tokens, self.entry = tokens, entry

    def __iter__(self):
        return self

    def __next__(self):
        if self.entry.client_gone:
            self.entry.stopped = True
            self.close()
            raise StopIteration
        token = next(self.tokens)
        self.entry.generated += 1
        return token

    def close(self) -> None:
        close = getattr(self.tokens, "close", None)
        if callable(close):
            close()


def watch_generation(generator_class) -> bool:
    """Wrap `generator_class.generate` (mlx_vlm.server.generation.ResponseGenerator) so that a
    request's tokens are `WatchedTokens`; False when it is not the known one."""
    generate = getattr(generator_class, "generate", None)
    if not callable(generate):
        return False

    def watched_generate(self, *args, **kwargs):
        entry = _current.get()
        if entry is None:  # not an HTTP chat request (a warm-up, say)
            return generate(self, *args, **kwargs)
        ctx, tokens = generate(self, *args, **kwargs)
        entry.prompt_tokens = int(getattr(ctx, "prompt_tokens", 0) or 0)
        return ctx, WatchedTokens(tokens, entry)

    generator_class.generate = watched_generate
    return True


def option(argv: list[str], name: str) -> str | None:
    """The value of `name` in `argv` (`--name value` or `--name=value`), else None."""
    for index, item in enumerate(argv):
        if item == name and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith(name + "="):
            return item.partition("=")[2]
    return None


def pin_model(modules, model_path: str, refuse) -> int:
    """Make `get_cached_model` of `modules[0]` (the mlx_vlm.server package, which its endpoints
    look the function up in) — and of every other module of `modules` holding the same
    function — load only `model_path` for chat requests, whatever name they give, and call
    `refuse(kind)` for any other kind; how many modules were changed."""
    original = getattr(modules[0], "get_cached_model", None)
    if not callable(original):
        return 0

    def get_cached_model(_name, *args, model_kind="auto", **kwargs):
        if model_kind not in CHAT_KINDS:
            refuse(model_kind)
        return original(model_path, *args, model_kind=model_kind, **kwargs)

    changed = 0
    for module in modules:
        if getattr(module, "get_cached_model", None) is original:
            module.get_cached_model = get_cached_model
            changed += 1
    return changed


def main(argv: list[str]) -> None:
    # Here, not at the top: only the model server's process loads mlx_vlm (and the portal may
    # import this module's pure helpers).
    import mlx.core as mx
    import mlx_vlm
    import mlx_vlm.server as server
    from fastapi import HTTPException
    from mlx_vlm.server import cli
    from starlette.middleware.cors import CORSMiddleware

    model_path = option(argv, "--model")
    if not model_path:
        raise SystemExit("--model is required")
    notes = []

    def refuse(kind: str):
        raise HTTPException(
            status_code=404, detail=f"This server serves only its own chat model, not {kind}."
        )

    modules = [server, *(m for n, m in sys.modules.items() if n.startswith("mlx_vlm.server."))]
    if pin_model(modules, model_path, refuse):
        notes.append("every chat request is answered by its own model; nothing loads by name")
    else:
        notes.append("mlx_vlm's model cache is not the known one: requests may load by name")
    origin = f"http://{option(argv, '--host') or '127.0.0.1'}:{option(argv, '--port') or 8080}"
    cors = [m for m in server.app.user_middleware if m.cls is CORSMiddleware]
    for middleware in cors:
        middleware.kwargs.update(allow_origins=[origin], allow_credentials=False)
    notes.append(f"cross-origin requests only from {origin}" if cors else "no CORS middleware")
    from mlx_vlm.server.generation import ResponseGenerator

    if watch_generation(ResponseGenerator):
        server.app.add_middleware(Watch)
        notes.append(f"a request whose client leaves is stopped; {STATUS_PATH} lists requests")
    else:
        notes.append("mlx_vlm's generator is not the known one: no /portal/status")
    versions = f"mlx-vlm {mlx_vlm.__version__}, mlx {mx.__version__}"
    print(f"MLX Portal: mlx_vlm.server ({versions}); {'; '.join(notes)} "
          "(servers/supervision/vlm_entry.py)", file=sys.stderr, flush=True)  # fmt: skip
    sys.argv = ["mlx_vlm.server", *argv]
    cli.main()


if __name__ == "__main__":
    # This folder is sys.path[0]: its modules (models.py, tasks.py, …) must not shadow what
    # mlx_vlm and its dependencies import.
    sys.path.pop(0)
    main(sys.argv[1:])

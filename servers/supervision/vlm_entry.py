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
5. **Stop words, applied and told.** mlx-vlm (0.7.10) ignores a chat request's `stop`: the
   reply ran on past the word. Here the request's tokens (the same wrapped iterator) are
   scanned as text (`StopScan`, OpenAI's rule: the earliest place any word appears): the reply
   ends before the word (finish_reason "stop", its generation cancelled in the batch), and
   text that may be the start of a word is held back until it is known not to be. The final
   choice of a request with stop words then has `stop_reason` (the word that ended the reply,
   or null: vLLM's field, as mlx_entry.py's change 8), written by `Watch` into the answer.

Nothing else changes: the options, the HTTP server (uvicorn) and the generation code are
mlx_vlm's own. Where mlx-vlm is not the known one, a change is skipped and the first line of
the server's log says so. What the text engine's entry (mlx_entry.py) adds and this one does
not — the portal's own context check, reasoning tokens counted apart — is listed in
docs/servers.md ("The vision engine"). This file runs as a script in the model server's
process and imports nothing of the portal.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
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
    stop_words: tuple[str, ...] = ()  # the request's `stop`
    matched_stop: str | None = None  # the one that ended the reply

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


def read_request(body: bytes) -> tuple[bool, tuple[str, ...]]:
    """Whether a chat request's body asks for a stream, and its stop words (`stop`: a string
    or a list of them; anything else, and empty strings, are no stop words)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False, ()
    if not isinstance(data, dict):
        return False, ()
    stop = data.get("stop")
    words = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    return data.get("stream") is True, tuple(w for w in words if isinstance(w, str) and w)


def tell_stop(payload: Any, entry: InFlight) -> bool:
    """Give the final choice of `payload` (an answer or a stream's chunk, as mlx-vlm writes
    them) `stop_reason`: the stop word that ended the reply, or None; False when it holds no
    final choice."""
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not choices or not isinstance(choices[0], dict) or not choices[0].get("finish_reason"):
        return False
    finish = choices[0]["finish_reason"]
    choices[0]["stop_reason"] = entry.matched_stop if finish == "stop" else None
    return True


def told_chunk(body: bytes, entry: InFlight) -> bytes:
    """A stream's event (`data: {...}`) with `stop_reason` in its final choice, when it is the
    one with a finish_reason; any other event as it is."""
    if not body.startswith(b"data: {") or b'"finish_reason"' not in body:
        return body
    if b'"finish_reason":null' in body:  # mlx-vlm's chunks before the last (pydantic's JSON)
        return body
    try:
        payload = json.loads(body[len(b"data: ") :])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return body
    if not tell_stop(payload, entry):
        return body
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def told_answer(body: bytes, entry: InFlight) -> bytes:
    """A whole answer with `stop_reason` in its choice; anything else (an error) as it is."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return body
    if not tell_stop(payload, entry):
        return body
    return json.dumps(payload, separators=(",", ":")).encode()


class StopScan:
    """Where a reply's text meets one of a request's stop words, fed as it is generated.

    `feed` gives the text that may go out now, and the word that ended the reply (None while
    none did): text that could be the start of a word is held back until it is known not to
    be one, and the reply ends just before the earliest word found (OpenAI's rule; of words
    found at the same place, the first listed). `flush` gives what is held at the end."""

    def __init__(self, words: tuple[str, ...]) -> None:
        self.words = words
        self.held = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        text = self.held + text
        found = [(i, n, w) for n, w in enumerate(self.words) if (i := text.find(w)) >= 0]
        if found:
            at, _, word = min(found)
            self.held = ""
            return text[:at], word
        keep = max(
            (k for w in self.words for k in range(min(len(w) - 1, len(text)), 0, -1)
             if text.endswith(w[:k])),
            default=0,
        )  # fmt: skip
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep], None

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


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
        stream, stop_words = read_request(body)
        entry = InFlight(stream=stream, stop_words=stop_words)
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

        held: list = []  # a whole answer's start and body, sent once it is complete

        async def answer(message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                entry.answered = True
            if entry.stop_words:  # the final choice says which stop word ended the reply
                if entry.stream and message["type"] == "http.response.body":
                    message = {**message, "body": told_chunk(message.get("body", b""), entry)}
                elif not entry.stream:
                    held.append(message)
                    if message["type"] != "http.response.body" or message.get("more_body"):
                        return
                    start, *parts = held
                    body = told_answer(b"".join(p.get("body", b"") for p in parts), entry)
                    headers = [
                        (k, v)
                        for k, v in start.get("headers", ())
                        if k.lower() not in (b"content-length", b"transfer-encoding")
                    ]
                    headers.append((b"content-length", str(len(body)).encode()))
                    await send({**start, "headers": headers})
                    message = {"type": "http.response.body", "body": body}
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
    `close()` cancels the generation in mlx-vlm's batch. With `stops` (the request's stop
    words) the tokens' text goes through it, and the token that completes a stop word ends the
    reply (mlx-vlm's `StreamingToken`, its text cut before the word, finish_reason "stop")."""

    def __init__(self, tokens, entry: InFlight, stops: StopScan | None = None) -> None:
        self.tokens, self.entry, self.stops = tokens, entry, stops
        self.ended = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.ended:
            raise StopIteration
        if self.entry.client_gone:
            self.entry.stopped = True
            self.close()
            raise StopIteration
        token = next(self.tokens)
        self.entry.generated += 1
        if self.stops is None:
            return token
        text, word = self.stops.feed(token.text)
        if word is not None:
            self.entry.matched_stop, self.ended = word, True
            self.close()
            return dataclasses.replace(token, text=text, finish_reason="stop")
        if token.finish_reason:
            text += self.stops.flush()
        return token if text == token.text else dataclasses.replace(token, text=text)

    def close(self) -> None:
        close = getattr(self.tokens, "close", None)
        if callable(close):
            close()


def applies_no_stop(chat_request, token_class) -> bool:
    """Whether mlx-vlm is the known one for change 5: its chat request (`chat_request`,
    mlx_vlm.server.schemas.ChatRequest) has no `stop` (mlx-vlm ignores it; one that applied it
    itself would cut the word out before `StopScan` saw it), and its tokens (`token_class`,
    StreamingToken) are dataclasses with `text` and `finish_reason`."""
    fields = getattr(chat_request, "model_fields", None)
    if not isinstance(fields, dict) or "stop" in fields:
        return False
    if not dataclasses.is_dataclass(token_class):
        return False
    return {"text", "finish_reason"} <= {f.name for f in dataclasses.fields(token_class)}


def watch_generation(generator_class, *, stops: bool = False) -> bool:
    """Wrap `generator_class.generate` (mlx_vlm.server.generation.ResponseGenerator) so that a
    request's tokens are `WatchedTokens` (which apply its stop words with `stops`); False when
    it is not the known one."""
    generate = getattr(generator_class, "generate", None)
    if not callable(generate):
        return False

    def watched_generate(self, *args, **kwargs):
        entry = _current.get()
        if entry is None:  # not an HTTP chat request (a warm-up, say)
            return generate(self, *args, **kwargs)
        ctx, tokens = generate(self, *args, **kwargs)
        entry.prompt_tokens = int(getattr(ctx, "prompt_tokens", 0) or 0)
        scan = StopScan(entry.stop_words) if stops and entry.stop_words else None
        return ctx, WatchedTokens(tokens, entry, scan)

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
    from mlx_vlm.server.generation import ResponseGenerator, StreamingToken
    from mlx_vlm.server.schemas import ChatRequest

    stops = applies_no_stop(ChatRequest, StreamingToken)
    if watch_generation(ResponseGenerator, stops=stops):
        server.app.add_middleware(Watch)
        notes.append(f"a request whose client leaves is stopped; {STATUS_PATH} lists requests")
        notes.append(
            "stop words end a reply, and its final choice says which (stop_reason)"
            if stops
            else "stop words are left to mlx_vlm, which is not the known one (no stop_reason)"
        )
    else:
        notes.append("mlx_vlm's generator is not the known one: no /portal/status, "
                     "stop words are not applied")  # fmt: skip
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

"""Relaying a model server's answer: event by event for the chat, as bytes for an API stream
(paced: after the first token, writes at most every GATEWAY_STREAM_INTERVAL_MS), or whole; the
request measured as it goes, and recorded once when the relay closes. See docs/gateway.md,
"Streaming".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
from django.conf import settings

from servers.gateway.errors import GatewayError
from servers.gateway.transport import DirectBody
from servers.usage.records import Measure

log = logging.getLogger(__name__)

# What a streamed answer carries for the browser and for proxies (nginx: no buffering).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# --- pacing ------------------------------------------------------------------------------------


class _StreamCount:
    """How many API streams this process relays now (Relay.openai_stream), for pacing."""

    def __init__(self) -> None:
        self.open = 0
        self._lock = threading.Lock()

    def add(self, change: int) -> None:
        with self._lock:
            self.open += change


_streams = _StreamCount()


def stream_interval(base_ms: float, max_ms: float, streams: int) -> float:
    """Seconds between an API stream's writes after its first token: `base_ms` for one
    stream, growing with the `streams` this process relays, to at most `max_ms` (or base_ms,
    if larger). A process then wakes about as often for sixteen streams as for one: at
    c = 16 on two cores a fixed 10 ms gave ~one token a write (docs/benchmarks.md §1f)."""
    return min(max(base_ms, max_ms), base_ms * max(1, streams)) / 1000


def _sleep(seconds: float) -> None:
    """Relay pacing for a response that is not a local server's (another host's hop)."""
    if seconds > 0:
        time.sleep(seconds)


# --- the relay --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One server-sent event of an upstream stream: `raw` as received; `data` parsed."""

    raw: bytes
    data: dict | None = None
    done: bool = False
    token: bool = False  # it carries generated text (has_token)


# How mlx_lm.server (json.dumps) writes the model every upstream body names (see
# build_upstream_body); an event without it exactly so is parsed and rewritten instead.
_UPSTREAM_MODEL = b'"model": "default_model"'
# How it writes a chunk of an unfinished reply: it sends one only when a token gave text, so
# an unparsed event with this is (at least) one token; the last chunk is not counted.
_UNFINISHED = b'"finish_reason": null'


def _plain_events(block: bytes) -> bool:
    """Whether every event of `block` (events without their last blank line) is one
    `data: {…}` line naming the upstream model once and carrying no usage: the events that
    `Relay._openai_event` passes on with only the model replaced. In JSON text the model's
    field cannot appear inside a string (its quotes would be escaped), so the count of
    fields is the count of events that have one."""
    events = block.count(b"\n\n") + 1
    return (
        block.startswith(b"data: {")
        and block.count(b"\n") == 2 * (events - 1)
        and block.count(b"\n\ndata: {") == events - 1
        and block.count(_UPSTREAM_MODEL) == events
        and b'"usage"' not in block
    )


def has_token(chunk: dict) -> bool:
    """Whether a stream chunk carries generated text (content, reasoning, text or tool call)."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning") or delta.get("reasoning_content"):
            return True
        if delta.get("tool_calls") or choice.get("text"):
            return True
    return False


def sse(data: dict | str, event: str | None = None) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


class Relay:
    """An upstream response, passed on as it comes, measured, and closed exactly once.

    `events()` yields each server-sent event as soon as it arrives (streams); `json()` reads a
    whole answer (non-streamed). `close(status)` closes the upstream connection and calls
    `on_finish(measure)` once — from the caller's `finally`, so a client that went away
    (GeneratorExit) or a dead server still ends in a record.

    `still_allowed()`, when given, is asked between events at most once every
    `STREAM_ACCESS_CHECK_SECONDS`: when the caller was disabled or their key revoked meanwhile,
    the stream ends with GatewayError 403 `access_revoked`.
    """

    def __init__(
        self,
        response: httpx.Response,
        measure: Measure,
        name: str,
        on_finish: Callable[[Measure], object] | None = None,
        still_allowed: Callable[[], bool] | None = None,
    ):
        self.response = response
        self.measure = measure
        self.name = name
        self.on_finish = on_finish
        self.still_allowed = still_allowed
        self._checked_at = time.monotonic()
        self._closed = False
        self._counted = False  # in _streams (openai_stream), until close()

    def _check_access(self) -> None:
        if self.still_allowed is None:
            return
        now = time.monotonic()
        if now - self._checked_at < settings.STREAM_ACCESS_CHECK_SECONDS:
            return
        self._checked_at = now
        if not self.still_allowed():
            raise GatewayError(
                "Your access was revoked while the reply was streaming: the account is no "
                "longer approved or the API key was revoked.",
                403,
                code="access_revoked",
            )

    def events(self) -> Iterator[Event]:
        lines: list[str] = []
        try:
            for line in self.response.iter_lines():
                if line:
                    lines.append(line)
                    continue
                if not lines:
                    continue
                event, lines = self._event(lines), []
                self._check_access()
                yield event
                if event.done:
                    return
            if lines:
                event = self._event(lines)
                yield event
                if event.done:
                    return
        except httpx.TimeoutException:
            raise self._timeout() from None
        except httpx.HTTPError as exc:
            log.warning("Stream from %s broke: %r", self.name, exc)
        raise self._died()

    def openai_stream(
        self, model: str, include_usage: bool, chunk_object: str = "chat.completion.chunk"
    ) -> Iterator[bytes]:
        """The stream for an API client, as bytes, passed on as each read arrives.

        What the client gets is OpenAI's: `model` is `model` (the profile's slug), and the
        final usage-only chunk is sent only when the client asked for it (`include_usage`),
        with `object` set to `chunk_object`. Only what the portal needs is parsed: the events
        up to the first token (TTFT) and the usage chunk. Every other event is the server's
        bytes with its `"model": "default_model"` replaced, and the events of one read go out
        in one write: a relayed token costs a few bytes operations instead of a JSON round
        trip and a write each (docs/benchmarks.md §1). After the first token, writes are at
        least `stream_interval` apart: what arrived meanwhile leaves in one write (§1e, §1f).
        The tokens of a write are counted (`Measure.relayed`, one a chunk) once the WSGI
        server comes back for more, that is once it has written them: a client that hangs up
        is recorded with the tokens it was sent. Raises GatewayError like `events()`.
        """
        model_field = b'"model": ' + json.dumps(model).encode()
        base, most = settings.GATEWAY_STREAM_INTERVAL_MS, settings.GATEWAY_STREAM_INTERVAL_MAX_MS
        pause = getattr(self.response.stream, "pause", _sleep)
        buffer = b""
        if not self._counted:
            self._counted = True
            _streams.add(1)  # until close()
        try:
            for data in self._reads():
                buffer += data
                if b"\r" in buffer:  # SSE allows CRLF line ends; mlx_lm.server writes LF
                    buffer = buffer.replace(b"\r\n", b"\n")
                end = buffer.rfind(b"\n\n")
                if end < 0:
                    continue
                complete, buffer = buffer[:end], buffer[end + 2 :]
                out: list[bytes] = []
                done = False
                tokens = 0
                if self.measure.first_token_at is not None and _plain_events(complete):
                    # Every event of the read as `_openai_event`'s first case would give it,
                    # in a few scans of the whole read instead of a call per event.
                    out.append(complete.replace(_UPSTREAM_MODEL, model_field) + b"\n\n")
                    tokens = complete.count(_UNFINISHED)
                    complete = b""
                for raw in complete.split(b"\n\n") if complete else ():
                    if not raw.strip(b"\n"):
                        continue
                    chunk, done, token = self._openai_event(
                        raw, model, model_field, include_usage, chunk_object
                    )
                    tokens += token
                    if chunk:
                        out.append(chunk)
                    if done:
                        break
                if out:
                    written_at = time.monotonic()
                    yield b"".join(out)
                    self.measure.relayed(tokens)  # written: the server asks for more
                if done:
                    return
                self._check_access()
                if base and out and self.measure.first_token_at is not None:
                    # Let the next tokens gather upstream: one read and one write for all
                    # of them, instead of a thread wake-up and a write per token.
                    interval = stream_interval(base, most, _streams.open)
                    pause(written_at + interval - time.monotonic())
            if buffer.strip(b"\n"):
                chunk, done, token = self._openai_event(
                    buffer, model, model_field, include_usage, chunk_object
                )
                if chunk:
                    yield chunk
                    self.measure.relayed(token)
                if done:
                    return
        except httpx.TimeoutException:
            raise self._timeout() from None
        except httpx.HTTPError as exc:
            log.warning("Stream from %s broke: %r", self.name, exc)
        raise self._died()

    def _reads(self) -> Iterator[bytes]:
        """The upstream body's reads as they arrive: straight from the transport's socket
        reader when it is one (`DirectBody` already raises httpx's errors), else through
        httpx (a hop over HTTPS). httpx's layer per read (its context, chunker and byte
        count) is work a relayed token need not pay for."""
        stream = self.response.stream
        if isinstance(stream, DirectBody):
            return iter(stream)
        return self.response.iter_raw()

    def _openai_event(
        self, raw: bytes, model: str, model_field: bytes, include_usage: bool, chunk_object: str
    ) -> tuple[bytes, bool, bool]:
        """One upstream event (without its blank line) as the client gets it; whether it
        ends the stream; and whether it carries a token."""
        if (
            self.measure.first_token_at is not None
            and raw.startswith(b"data: {")
            and b"\n" not in raw
            and b'"usage"' not in raw
            and _UPSTREAM_MODEL in raw
        ):
            return raw.replace(_UPSTREAM_MODEL, model_field, 1) + b"\n\n", False, _UNFINISHED in raw
        event = self._event(raw.decode("utf-8", errors="replace").split("\n"))
        data = event.data
        if data is None:
            return event.raw, event.done, False  # keep-alive comments and [DONE]
        if "usage" in data and not data.get("choices"):
            if not include_usage:
                return b"", False, False
            data["object"] = chunk_object
        data["model"] = model
        return sse(data), False, event.token

    def _timeout(self) -> GatewayError:
        return GatewayError(
            f"The model server of '{self.name}' stopped sending for "
            f"{settings.GATEWAY_READ_TIMEOUT:g} s.",
            504,
            code="upstream_timeout",
        )

    def _died(self) -> GatewayError:
        # mlx_lm.server speaks HTTP/1.0: a process that dies just closes the connection, so a
        # stream without its final "[DONE]" is a broken one.
        return GatewayError(
            f"The model server of '{self.name}' stopped in the middle of the reply (it may "
            "have crashed).",
            502,
            code="upstream_died",
        )

    def _event(self, lines: list[str]) -> Event:
        raw = ("\n".join(lines) + "\n\n").encode()
        payload = "\n".join(line[5:].lstrip(" ") for line in lines if line.startswith("data:"))
        if not payload:
            return Event(raw)  # a comment such as ": keepalive 10/200"
        if payload.strip() == "[DONE]":
            return Event(raw, done=True)
        try:
            data = json.loads(payload)
        except ValueError:
            return Event(raw)
        if not isinstance(data, dict):
            return Event(raw)
        token = has_token(data)
        if token:
            self.measure.token()
        if data.get("usage"):
            self.measure.usage(data["usage"])
        return Event(raw, data, token=token)

    def json(self) -> dict:
        try:
            self.response.read()
            data = self.response.json()
        except httpx.TimeoutException:
            raise GatewayError(
                f"The model server of '{self.name}' did not answer within "
                f"{settings.GATEWAY_READ_TIMEOUT:g} s.",
                504,
                code="upstream_timeout",
            ) from None
        except (httpx.HTTPError, ValueError):
            raise GatewayError(
                f"The model server of '{self.name}' sent a broken answer.",
                502,
                code="upstream_error",
            ) from None
        if not isinstance(data, dict):
            raise GatewayError(
                f"The model server of '{self.name}' sent a broken answer.",
                502,
                code="upstream_error",
            )
        self.measure.usage(data.get("usage"))
        return data

    def close(self, status: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self.measure.finished_at = time.monotonic()
        if self._counted:
            _streams.add(-1)
        if status is not None:
            self.measure.status = status
        try:
            self.response.close()
        finally:
            if self.on_finish is not None:
                try:
                    self.on_finish(self.measure)
                except Exception:
                    log.exception("Recording the usage of a request to %s failed", self.name)

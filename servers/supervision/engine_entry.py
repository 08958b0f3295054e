"""The portal's own model server for the engines that have no fitting server of their own:
embeddings (mlx-embeddings) and speech to text (mlx-audio's STT models, Whisper among them).

    python servers/supervision/engine_entry.py --engine embeddings|speech-to-text \
        --model <dir> --port N [--host 127.0.0.1] [--max-body-bytes N] [--max-audio-seconds N]

Why not a package's server (docs/servers.md, "Embeddings and speech to text"): mlx-embeddings
has none; mlx-audio's loads whatever model a request names (from the Hub, too), serves many at
once, reads an upload whole without a bound and needs packages we do not install.

One model per process, loaded before the port opens (so an open port means a loaded model).
A stdlib `ThreadingHTTPServer` on the loopback interface only, with a listen backlog of
LISTEN_BACKLOG; request bodies over `--max-body-bytes` are refused unread (413). The model
runs one request at a time (MLX arrays are not shared across threads here); others wait.

    GET  /health                   200 {"status": "ok"} (the portal's liveness check)
    GET  /portal/status            the requests in flight, as mlx_entry.py's (age, stream)
    GET  /v1/models                the one model
    POST /v1/embeddings            OpenAI's shape: `input` a string or a list of strings
                                   (token arrays are refused: they are another tokenizer's ids);
                                   `encoding_format` float or base64; usage prompt/total tokens
    POST /v1/audio/transcriptions  multipart/form-data as OpenAI's (file, model, language,
                                   prompt, response_format json|text|verbose_json, temperature),
                                   or the same fields as JSON with `file` in base64 (what the
                                   portal's gateway sends); WAV, MP3 or FLAC, decoded in the
                                   process (miniaudio); usage {"type": "duration", "seconds"}

An input longer than the model's context is refused (400 context_length_exceeded), never cut.
This file runs as a script in the model server's process and imports nothing of the portal; the
portal imports its pure parts (`audio_format`, the constants). mlx and the engines' packages are
imported in `main()` only, so that the portal's processes never load them.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import email.parser
import email.policy
import http.server
import io
import json
import math
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

EMBEDDINGS, SPEECH = "embeddings", "speech-to-text"
ENGINES = (EMBEDDINGS, SPEECH)
# The same as mlx_entry.py's (a test checks): the portal's probes read both servers alike.
STATUS_PATH = "/portal/status"
LISTEN_BACKLOG = 1024
DEFAULT_MAX_BODY_BYTES = 48 * 1024 * 1024  # a 25 MiB upload in base64, with room
DEFAULT_MAX_AUDIO_SECONDS = 3600
SAMPLE_RATE = 16_000  # what Whisper-like models hear
EMBEDDING_BATCH = 32  # inputs of one length run through the model together, this many at most
RESPONSE_FORMATS = ("json", "text", "verbose_json")
#: Formats decoded in the process (miniaudio, through mlx-audio): no ffmpeg child is started.
AUDIO_FORMATS = {"wav": "WAV", "mp3": "MP3", "flac": "FLAC"}
SEGMENT_FIELDS = (
    "id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
    "compression_ratio", "no_speech_prob",
)  # fmt: skip


class Refused(Exception):
    """A request this server does not serve: answered with `status` and OpenAI's error shape."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_value", param=None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param

    def as_dict(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param,
                          "code": self.code}}  # fmt: skip


# --- pure parts (the portal's gateway uses them too) ----------------------------------------


def audio_format(data: bytes) -> str | None:
    """The audio format of `data` from its first bytes: "wav", "mp3" or "flac" (what this
    server decodes), else None. An MP3 may start with ID3 tags; an ADTS AAC stream has the MPEG
    sync word too but layer bits 00, and is not MP3."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:3] == b"ID3":
        return "mp3"
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0 and data[1] & 0x06:
        return "mp3"
    return None


def embedding_texts(value: Any) -> list[str]:
    """The texts of an embeddings request's `input`: a string or a non-empty list of strings;
    Refused for anything else (token arrays included: they are ids of another tokenizer)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise Refused("'input' must be a string or a non-empty list of strings.", param="input")
    if all(isinstance(item, str) for item in value):
        if any(not item for item in value):
            raise Refused("'input' must not hold an empty string.", param="input")
        return value
    if all(isinstance(item, int | list) and not isinstance(item, bool) for item in value):
        raise Refused(
            "'input' as token ids is not supported: send the text. Token ids are another "
            "tokenizer's (tiktoken's) and mean nothing to this model; LangChain's "
            "OpenAIEmbeddings sends text with check_embedding_ctx_length=False.",
            param="input",
            code="unsupported_input",
        )
    raise Refused("'input' must be a string or a list of strings.", param="input")


def encode_vector(vector: list[float], encoding_format: str) -> list[float] | str:
    """One embedding as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def finite(value: Any) -> Any:
    """`value` with every NaN or infinity (JSON has none) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def multipart_fields(content_type: str, body: bytes) -> dict[str, Any]:
    """The fields of a multipart/form-data body: text fields as str, the `file` as bytes (with
    `filename`); Refused when it is not readable multipart."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise Refused("Send multipart/form-data (or JSON with the file in base64).")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise Refused("The multipart body cannot be read.")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True) or b""
        if name == "file":
            fields["file"] = payload
            fields["filename"] = part.get_filename() or "audio"
        else:
            fields[name] = payload.decode("utf-8", errors="replace")
    return fields


# --- requests in flight -------------------------------------------------------------------------


@dataclass
class InFlight:
    kind: str
    started: float = field(default_factory=time.monotonic)


class Registry:
    """The requests in flight (waiting for the model or in it), for `GET /portal/status`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[int, InFlight] = {}

    def add(self, entry: InFlight) -> None:
        with self._lock:
            self._requests[id(entry)] = entry

    def remove(self, entry: InFlight) -> None:
        with self._lock:
            self._requests.pop(id(entry), None)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            entries = sorted(self._requests.values(), key=lambda e: e.started)
        return {
            "requests": [
                {"age_seconds": round(now - e.started, 3), "stream": False, "kind": e.kind}
                for e in entries
            ]
        }


# --- the engines ------------------------------------------------------------------------------


class Embedder:
    """An mlx-embeddings model and its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, mx: Any, context: int):
        self.model, self.tokenizer, self.mx, self.context = model, tokenizer, mx, context

    def answer(self, body: dict[str, Any], model_name: str) -> dict[str, Any]:
        texts = embedding_texts(body.get("input"))
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise Refused("'encoding_format' must be float or base64.", param="encoding_format")
        if body.get("dimensions") is not None:
            raise Refused(
                "'dimensions' is not supported: this model's vectors have one size.",
                param="dimensions",
            )
        ids = [self.tokenizer.encode(text) for text in texts]
        for index, tokens in enumerate(ids):
            if len(tokens) > self.context:
                raise Refused(
                    f"Input {index} has {len(tokens)} tokens; this model reads at most "
                    f"{self.context}. Split it and try again.",
                    param="input",
                    code="context_length_exceeded",
                )
        vectors = self.vectors(ids)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding_format)}
                for i, v in enumerate(vectors)
            ],
            "model": model_name,
            "usage": {"prompt_tokens": sum(map(len, ids)), "total_tokens": sum(map(len, ids))},
        }

    def vectors(self, ids: list[list[int]]) -> list[list[float]]:
        """The model's pooled, normalised vector of each token list. Inputs of one length run
        together (no padding), so an input's vector does not depend on the others sent with
        it: identical inputs give identical vectors."""
        mx = self.mx
        by_length: dict[int, list[int]] = {}
        for index, tokens in enumerate(ids):
            by_length.setdefault(len(tokens), []).append(index)
        out: list[list[float]] = [[] for _ in ids]
        for indices in by_length.values():
            for start in range(0, len(indices), EMBEDDING_BATCH):
                batch = indices[start : start + EMBEDDING_BATCH]
                input_ids = mx.array([ids[i] for i in batch])
                result = self.model(input_ids, attention_mask=mx.ones(input_ids.shape))
                embeds = getattr(result, "text_embeds", None)
                if embeds is None:
                    raise Refused("This model gives no text embeddings.", 500, "engine_error")
                for i, vector in zip(batch, embeds.astype(mx.float32).tolist(), strict=True):
                    out[i] = vector
        return out


class Transcriber:
    """An mlx-audio speech-to-text model."""

    def __init__(self, model: Any, read_audio: Any, np: Any, max_seconds: float):
        self.model, self.read_audio, self.np, self.max_seconds = model, read_audio, np, max_seconds

    def answer(self, fields: dict[str, Any], model_name: str) -> dict[str, Any]:
        data = fields.get("file")
        if not isinstance(data, bytes | bytearray) or not data:
            raise Refused("'file' is required: the audio to transcribe.", param="file")
        fmt = audio_format(bytes(data[:16]))
        if fmt is None:
            raise Refused(
                "The file is not audio this server reads: send WAV, MP3 or FLAC.",
                param="file",
                code="unsupported_audio",
            )
        response_format = fields.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise Refused(
                "'response_format' must be json, text or verbose_json.", param="response_format"
            )
        options: dict[str, Any] = {}
        if fields.get("language"):
            options["language"] = str(fields["language"])
        if fields.get("prompt"):
            options["initial_prompt"] = str(fields["prompt"])
        if fields.get("temperature") not in (None, ""):
            try:
                temperature = float(fields["temperature"])
            except (TypeError, ValueError):
                temperature = -1.0
            if not 0.0 <= temperature <= 1.0:
                raise Refused("'temperature' must be a number from 0 to 1.", param="temperature")
            options["temperature"] = temperature
        audio = self.decode(bytes(data))
        seconds = round(len(audio) / SAMPLE_RATE, 3)
        result = self.model.generate(audio, **options)
        text = (getattr(result, "text", "") or "").strip()
        usage = {"type": "duration", "seconds": seconds}
        if response_format == "verbose_json":
            segments = [
                {k: s[k] for k in SEGMENT_FIELDS if k in s}
                for s in getattr(result, "segments", None) or []
                if isinstance(s, dict)
            ]
            return finite({
                "task": "transcribe", "language": getattr(result, "language", None),
                "duration": seconds, "text": text, "segments": segments, "usage": usage,
                "model": model_name,
            })  # fmt: skip
        return {"text": text, "usage": usage, "model": model_name}

    def decode(self, data: bytes) -> Any:
        """The audio as 16 kHz mono float32 samples (an mx array); Refused when it does not
        decode or lasts longer than the limit (decoding stops just past it)."""
        try:
            samples, _ = self.read_audio(
                io.BytesIO(data), dtype="float32", sample_rate=SAMPLE_RATE, nchannels=1,
                duration=self.max_seconds + 1,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - miniaudio's DecodeError and whatever else fails
            raise Refused(
                f"The file does not decode as audio ({exc.__class__.__name__}).",
                param="file",
                code="invalid_audio",
            ) from None
        samples = self.np.asarray(samples, dtype=self.np.float32).reshape(-1)
        if samples.size == 0:
            raise Refused("The audio is empty.", param="file", code="invalid_audio")
        if samples.size > self.max_seconds * SAMPLE_RATE:
            raise Refused(
                f"The audio is longer than {self.max_seconds:g} s, the most this server takes.",
                param="file",
                code="audio_too_long",
            )
        return samples


# --- HTTP ---------------------------------------------------------------------------------------


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, address, engine: str, worker: Any, model_name: str, max_body: int):
        super().__init__(address, Handler)
        self.engine, self.worker, self.model_name, self.max_body = (
            engine, worker, model_name, max_body,
        )  # fmt: skip
        self.model_lock = threading.Lock()
        self.registry = Registry()
        self.created = int(time.time())


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        if content_type == "application/json":
            body = json.dumps(payload, allow_nan=False).encode()
        else:
            body = str(payload).encode()
        self.send_response(status)
        self.send_header(
            "Content-Type", content_type + ("; charset=utf-8" if "text" in content_type else "")
        )
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send(200, {"status": "ok"})
        elif path == STATUS_PATH:
            self._send(200, self.server.registry.status())
        elif path == "/v1/models":
            self._send(200, {"object": "list", "data": [{
                "id": self.server.model_name, "object": "model", "created": self.server.created,
                "owned_by": "mlx-portal", "kind": self.server.engine,
            }]})  # fmt: skip
        else:
            self._send(404, Refused(f"Unknown path {path[:80]}.", 404, "not_found").as_dict())

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        expected = (
            "/v1/embeddings" if self.server.engine == EMBEDDINGS else "/v1/audio/transcriptions"
        )
        try:
            if path != expected:
                self.close_connection = True  # its body is left unread
                raise Refused(
                    f"This server serves {self.server.engine} at {expected} only.", 404, "not_found"
                )
            body = self._body()
            entry = InFlight(kind=self.server.engine)
            self.server.registry.add(entry)
            try:
                with self.server.model_lock:
                    answer = self.server.worker.answer(body, self.server.model_name)
            finally:
                self.server.registry.remove(entry)
        except Refused as refused:
            self._send(refused.status, refused.as_dict())
            return
        except Exception as exc:  # noqa: BLE001 - the engine failed: say so, keep serving
            print(f"MLX Portal: the request failed: {exc!r}", file=sys.stderr, flush=True)
            self._send(500, Refused(f"The model failed ({exc.__class__.__name__}).", 500,
                                    "engine_error").as_dict())  # fmt: skip
            return
        if self.server.engine == SPEECH and body.get("response_format") == "text":
            self._send(200, answer["text"], "text/plain")
        else:
            self._send(200, answer)

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self.close_connection = True
            raise Refused("A Content-Length is required.", 411, "length_required") from None
        if length > self.server.max_body:
            self.close_connection = True
            raise Refused(
                f"The body is larger than {self.server.max_body} bytes.", 413, "request_too_large"
            )
        raw = self.rfile.read(length)
        content_type = self.headers.get("Content-Type") or ""
        if content_type.lower().startswith("multipart/"):
            return multipart_fields(content_type, raw)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Refused("The body is not valid JSON.", code="invalid_json") from None
        if not isinstance(body, dict):
            raise Refused("The body must be a JSON object.", code="invalid_json")
        if self.server.engine == SPEECH and isinstance(body.get("file"), str):
            try:
                body["file"] = base64.b64decode(body["file"], validate=True)
            except (binascii.Error, ValueError):
                raise Refused("'file' is not valid base64.", param="file") from None
        return body


# --- start-up ---------------------------------------------------------------------------------


def load_worker(engine: str, model: str, max_audio_seconds: float) -> tuple[Any, str]:
    """The engine's model loaded from the directory `model` (never the network), and a line
    for the log."""
    # Here, not at the top: the portal imports this module, and only the model server's
    # process must load mlx and the engines' packages.
    import mlx.core as mx

    if engine == EMBEDDINGS:
        from mlx_embeddings.utils import load

        loaded, tokenizer = load(model)
        config = getattr(loaded, "config", None)
        context = int(getattr(config, "max_position_embeddings", 512) or 512)
        version = metadata.version("mlx-embeddings")
        return Embedder(loaded, tokenizer, mx, context), (
            f"embeddings (mlx-embeddings {version}, mlx {mx.__version__}); inputs of at most "
            f"{context} tokens"
        )
    import numpy as np
    from mlx_audio.audio_io import read
    from mlx_audio.stt import load as load_stt

    loaded = load_stt(model)
    version = metadata.version("mlx-audio")
    return Transcriber(loaded, read, np, max_audio_seconds), (
        f"speech to text (mlx-audio {version}, mlx {mx.__version__}); "
        f"audio of at most {max_audio_seconds:g} s"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The portal's embeddings / speech-to-text server")
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--model", required=True, help="the model's directory")
    parser.add_argument("--host", default="127.0.0.1", choices=("127.0.0.1", "localhost", "::1"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--max-audio-seconds", type=float, default=DEFAULT_MAX_AUDIO_SECONDS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    worker, note = load_worker(args.engine, args.model, args.max_audio_seconds)
    server = Server((args.host, args.port), args.engine, worker, args.model, args.max_body_bytes)
    print(
        f"MLX Portal: {note}; listening on {args.host}:{args.port} "
        "(servers/supervision/engine_entry.py)",
        file=sys.stderr,
        flush=True,
    )
    server.serve_forever()


if __name__ == "__main__":
    # This folder is sys.path[0]: its modules (models.py, …) must not shadow what the
    # engines' packages import.
    sys.path.pop(0)
    main(sys.argv[1:])

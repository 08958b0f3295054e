"""The engines' side of `/v1`: which endpoint each engine serves (`check_engine`), what
`POST /v1/embeddings` and `POST /v1/audio/transcriptions` accept (`embeddings_body`,
`transcription_body`: tables of fields with their bounds, as `schema` is for chat), and how an
upload is read (`read_upload`: in memory, within GATEWAY_MAX_AUDIO_BYTES, never to disk).

Only the fields listed here reach the model server (servers/supervision/engine_entry.py); any
other is dropped, as for chat. The model server checks again what only it can count (an
input's tokens against the model's context, the audio's length once decoded). See
docs/gateway.md, "Embeddings and speech to text".
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError

from servers.gateway.errors import GatewayError
from servers.gateway.schema import MAX_CHARS_PER_TOKEN
from servers.models import CHAT_ENGINES, Engine
from servers.supervision.engine_entry import (
    AUDIO_FORMATS,
    RESPONSE_FORMATS,
    Refused,
    audio_format,
    embedding_texts,
)

EMBEDDINGS, TRANSCRIPTIONS = "embeddings", "audio/transcriptions"
CHAT_ENDPOINTS = frozenset({"chat/completions", "completions"})
#: The endpoint each engine serves (the text and vision engines: chat and completions).
ENGINE_ENDPOINTS = {"embeddings": EMBEDDINGS, "speech-to-text": TRANSCRIPTIONS}
_WHAT = {"embeddings": "makes embeddings", "speech-to-text": "transcribes speech"}

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit
MAX_EMBEDDING_INPUT_CHARS = 100_000  # one input, whatever the model's context
MAX_EMBEDDING_TOTAL_CHARS = 1_000_000  # all the inputs of a request
MAX_PROMPT_CHARS = 2_000  # Whisper reads the last 224 tokens of it
FORM_OVERHEAD_BYTES = 64 * 1024  # the form's other fields and its boundaries
_LANGUAGE = re.compile(r"[a-z]{2,3}")


def serves(engine: str, endpoint: str) -> bool:
    """Whether a server of `engine` answers `endpoint`: chat and completions the chat engines
    (servers.models.CHAT_ENGINES; mlx-vlm has no text completions), embeddings and
    transcriptions their own engine. `check_engine` refuses the rest; a route sends a request
    only to its members that serve it (servers/gateway/routing.py)."""
    if endpoint in CHAT_ENDPOINTS:
        text_only = engine == Engine.VISION and endpoint == "completions"
        return engine in CHAT_ENGINES and not text_only
    return ENGINE_ENDPOINTS.get(engine) == endpoint


def check_engine(engine: str, endpoint: str, profile_name: str) -> None:
    """GatewayError 400 unless a profile of `engine` serves `endpoint` (`serves`)."""
    if serves(engine, endpoint):
        return
    serving = ENGINE_ENDPOINTS.get(engine)
    if serving is not None:  # chat (or the other engine's endpoint) on an embeddings/STT model
        raise GatewayError(
            f"'{profile_name}' {_WHAT[engine]}: it does not chat or complete text. "
            f"Call POST /v1/{serving} with it.",
            param="model",
            code="wrong_engine",
        )
    if endpoint in CHAT_ENDPOINTS:  # text completions on a vision model
        raise GatewayError(
            f"{profile_name} runs a vision model (mlx-vlm), which has no text completions: "
            "use /v1/chat/completions.",
            param="prompt",
            code="unsupported_endpoint",
        )
    what = "make embeddings" if endpoint == EMBEDDINGS else "transcribe speech"
    raise GatewayError(
        f"'{profile_name}' is a chat model: this model does not {what}. Use a profile whose "
        "kind (GET /v1/models) is "
        f"{'embeddings' if endpoint == EMBEDDINGS else 'speech-to-text'}.",
        param="model",
        code="wrong_engine",
    )


def route_refusal(route_name: str, endpoint: str, engines: set[str]) -> GatewayError:
    """A route none of whose members (that the caller may use) serves `endpoint`: 400
    `wrong_engine`, as for one profile of the wrong engine."""
    what = {EMBEDDINGS: "makes embeddings", TRANSCRIPTIONS: "transcribes speech"}.get(
        endpoint, "chats" if endpoint == "chat/completions" else "completes text"
    )
    return GatewayError(
        f"No server of the route '{route_name}' {what} (its servers are of the kind "
        f"{', '.join(sorted(engines))}). Use a route or a profile whose kind (GET /v1/models) "
        "fits this endpoint.",
        param="model",
        code="wrong_engine",
    )


def _refusal(refused: Refused) -> GatewayError:
    return GatewayError(str(refused), refused.status, param=refused.param, code=refused.code)


def embeddings_body(body: Any, context_length: int | None = None) -> dict[str, Any]:
    """The body sent to an embeddings server, built from the allowed fields of `body` alone;
    GatewayError with a message that says what to change."""
    if not isinstance(body, dict):
        raise GatewayError("The request body must be a JSON object.", code="invalid_json")
    if "input" not in body:
        raise GatewayError(
            "'input' is required: a string or a list of strings.",
            param="input",
            code="missing_field",
        )
    try:
        texts = embedding_texts(body["input"])
    except Refused as refused:
        raise _refusal(refused) from None
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise GatewayError(
            f"'input' has {len(texts)} items; send at most {MAX_EMBEDDING_INPUTS} per request.",
            param="input",
            code="too_many_inputs",
        )
    longest = MAX_EMBEDDING_INPUT_CHARS
    if context_length:
        longest = min(longest, context_length * MAX_CHARS_PER_TOKEN)
    for index, text in enumerate(texts):
        if len(text) > longest:
            raise GatewayError(
                f"Input {index} has {len(text)} characters; this model reads at most "
                f"{longest} per input. Split it and try again.",
                param="input",
                code="input_too_long",
            )
    if sum(map(len, texts)) > MAX_EMBEDDING_TOTAL_CHARS:
        raise GatewayError(
            f"The inputs hold more than {MAX_EMBEDDING_TOTAL_CHARS} characters in all; send "
            "them in several requests.",
            param="input",
            code="input_too_long",
        )
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ("float", "base64"):
        raise GatewayError("'encoding_format' must be float or base64.", param="encoding_format")
    if body.get("dimensions") is not None:
        raise GatewayError(
            "'dimensions' is not supported: this model's vectors have one size (leave it out).",
            param="dimensions",
        )
    return {"input": texts, "encoding_format": encoding_format}


# --- speech to text -----------------------------------------------------------------------------


class _InMemory(MemoryFileUploadHandler):
    """Django's in-memory upload handler, for any size: the request's length was checked
    against the limit before the body is read, so nothing is ever written to disk."""

    def handle_raw_input(
        self,
        input_data: Any,
        META: Any,
        content_length: int,
        boundary: Any,
        encoding: str | None = None,
    ) -> None:
        self.activated = True


def audio_limit() -> int:
    return int(settings.GATEWAY_MAX_AUDIO_BYTES)


def _too_large() -> GatewayError:
    return GatewayError(
        f"The audio file is larger than the limit of {audio_limit() // (1024 * 1024)} MiB. "
        "Send a shorter or more compressed recording (WAV, MP3 or FLAC).",
        413,
        param="file",
        code="request_too_large",
    )


def read_upload(request: HttpRequest) -> dict[str, Any]:
    """The transcription form of `request`: its text fields and `file` (bytes), read in
    memory; 411/413/400 GatewayError for a body without a length, over the limit, or not a
    form."""
    if not (request.content_type or "").startswith("multipart/form-data"):
        raise GatewayError(
            "Send the audio as multipart/form-data (a 'file' field), as OpenAI's clients do.",
            code="invalid_content_type",
        )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        raise GatewayError(
            "The request needs a Content-Length.", 411, code="length_required"
        ) from None
    if declared > audio_limit() + FORM_OVERHEAD_BYTES:
        raise _too_large()
    request.upload_handlers = [_InMemory(request)]
    try:
        fields = {name: request.POST.get(name) for name in request.POST}
        files = request.FILES.getlist("file")
    except (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent, MultiPartParserError):
        raise GatewayError(
            "The form cannot be read: send one 'file' and the fields of OpenAI's "
            "transcription request.",
            code="invalid_form",
        ) from None
    if len(files) != 1:
        raise GatewayError(
            "Send exactly one 'file': the audio to transcribe.", param="file", code="missing_field"
        )
    upload = files[0]
    if (upload.size or 0) > audio_limit():
        raise _too_large()
    fields["file"] = upload.read()
    return fields


def hop_body_limit() -> int:
    """The largest transcription body another host's web tier sends: the audio in base64."""
    return (audio_limit() + 2) // 3 * 4 + FORM_OVERHEAD_BYTES


def form_of(body: Any) -> dict[str, Any]:
    """A transcription body as the transport sent it (JSON, the audio in base64) back as the
    form's fields, for `transcription_body` to check again on the model's own host."""
    if not isinstance(body, dict) or not isinstance(body.get("file"), str):
        raise GatewayError(
            "'file' is required: the audio in base64.", param="file", code="missing_field"
        )
    try:
        data = base64.b64decode(body["file"], validate=True)
    except ValueError:
        raise GatewayError(
            "'file' is not valid base64.", param="file", code="invalid_value"
        ) from None
    return {**{k: v for k, v in body.items() if isinstance(v, str)}, "file": data}


def transcription_body(fields: Any) -> dict[str, Any]:
    """The body sent to a speech-to-text server (the audio in base64: the portal's transport
    sends JSON), from the allowed fields of the form alone; GatewayError otherwise."""
    if not isinstance(fields, dict):
        raise GatewayError("Send the transcription request as a form.", code="invalid_form")
    data = fields.get("file")
    if not isinstance(data, bytes) or not data:
        raise GatewayError(
            "'file' is required: the audio to transcribe.", param="file", code="missing_field"
        )
    if len(data) > audio_limit():
        raise _too_large()
    if audio_format(data[:16]) is None:
        names = ", ".join(AUDIO_FORMATS.values())
        raise GatewayError(
            f"The file is not audio of a format this portal reads ({names}). Convert it to "
            "one of them and try again.",
            param="file",
            code="unsupported_audio",
        )
    out: dict[str, Any] = {"file": base64.b64encode(data).decode("ascii")}
    response_format = fields.get("response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise GatewayError(
            f"'response_format' must be one of {', '.join(RESPONSE_FORMATS)} (srt and vtt are "
            "not supported).",
            param="response_format",
        )
    # The server answers JSON either way; the gateway writes `text` itself.
    out["response_format"] = "verbose_json" if response_format == "verbose_json" else "json"
    language = fields.get("language")
    if language:
        if not _LANGUAGE.fullmatch(language):
            raise GatewayError(
                "'language' must be an ISO-639-1 code such as en or de.", param="language"
            )
        out["language"] = language
    prompt = fields.get("prompt")
    if prompt:
        if len(prompt) > MAX_PROMPT_CHARS or not prompt.isprintable():
            raise GatewayError(
                f"'prompt' must be printable text of at most {MAX_PROMPT_CHARS} characters.",
                param="prompt",
            )
        out["prompt"] = prompt
    temperature = fields.get("temperature")
    if temperature not in (None, ""):
        try:
            value = float(temperature)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise GatewayError("'temperature' must be a number from 0 to 1.", param="temperature")
        out["temperature"] = value
    if str(fields.get("stream") or "").lower() in ("true", "1"):
        raise GatewayError(
            "Streamed transcriptions are not supported: leave 'stream' out.", param="stream"
        )
    return out

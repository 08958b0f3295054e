"""A reply in the chat: the conversation sent to the model, the reply streamed through the
gateway's calls (the same path as `/v1`: validated, capped and recorded alike), and saved.
See docs/chat.md.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db.models import Prefetch
from django.template.loader import render_to_string

from accounts.teams import limits_for
from servers.chat.attachments import with_attachments
from servers.chat.conversations import Turn
from servers.chat.images import image_part
from servers.chat.render import render_markdown, split_thinking
from servers.gateway import calls, images, routing
from servers.gateway.errors import GatewayError
from servers.gateway.relay import has_token, sse
from servers.gateway.transport import ClientGone
from servers.models import (
    Conversation,
    Engine,
    Message,
    MessageImage,
    ServerInstance,
    ServerProfile,
    State,
    UsageRecord,
)
from servers.supervision import lifecycle
from servers.supervision.mlx_entry import peer_closed
from servers.usage.records import Caller, Measure


def system_prompt(conversation: Conversation, profile: ServerProfile) -> str:
    """The conversation's own system prompt, else the profile's."""
    return conversation.system_prompt.strip() or profile.system_prompt.strip()


def build_messages(conversation: Conversation, profile: ServerProfile) -> list[dict]:
    """The system prompt, then every user turn and every answer (without its reasoning, as
    chat templates expect). A user turn's images go as `image_url` parts to a vision server —
    the latest MAX_IMAGES_PER_REQUEST of the conversation; an older one, or any to a text
    server, is named in the text instead."""
    vision = profile.engine == Engine.VISION
    shown = Prefetch("images", queryset=MessageImage.objects.defer("thumbnail"))
    turns = list(conversation.messages.prefetch_related(shown))
    sent = {
        image.pk
        for image in [i for m in turns for i in m.images.all()][-images.MAX_IMAGES_PER_REQUEST :]
    } if vision else set()  # fmt: skip
    messages = []
    if prompt := system_prompt(conversation, profile):
        messages.append({"role": "system", "content": prompt})
    for message in turns:
        if message.role == Message.Role.USER:
            content = with_attachments(message.content, message.attachments)
            attached = list(message.images.all())
            notes = [f"(An image was attached here: {i.name}.)" for i in attached
                     if i.pk not in sent]  # fmt: skip
            text = "\n\n".join(filter(None, [content, *notes]))
            parts = [image_part(i.media_type, bytes(i.data)) for i in attached if i.pk in sent]
            if parts:
                messages.append({"role": "user", "content": [{"type": "text", "text": text},
                                                             *parts]})  # fmt: skip
            else:
                messages.append({"role": "user", "content": text})
        elif message.content:
            messages.append({"role": "assistant", "content": message.content})
    return messages


@dataclass(frozen=True)
class Params:
    temperature: float | None = None
    max_tokens: int | None = None

    @classmethod
    def of(cls, conversation: Conversation) -> Params:
        return cls(conversation.temperature, conversation.max_tokens)


@dataclass
class Reply:
    """An answer as it streams in, with the timing of its thinking, and its speed."""

    content: str = ""
    reasoning: str = ""
    thinking_started: float | None = None
    thinking_ended: float | None = None
    chunks: int = 0  # chunks with text: the tokens, when no usage says (a stopped reply)

    def add(self, chunk: dict) -> None:
        now = time.monotonic()
        self.chunks += 1
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            thought = delta.get("reasoning") or delta.get("reasoning_content") or ""
            text = delta.get("content") or ""
            if thought:
                self.reasoning += thought
                self.thinking_started = self.thinking_started or now
            if text:
                if "<think>" in text and self.thinking_started is None:
                    self.thinking_started = now
                self.content += text
                thought_done = self.reasoning or "</think>" in self.content
                if self.thinking_started and self.thinking_ended is None and thought_done:
                    self.thinking_ended = now

    def finished(self) -> tuple[str, str, float | None]:
        """(answer, reasoning, thought seconds)."""
        reasoning, answer = self.reasoning, self.content
        if not reasoning:
            reasoning, answer = split_thinking(self.content)
        seconds = None
        if reasoning and self.thinking_started is not None:
            seconds = (self.thinking_ended or time.monotonic()) - self.thinking_started
        return answer, reasoning, seconds


def speed(measure: Measure, chunks: int, now: float) -> dict:
    """An answer's time to first token (ms), tokens and tokens a second, from what the relay
    measured: the usage's completion tokens (else the chunks counted) over the time from the
    first token to `now` (pure)."""
    tokens = measure.completion_tokens or chunks
    out: dict = {"ttft_ms": measure.ttft_ms, "completion_tokens": tokens or None,
                 "tokens_per_second": None}  # fmt: skip
    if measure.first_token_at is not None and tokens > 1:
        seconds = now - measure.first_token_at
        if seconds > 0:
            # The first token's time is the TTFT: the rate is of the tokens after it.
            out["tokens_per_second"] = (tokens - 1) / seconds
    return out


def _save_answer(
    conversation: Conversation, reply: Reply, status: str, params: Params, measure: Measure
) -> Message:
    answer, reasoning, seconds = reply.finished()
    message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content=answer,
        reasoning=reasoning,
        thought_seconds=seconds,
        html=render_markdown(answer),
        status=status,
        temperature=params.temperature,
        max_tokens=params.max_tokens,
        **speed(measure, reply.chunks, time.monotonic()),
    )
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=message.created_at)
    if status == Message.Status.STOPPED:
        # Keep no more than the page showed: the browser says how much (keep_only_shown),
        # before or after this save. The raw texts first, then a look for its word.
        raw = (message.pk, reply.content, reply.reasoning)
        cache.set(_stopped_key(conversation.pk), raw, SHOWN_SECONDS)
        shown = cache.get(_shown_key(conversation.pk))
        if shown is not None:
            _trim(*raw, *shown)
            _forget_stops(conversation)  # done: the next Stop says its own
    return message


# A stopped reply keeps what the page had shown when Stop was pressed: what was already on its
# way is dropped (static/js/chat.js posts the lengths shown; servers/chat/views.py).
SHOWN_SECONDS = 300


def _shown_key(conversation_pk: int) -> str:
    return f"chat-shown:{conversation_pk}"


def _stopped_key(conversation_pk: int) -> str:
    return f"chat-stopped:{conversation_pk}"


def _trim(message_pk: int, content: str, reasoning: str, content_chars: int, reasoning_chars: int):
    reply = Reply(content=content[:content_chars], reasoning=reasoning[:reasoning_chars])
    answer, thought, _seconds = reply.finished()
    Message.objects.filter(pk=message_pk, status=Message.Status.STOPPED).update(
        content=answer, reasoning=thought, html=render_markdown(answer)
    )


def keep_only_shown(conversation: Conversation, content_chars: int, reasoning_chars: int) -> None:
    """The page stopped the reply having shown `content_chars` characters of its content and
    `reasoning_chars` of its reasoning: the stopped answer keeps no more, whether it is saved
    already or is about to be (its word first, then a look for the save)."""
    shown = (content_chars, reasoning_chars)
    cache.set(_shown_key(conversation.pk), shown, SHOWN_SECONDS)
    raw = cache.get(_stopped_key(conversation.pk))
    if raw is not None:
        _trim(*raw, *shown)
        _forget_stops(conversation)  # done: the next Stop says its own


def _forget_stops(conversation: Conversation) -> None:
    """A new reply starts: an earlier Stop's word and texts are not its own."""
    cache.delete_many([_shown_key(conversation.pk), _stopped_key(conversation.pk)])


# How long one wait for a starting server lasts before the chat looks at the browser again.
START_SLICE = 0.5
STARTING_STATES = {State.STARTING, State.RESTARTING}


def _wait_for_start(profile: ServerProfile, client_socket: socket.socket | None) -> Iterator[int]:
    """Start the profile's server on demand and wait until it runs, yielding the seconds waited
    about every START_SLICE seconds: each yield writes to the browser, and the browser's socket
    is watched, so Stop (or a closed tab) ends the wait at once — nothing is sent to the model
    and nothing saved. Raises GatewayError when the server cannot start."""
    started = time.monotonic()
    deadline = started + settings.GATEWAY_START_TIMEOUT
    while True:
        try:
            lifecycle.ensure_running(profile, timeout=START_SLICE)
            return
        except lifecycle.ServerUnavailable as exc:
            state = ServerInstance.objects.filter(profile=profile).values_list("state", flat=True)
            # Running since ensure_running gave up on its slice: the next turn returns at once.
            going = STARTING_STATES | {State.RUNNING}
            if state.first() not in going or time.monotonic() > deadline:
                raise GatewayError(str(exc), 503, code="server_unavailable") from None
        if client_socket is not None and peer_closed(client_socket):
            raise ClientGone
        yield round(time.monotonic() - started)


def stream_reply(
    user,
    turn: Turn,
    profile: ServerProfile,
    client_socket: socket.socket | None = None,
    route: str = "",
    others: Sequence[ServerProfile] = (),
) -> Iterator[bytes]:
    """Server-sent events for the chat page: `meta` (the conversation, and the question as
    shown: rendered, and how many later messages an edit or a regenerate replaced), maybe
    `status` (starting, or waiting for a turn in the server's fair queue), the model's chunks as
    they come (OpenAI's shape), then `done` with the stored, rendered answer — or `error` with a
    message and a retry. The answer so far is saved even when the browser stops reading (the
    Stop button) or the server dies; Stop while the server starts saves nothing.

    `client_socket` (the browser's connection, when the web server gives it) is watched while
    the server is silent — reading a long prompt sends the browser nothing — so Stop or a
    closed tab ends the request upstream at once, as on the API."""
    conversation, question = turn.conversation, turn.question
    _forget_stops(conversation)
    yield sse(
        {"conversation": conversation.pk, "url": conversation.get_absolute_url(),
         "title": conversation.title, "question": question.pk, "replaced": turn.replaced,
         "html": render_to_string("servers/chat.html#message", {"message": question})},
        "meta",
    )  # fmt: skip
    params = Params.of(conversation)
    if not calls.is_ready(profile):
        if not profile.allow_on_demand:
            state = profile.get_instance().state
            yield sse({"message": f"Server '{profile.name}' is {state}; start it on the Servers "
                       "page.", "retry": True}, "error")  # fmt: skip
            return
        yield sse({"state": "starting", "message": f"Starting {profile.name}…"}, "status")
        try:
            for seconds in _wait_for_start(profile, client_socket):
                message = f"Starting {profile.name}… {seconds} s"
                yield sse({"state": "starting", "message": message}, "status")
        except GatewayError as error:
            yield sse({"message": error.message, "retry": True}, "error")
            return
        except ClientGone:
            return
    body = {
        "model": profile.slug,
        "messages": build_messages(conversation, profile),
        "stream": True,
    }
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    caller = Caller(user, UsageRecord.Source.CHAT, route=route)  # a route: the member it picked
    limits = limits_for(user)
    candidates = [profile, *others]  # a route's other members, in the order to try them
    for index, member in enumerate(candidates):
        call = calls.Call(
            caller,
            member,
            "chat/completions",
            {**body, "model": member.slug},
            limits=limits,
            client_socket=client_socket,
        )
        try:
            for waiting in call.turns():
                # The server is busy: the request waits in its fair queue (servers/sharing).
                yield sse(
                    {"state": "queued", "waiting": waiting,
                     "message": f"{member.name} is busy: waiting for a turn ({waiting} waiting)…"},
                    "status",
                )  # fmt: skip
            relay, _ = call.send()
            break
        except GatewayError as error:
            if index < len(candidates) - 1 and error.code in routing.RETRY_CODES:
                continue  # a route's member failed before any byte: the next one
            # A limit reached says which, and when it resets: the same sentence as the API's.
            yield sse({"message": error.message, "retry": True}, "error")
            return
        except ClientGone:
            return
    reply = Reply()
    status = UsageRecord.Status.CANCELLED
    saved = None
    try:
        for event in relay.events():
            if event.data is None or not event.data.get("choices"):
                continue  # keep-alives, the usage chunk and [DONE] stay on this side
            if has_token(event.data):
                reply.add(event.data)
                yield event.raw
        status = UsageRecord.Status.OK
        saved = _save_answer(conversation, reply, Message.Status.OK, params, relay.measure)
        html = render_to_string("servers/chat.html#message", {"message": saved})
        yield sse({"message": saved.pk, "html": html}, "done")
    except GatewayError as error:
        relay.measure.fail(error)
        status = UsageRecord.Status.ERROR
        if reply.content or reply.reasoning:
            saved = _save_answer(conversation, reply, Message.Status.ERROR, params, relay.measure)
        yield sse({"message": error.message, "retry": True}, "error")
    except ClientGone:
        pass  # Stop, or a closed tab: cancelled; what came so far is saved below
    finally:
        relay.close(status)
        if saved is None and (reply.content or reply.reasoning):
            _save_answer(conversation, reply, Message.Status.STOPPED, params, relay.measure)

"""A reply in the chat: the conversation sent to the model, the reply streamed through the
gateway's calls (the same path as `/v1`: validated, capped and recorded alike), and saved.
See docs/chat.md.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.template.loader import render_to_string

from accounts.teams import limits_for
from servers.chat.attachments import with_attachments
from servers.chat.render import render_markdown, split_thinking
from servers.gateway import calls
from servers.gateway.errors import GatewayError
from servers.gateway.relay import has_token, sse
from servers.gateway.transport import ClientGone
from servers.models import Conversation, Message, ServerProfile, UsageRecord
from servers.usage.records import Caller


def title_from(text: str, limit: int = 60) -> str:
    """A conversation title from its first message (pure)."""
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    if not line:
        return "New chat"
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def build_messages(conversation: Conversation, profile: ServerProfile) -> list[dict]:
    """The profile's system prompt, then every user turn and every answer (without its
    reasoning, as chat templates expect)."""
    messages = []
    if profile.system_prompt.strip():
        messages.append({"role": "system", "content": profile.system_prompt})
    for message in conversation.messages.all():
        if message.role == Message.Role.USER:
            content = with_attachments(message.content, message.attachments)
            messages.append({"role": "user", "content": content})
        elif message.content:
            messages.append({"role": "assistant", "content": message.content})
    return messages


@dataclass(frozen=True)
class Params:
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass
class Reply:
    """An answer as it streams in, with the timing of its thinking."""

    content: str = ""
    reasoning: str = ""
    thinking_started: float | None = None
    thinking_ended: float | None = None

    def add(self, chunk: dict) -> None:
        now = time.monotonic()
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


def _save_answer(conversation: Conversation, reply: Reply, status: str, params: Params) -> Message:
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
    )
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=message.created_at)
    return message


def stream_reply(
    user,
    conversation: Conversation,
    profile: ServerProfile,
    params: Params,
    client_socket: socket.socket | None = None,
) -> Iterator[bytes]:
    """Server-sent events for the chat page: `meta`, maybe `status` (starting, or waiting for a
    turn in the server's fair queue), the model's
    chunks as they come (OpenAI's shape), then `done` with the stored, rendered answer — or
    `error` with a message and a retry. The answer so far is saved even when the browser stops
    reading (the Stop button) or the server dies.

    `client_socket` (the browser's connection, when the web server gives it) is watched while
    the server is silent — reading a long prompt sends the browser nothing — so Stop or a
    closed tab ends the request upstream at once, as on the API."""
    yield sse(
        {"conversation": conversation.pk, "url": conversation.get_absolute_url(),
         "title": conversation.title},
        "meta",
    )  # fmt: skip
    if not calls.is_ready(profile):
        if not profile.allow_on_demand:
            state = profile.get_instance().state
            yield sse({"message": f"Server '{profile.name}' is {state}; start it on the Servers "
                       "page.", "retry": True}, "error")  # fmt: skip
            return
        yield sse({"state": "starting", "message": f"Starting {profile.name}…"}, "status")
    body = {
        "model": profile.slug,
        "messages": build_messages(conversation, profile),
        "stream": True,
    }
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    caller = Caller(user, UsageRecord.Source.CHAT)
    call = calls.Call(
        caller,
        profile,
        "chat/completions",
        body,
        limits=limits_for(user),
        client_socket=client_socket,
    )
    try:
        for waiting in call.turns():
            # The server is busy: the request waits in its fair queue (servers/sharing).
            yield sse(
                {"state": "queued", "waiting": waiting,
                 "message": f"{profile.name} is busy: waiting for a turn ({waiting} waiting)…"},
                "status",
            )  # fmt: skip
        relay, _ = call.send()
    except GatewayError as error:
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
        saved = _save_answer(conversation, reply, Message.Status.OK, params)
        html = render_to_string("servers/chat.html#message", {"message": saved})
        yield sse({"message": saved.pk, "html": html}, "done")
    except GatewayError as error:
        relay.measure.fail(error)
        status = UsageRecord.Status.ERROR
        if reply.content or reply.reasoning:
            saved = _save_answer(conversation, reply, Message.Status.ERROR, params)
        yield sse({"message": error.message, "retry": True}, "error")
    except ClientGone:
        pass  # Stop, or a closed tab: cancelled; what came so far is saved below
    finally:
        relay.close(status)
        if saved is None and (reply.content or reply.reasoning):
            _save_answer(conversation, reply, Message.Status.STOPPED, params)

"""Delivers core replies to Slack through the Web API: a placeholder, throttled `chat.update` edits, final blocks.

Everything that matters goes through the Web API client (with slack_sdk's 429 retry handler installed), never
through Bolt's `respond()`, which drops a 429 without a word. The `response_url` is only the last way to reach a
user when Chorus cannot post in the channel, and its status is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack.render import escape, parts_text, render_message, render_progress
from adapters.slack.translate import message_ref, split_ref
from bots.events import Conversation
from bots.reply import Attachment, PublishForbidden, Reply

_log = logging.getLogger(__name__)

# postMessage errors that mean "Chorus is not in this channel"; the user then hears it through the response_url.
_NOT_HERE = frozenset({"not_in_channel", "channel_not_found", "is_archived", "restricted_action"})
# How long the placeholder waits for the first chunk, so that it can already say "3rd in line, about 9 s".
PLACEHOLDER_GRACE_S = 0.25


@dataclass(frozen=True)
class SlackOptions:
    """The settings a responder needs, read once from `Settings`."""

    edit_interval_s: float = 1.0
    native_streaming: bool = False
    tones: tuple[str, ...] = ()


class SlackResponder:
    """Replies to one event: in its channel, in `thread_ts` when set, ephemeral to `user_id` for errors."""

    def __init__(
        self,
        client: AsyncWebClient,
        conversation: Conversation,
        user_id: str,
        options: SlackOptions,
        *,
        thread_ts: str | None = None,
        response_url: str | None = None,
    ) -> None:
        self.client = client
        self.conversation = conversation
        self.channel = conversation.channel
        self.user_id = user_id
        self.options = options
        self.thread_ts = thread_ts
        self.response_url = response_url

    async def defer(self) -> None:
        """Nothing to do: the adapter acknowledged the request before the handler started."""

    async def send(self, reply: Reply) -> str:
        if reply.ephemeral:
            return await self._ephemeral(reply)
        try:
            response = await self.client.chat_postMessage(
                channel=self.channel,
                thread_ts=self.thread_ts,
                unfurl_links=False,
                unfurl_media=False,
                **render_message(reply, self.options.tones),
            )
        except SlackApiError as exc:
            if _error(exc) in _NOT_HERE:
                await self._not_here()
                return ""
            raise
        ref = message_ref(response["channel"], response["ts"])
        await upload_attachments(self.client, self.channel, self.thread_ts or response["ts"], reply.attachments)
        return ref

    async def edit(self, message_ref: str, reply: Reply) -> None:
        channel, ts = split_ref(message_ref)
        await self.client.chat_update(channel=channel, ts=ts, **render_message(reply, self.options.tones))

    def stream(self, title: str) -> SlackStream:
        return SlackStream(self, title)

    async def open_thread(self, message_ref: str, name: str) -> tuple[str, SlackResponder]:
        """Slack threads need no creating: replies with `thread_ts` set form one under the message."""
        _, ts = split_ref(message_ref)
        thread = SlackResponder(
            self.client,
            Conversation(self.conversation.platform, self.conversation.workspace, self.channel, ts),
            self.user_id,
            self.options,
            thread_ts=ts,
            response_url=self.response_url,
        )
        return ts, thread

    async def _ephemeral(self, reply: Reply) -> str:
        if reply.attachments:
            await self._attach_privately(reply.attachments)
        message = render_message(reply, self.options.tones)
        try:
            response = await self.client.chat_postEphemeral(
                channel=self.channel, user=self.user_id, thread_ts=self.thread_ts, **message
            )
            return message_ref(self.channel, response.get("message_ts", ""))
        except SlackApiError as exc:
            if not self.response_url:
                raise
            _log.info("chat.postEphemeral failed (%s); answering through the response_url", _error(exc))
        await self._via_response_url(message)
        return ""

    async def _attach_privately(self, attachments: Sequence[Attachment]) -> None:
        """Slack has no ephemeral files: a private reply's files go to the user's direct messages with Chorus."""
        opened = await self.client.conversations_open(users=self.user_id)
        for attachment in attachments:
            await self.client.files_upload_v2(
                channel=opened["channel"]["id"],
                file=str(attachment.path),
                filename=attachment.filename,
                title=attachment.description or attachment.filename,
            )

    async def _not_here(self) -> None:
        """Tell the user (privately, through the response_url) that Chorus must be invited first."""
        text = "I can't post in this channel yet. Invite me with `/invite @Chorus` and try again."
        if self.response_url:
            await self._via_response_url({"text": text})
        else:
            _log.warning("cannot post in %s and no response_url to say so", self.channel)

    async def _via_response_url(self, message: dict[str, Any]) -> None:
        assert self.response_url is not None
        webhook = AsyncWebhookClient(
            self.response_url, session=self.client.session, retry_handlers=self.client.retry_handlers
        )
        response = await webhook.send(response_type="ephemeral", **message)
        if response.status_code != 200:
            _log.warning("response_url answered %s: %s", response.status_code, response.body)


async def upload_attachments(
    client: AsyncWebClient, channel: str, thread_ts: str, attachments: Sequence[Attachment]
) -> None:
    """Files (a /stats chart, a brainstorm summary) go into the reply's thread."""
    for attachment in attachments:
        await client.files_upload_v2(
            channel=channel,
            thread_ts=thread_ts,
            file=str(attachment.path),
            filename=attachment.filename,
            title=attachment.description or attachment.filename,
        )


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error", "")) if exc.response is not None else ""


class SlackStream:
    """One streamed reply. A single background pusher posts the placeholder, then edits it at most once per
    `edit_interval_s`, so a slow Slack (429s) never slows the generation down and edits never overtake each other.
    """

    def __init__(self, responder: SlackResponder, title: str) -> None:
        self.responder = responder
        self.title = title
        self.parts: list[str] = []
        self.status_text = ""
        self.ts: str | None = None
        self.channel = responder.channel
        self.edits = 0
        self._native = False
        self._appended = ""  # native streaming: the text Slack already has
        self._dirty = False
        self._last = 0.0
        self._content = asyncio.Event()
        self._pusher: asyncio.Task[None] | None = None
        self._sending = False
        self._finished = False
        self._unreachable = False  # Chorus may not post in this channel; the user was told once
        # The handler task writing this stream: if it is cancelled (shutdown), the pusher stops with it.
        self._owner = asyncio.current_task()

    async def begin_part(self, index: int, total: int) -> None:
        self.parts.append("")
        if index > 1:
            self._content.set()
        self._touch()

    async def write(self, delta: str) -> None:
        if not self.parts:
            self.parts.append("")
        self.parts[-1] += delta
        self.status_text = ""
        self._content.set()
        self._touch()

    async def status(self, text: str) -> None:
        if any(self.parts):
            return  # text is showing; a queue note now would only flicker
        self.status_text = text
        self._content.set()
        self._touch()

    async def finish(self, reply: Reply) -> str:
        self._finished = True
        await self._stop_pusher()
        if self._unreachable:
            return ""
        if self.ts is None:
            return await self.responder.send(reply)
        message = render_message(reply, self.responder.options.tones)
        client = self.responder.client
        if self._native:
            tail = [block for block in message["blocks"] if block["type"] in ("actions", "context")]
            try:
                await self._append_rest()
                await client.chat_stopStream(channel=self.channel, ts=self.ts, blocks=tail or None)
            except SlackApiError as exc:
                _log.warning("chat.stopStream failed (%s); finishing with chat.update", _error(exc))
        # The final edit shows exactly the stored version (the stream showed text before output cleaning).
        await client.chat_update(channel=self.channel, ts=self.ts, **message)
        self.edits += 1
        return message_ref(self.channel, self.ts)

    def _touch(self) -> None:
        self._dirty = True
        if not self._finished and not self._unreachable and (self._pusher is None or self._pusher.done()):
            self._pusher = asyncio.create_task(self._push_loop())

    async def _stop_pusher(self) -> None:
        pusher = self._pusher
        if pusher is None or pusher.done():
            return
        if not self._sending:
            pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pusher

    async def _push_loop(self) -> None:
        interval = self.responder.options.edit_interval_s
        while self._dirty and not self._finished:
            if self.ts is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._content.wait(), PLACEHOLDER_GRACE_S)
            else:
                wait = self._last + interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            if self._finished or (self._owner is not None and self._owner.done()):
                return
            self._dirty = False
            self._sending = True
            try:
                await self._push()
            except SlackApiError as exc:
                _log.warning("a streaming update failed (%s); the final reply will still be posted", _error(exc))
            except Exception:
                _log.exception("a streaming update failed; the final reply will still be posted")
            finally:
                self._sending = False
                self._last = time.monotonic()

    async def _push(self) -> None:
        client = self.responder.client
        if self.ts is None:
            if self.responder.options.native_streaming and self.responder.thread_ts and await self._start_native():
                return
            try:
                response = await client.chat_postMessage(
                    channel=self.channel,
                    thread_ts=self.responder.thread_ts,
                    **render_progress(self.title, self.parts, self.status_text),
                )
            except SlackApiError as exc:
                if _error(exc) not in _NOT_HERE:
                    raise
                self._unreachable = True
                await self.responder._not_here()
                return
            self.ts, self.channel = response["ts"], response["channel"]
            return
        if self._native:
            await self._append_rest()
            return
        await client.chat_update(
            channel=self.channel, ts=self.ts, **render_progress(self.title, self.parts, self.status_text)
        )
        self.edits += 1

    async def _append_rest(self) -> None:
        """Native streaming: send Slack the text it does not have yet."""
        text = escape(parts_text(self.parts))
        delta = text[len(self._appended) :] if text.startswith(self._appended) else ""
        if delta and self.ts is not None:
            await self.responder.client.chat_appendStream(channel=self.channel, ts=self.ts, markdown_text=delta)
            self._appended += delta

    async def _start_native(self) -> bool:
        """Open a Slack-native stream in the thread; False (chat.update from now on) if Slack refuses it."""
        responder = self.responder
        text = escape(parts_text(self.parts))
        try:
            response = await responder.client.chat_startStream(
                channel=self.channel,
                thread_ts=responder.thread_ts or "",
                markdown_text=f"*{escape(self.title)}*\n{text}" if text else f"*{escape(self.title)}*\n",
                recipient_team_id=responder.conversation.workspace or None,
                recipient_user_id=responder.user_id or None,
            )
        except SlackApiError as exc:
            _log.info("chat.startStream refused (%s); streaming with chat.update instead", _error(exc))
            return False
        self.ts, self.channel = response["ts"], response.get("channel", self.channel)
        self._native, self._appended = True, text
        return True


class SlackPublisher:
    """Posts unprompted content (drops, brainstorm timers) with chat.postMessage; returns `"<channel>:<ts>"`."""

    def __init__(self, client_for: Any, options: SlackOptions) -> None:
        # client_for(team_id) -> AsyncWebClient: the bot token of that workspace (one token, or OAuth installs).
        self._client_for = client_for
        self.options = options

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        client: AsyncWebClient = await self._client_for(conversation.workspace)
        try:
            response = await client.chat_postMessage(
                channel=conversation.channel,
                thread_ts=conversation.thread,
                unfurl_links=False,
                **render_message(reply, self.options.tones),
            )
        except SlackApiError as exc:
            if _error(exc) in _NOT_HERE:
                raise PublishForbidden(f"Slack refused channel {conversation.channel}: {_error(exc)}") from exc
            raise
        ref = message_ref(response["channel"], response["ts"])
        await upload_attachments(client, response["channel"], conversation.thread or response["ts"], reply.attachments)
        return ref

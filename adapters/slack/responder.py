"""Delivers core replies to Slack through the Web API: a placeholder, throttled `chat.update` edits, final blocks.

Everything goes through the Outbound, which paces calls to Slack's limits and retries final results after a 429,
never through Bolt's `respond()`, which drops a 429 without a word. A final edit Slack keeps refusing is posted as
a new message instead (and the placeholder removed), so a result is never lost and its stored id is the message
the user sees. The `response_url` is only the last way to reach a user when Chorus cannot post in the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack.outbound import Outbound, Priority, RateLimited
from adapters.slack.render import escape, parts_text, render_message, render_progress, with_command_prefix
from adapters.slack.translate import message_ref, split_ref
from bots.errors import UserError
from bots.events import Conversation
from bots.reply import Attachment, PostedHook, PublishForbidden, Reply

_log = logging.getLogger(__name__)

# postMessage errors that mean "Chorus is not in this channel"; the user then hears it through the response_url.
_NOT_HERE = frozenset({"not_in_channel", "channel_not_found", "is_archived", "restricted_action"})
# Errors after which no post from this workspace's token can succeed until an admin acts: the app was removed
# (uninstalled, token revoked, workspace deleted) or lacks the scope to post. Unprompted posts stop there too.
_APP_GONE = frozenset(
    {"account_inactive", "token_revoked", "invalid_auth", "not_authed", "team_access_not_granted", "missing_scope"}
)
# What SlackPublisher treats as "Chorus may not post here" (PublishForbidden): never retried.
_NOT_ALLOWED = _NOT_HERE | _APP_GONE
# ... and what the user is told for those an invitation does not fix.
_CANNOT_POST = {
    "is_archived": "This channel is archived, so I can't post in it.",
    "restricted_action": "This channel's settings don't let me post here. Ask an admin, or try another channel.",
}
# A direct message between people (its id starts with D) cannot take an app that was not part of it.
_NOT_IN_DM = (
    "I can't post in a direct message between other people. Use me in a channel I'm in, or message me directly."
)
# chat.update errors after which the result can only be delivered as a new message.
_NOT_EDITABLE = frozenset({"cant_update_message", "edit_window_closed", "msg_too_long"})
# chat.update's error for a message that no longer exists: someone deleted what Chorus was writing.
DELETED = "message_not_found"
# How long the placeholder waits for the first chunk, so that it can already say "3rd in line, about 9 s".
PLACEHOLDER_GRACE_S = 0.25
# What a message cut short by a restart says under its text so far.
CUT_SHORT_NOTE = "⚠ Chorus restarted before this was finished; above is the text so far. Run the command again."
# ... and what one says when its handler failed before finishing it.
UNFINISHED_NOTE = "⚠ This stopped before it was finished; above is the text so far. Try again."
# What the user is told when Slack refused a message with 429s for longer than Chorus waits.
RATE_LIMITED_NOTE = (
    "Slack kept refusing new messages in this channel (too many at once), so this was not posted. "
    "Try again in a minute."
)
# Slack seconds a placeholder removal may keep being refused before it is left as it is.
CLEANUP_PATIENCE_S = 60.0


@dataclass(frozen=True)
class SlackOptions:
    """The settings a responder needs, read once from `Settings`."""

    edit_interval_s: float = 1.0
    native_streaming: bool = False
    tones: tuple[str, ...] = ()
    command_prefix: str = ""  # `[slack] command_prefix`: hints name `/chorus-create`, as registered
    commands: tuple[str, ...] = ()  # the core's command names, to find in the text

    def render(self, reply: Reply) -> dict[str, Any]:
        """chat.postMessage / chat.update / chat.postEphemeral kwargs for a reply."""
        return render_message(with_command_prefix(reply, self.command_prefix, self.commands), self.tones)


class SlackResponder:
    """Replies to one event: in its channel, in `thread_ts` when set, ephemeral to `user_id` for errors."""

    def __init__(
        self,
        client: AsyncWebClient,
        conversation: Conversation,
        user_id: str,
        options: SlackOptions,
        *,
        outbound: Outbound | None = None,
        thread_ts: str | None = None,
        response_url: str | None = None,
    ) -> None:
        self.client = client
        self.conversation = conversation
        self.channel = conversation.channel
        self.team = conversation.workspace
        self.user_id = user_id
        self.options = options
        self.outbound = outbound or Outbound()
        self.thread_ts = thread_ts
        self.response_url = response_url

    async def defer(self) -> None:
        """Nothing to do: the adapter acknowledged the request before the handler started."""

    async def call(self, method: str, *, priority: Priority = Priority.FINAL, **kwargs: Any) -> Any:
        """`method` through the Outbound: paced, and retried after 429s until Slack takes it (see Outbound.send)."""
        client = self.outbound.quiet(self.client)
        return await self.outbound.send(client, method, team=self.team, priority=priority, **kwargs)

    async def send(self, reply: Reply) -> str:
        if reply.ephemeral:
            return await self._ephemeral(reply)
        try:
            response = await self.call(
                "chat.postMessage",
                channel=self.channel,
                thread_ts=self.thread_ts,
                unfurl_links=False,
                unfurl_media=False,
                **self.options.render(reply),
            )
        except SlackApiError as exc:
            if _error(exc) in _NOT_HERE:
                await self._not_here(_error(exc))
                return ""
            raise
        except RateLimited as exc:
            raise UserError(RATE_LIMITED_NOTE) from exc
        ref = message_ref(response["channel"], response["ts"])
        thread = self.thread_ts or response["ts"]
        failed = await upload_attachments(self.client, self.channel, thread, reply.attachments)
        if failed:
            await self._ephemeral(Reply.error(" ".join(failed)))
        return ref

    async def edit(self, message_ref: str, reply: Reply) -> None:
        channel, ts = split_ref(message_ref)
        await self.call("chat.update", channel=channel, ts=ts, **self.options.render(reply))

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
            outbound=self.outbound,
            thread_ts=ts,
            response_url=self.response_url,
        )
        return ts, thread

    async def _ephemeral(self, reply: Reply) -> str:
        if reply.attachments:
            try:
                await self._attach_privately(reply.attachments)
            except SlackApiError as exc:
                _log.warning("could not send a private file to %s: %s", self.user_id, _error(exc))
                note = (
                    f"The file could not be sent to your direct messages (Slack said {_error(exc) or 'no'}); "
                    "an admin may need to reinstall Chorus so it has the im:write permission."
                )
                reply = replace(reply, parts=(note,), attachments=(), footer="")
        message = self.options.render(reply)
        try:
            response = await self.call(
                "chat.postEphemeral", channel=self.channel, user=self.user_id, thread_ts=self.thread_ts, **message
            )
            return message_ref(self.channel, response.get("message_ts", ""))
        except (SlackApiError, RateLimited) as exc:
            if not self.response_url:
                raise
            _log.info("chat.postEphemeral failed (%s); answering through the response_url", exc)
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

    async def _not_here(self, error: str) -> None:
        """Tell the user (privately, through the response_url) why Chorus cannot post here: mostly that it must be
        invited first, but an invitation does not help in an archived channel, one where posting is restricted or a
        direct message between people."""
        text = _CANNOT_POST.get(
            error, "I can't post in this channel yet. Invite me with `/invite @Chorus` and try again."
        )
        if self.channel.startswith("D") and error not in _CANNOT_POST:
            text = _NOT_IN_DM
        if self.response_url:
            await self._via_response_url({"text": text})
        else:
            _log.warning("cannot post in %s and no response_url to say so", self.channel)

    async def _via_response_url(self, message: dict[str, Any]) -> None:
        assert self.response_url is not None
        retries = [AsyncRateLimitErrorRetryHandler(max_retry_count=2), AsyncConnectionErrorRetryHandler()]
        webhook = AsyncWebhookClient(self.response_url, session=self.client.session, retry_handlers=retries)
        response = await webhook.send(response_type="ephemeral", **message)
        if response.status_code != 200:
            _log.warning("response_url answered %s: %s", response.status_code, response.body)


async def upload_attachments(
    client: AsyncWebClient, channel: str, thread_ts: str, attachments: Sequence[Attachment]
) -> list[str]:
    """Files (a /stats chart, a brainstorm summary) go into the reply's thread. The message is posted already, so a
    file Slack refuses does not fail it (a drop would be posted again): returns what went wrong, in words."""
    failed: list[str] = []
    for attachment in attachments:
        try:
            await client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                file=str(attachment.path),
                filename=attachment.filename,
                title=attachment.description or attachment.filename,
            )
        except SlackApiError as exc:
            _log.warning("could not attach %s in %s: %s", attachment.filename, channel, _error(exc))
            note = f"{attachment.filename} could not be attached (Slack said {_error(exc) or 'no'})."
            if _error(exc) == "missing_scope":
                note += " An admin may need to reinstall Chorus so it has the files:write permission."
            failed.append(note)
    return failed


def _log_failure(delivery: asyncio.Future[str]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        _log.warning("could not finish a message cut short: %s", delivery.exception())


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error", "")) if exc.response is not None else ""


class SlackStream:
    """One streamed reply. A single background pusher posts the placeholder, then edits it at most once per
    `edit_interval_s` and only when the Outbound gives it a turn, so a slow or busy Slack never slows the generation
    down, edits never overtake each other, and under pressure the edits in between are skipped (each shows the
    latest text). The final reply goes first in line and is never lost (see `_deliver`).
    """

    def __init__(self, responder: SlackResponder, title: str) -> None:
        self.responder = responder
        self.outbound = responder.outbound
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
        self._delivery: asyncio.Future[str] | None = None
        self._unreachable = False  # Chorus may not post in this channel; the user was told once
        self._on_posted: PostedHook | None = None
        # The handler task writing this stream: if it is cancelled (shutdown), the pusher stops with it.
        self._owner = asyncio.current_task()
        if self._owner is not None:
            self._owner.add_done_callback(self._on_owner_done)
        self.outbound.streams.add(self)

    def on_posted(self, hook: PostedHook) -> None:
        self._on_posted = hook
        if self.ts is not None:
            hook(message_ref(self.channel, self.ts))

    def _posted(self) -> None:
        if self._on_posted is not None and self.ts is not None:
            self._on_posted(message_ref(self.channel, self.ts))

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
        """Deliver the final reply; returns the id of the message that shows it ("" if Chorus may not post)."""
        if self._delivery is None:
            self._finished = True
            # Shielded: a shutdown that cancels the handler now still lets the final reply land.
            self._delivery = asyncio.ensure_future(self._deliver(reply))
        return await asyncio.shield(self._delivery)

    async def interrupt(self, note: str = CUT_SHORT_NOTE) -> None:
        """Finish a stream whose handler will not (Chorus is stopping): its text so far, then `note`; no buttons."""
        if self._delivery is None:
            parts = tuple(part for part in self.parts if part)
            self._finished = True
            self._delivery = asyncio.ensure_future(self._deliver(Reply(parts=parts, title=self.title, footer=note)))
        with contextlib.suppress(Exception):
            await asyncio.shield(self._delivery)

    def _on_owner_done(self, owner: asyncio.Task[Any]) -> None:
        """The handler ended without finishing this message (it failed, or a stop cancelled it): finish it with the
        text so far and a note, so that no "writing… ▍" is left behind."""
        if self._delivery is not None:
            return
        self._finished = True
        if not self.outbound.stopping and self.ts is None and not self._sending:
            # Nothing was shown yet: the user hears of the failure privately, from the error boundary.
            if self._pusher is not None:
                self._pusher.cancel()
            self.outbound.streams.discard(self)
            return
        note = CUT_SHORT_NOTE if self.outbound.stopping else UNFINISHED_NOTE
        parts = tuple(part for part in self.parts if part)
        self._delivery = asyncio.ensure_future(self._deliver(Reply(parts=parts, title=self.title, footer=note)))
        self._delivery.add_done_callback(_log_failure)

    def abandon(self) -> None:
        """Give up delivering (the process is going away)."""
        if self._delivery is not None:
            self._delivery.cancel()
        self.outbound.streams.discard(self)

    async def _deliver(self, reply: Reply) -> str:
        """The final reply, first in line. The placeholder is edited; when Slack refuses that edit past its patience
        (429s) or for good, the reply is posted as a new message and the placeholder removed."""
        try:
            await self._stop_pusher()  # a progress edit in flight lands first; one waiting for its turn is skipped
            if self._unreachable:
                return ""
            if self.ts is None:
                return await self.responder.send(reply)
            message = self.responder.options.render(reply)
            if self._native:
                tail = [block for block in message["blocks"] if block["type"] in ("actions", "context")]
                try:
                    await self._append_rest(Priority.FINAL)
                    await self.responder.call("chat.stopStream", channel=self.channel, ts=self.ts, blocks=tail or None)
                except (SlackApiError, RateLimited) as exc:
                    _log.warning("chat.stopStream failed (%s); finishing with chat.update", exc)
            # The final edit shows exactly the stored version (the stream showed text before output cleaning).
            try:
                await self.responder.call("chat.update", channel=self.channel, ts=self.ts, **message)
            except RateLimited:
                _log.warning("Slack kept refusing the final edit of %s; posting the result anew", self.ts)
            except SlackApiError as exc:
                if _error(exc) == DELETED:
                    self._deleted()
                    return ""
                if _error(exc) not in _NOT_EDITABLE:
                    raise
                _log.warning("the placeholder %s can't be edited (%s); posting the result anew", self.ts, _error(exc))
            else:
                self.edits += 1
                return message_ref(self.channel, self.ts)
            ref = await self.responder.send(reply)
            await self._remove_placeholder()
            return ref
        finally:
            self.outbound.streams.discard(self)

    async def _remove_placeholder(self) -> None:
        try:
            await self.responder.call(
                "chat.delete", priority=Priority.POST, patience_s=CLEANUP_PATIENCE_S, channel=self.channel, ts=self.ts
            )
        except (SlackApiError, RateLimited) as exc:
            _log.warning("could not remove the placeholder %s (%s)", self.ts, exc)

    def _touch(self) -> None:
        self._dirty = True
        if not self._finished and not self._unreachable and (self._pusher is None or self._pusher.done()):
            self._pusher = asyncio.create_task(self._push_loop())

    async def _stop_pusher(self) -> None:
        pusher = self._pusher
        if pusher is None or pusher.done():
            return
        if not self._sending:
            pusher.cancel()  # waiting for its interval or its turn: the edit is skipped
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
            try:
                await self._push()
            except (SlackApiError, RateLimited) as exc:
                _log.info("a streaming update failed (%s); the final reply will still be posted", exc)
            except Exception:
                _log.exception("a streaming update failed; the final reply will still be posted")
            finally:
                self._sending = False
                self._last = time.monotonic()

    async def _turn(self, method: str, priority: Priority) -> Any:
        """Wait for a turn at `method`, then mark the stream as sending (no longer cancellable) and return the
        client to call with; the text is rendered after this, so the edit shows the latest state."""
        await self.outbound.turn(method, self.responder.team, self.channel, priority)
        self._dirty = False
        self._sending = True
        return self.outbound.quiet(self.responder.client)

    async def _push(self) -> None:
        responder = self.responder
        team = responder.team
        if self.ts is None:
            if responder.options.native_streaming and responder.thread_ts and await self._start_native():
                return
            client = await self._turn("chat.postMessage", Priority.POST)
            try:
                response = await self.outbound.attempt(
                    client,
                    "chat.postMessage",
                    team,
                    channel=self.channel,
                    thread_ts=responder.thread_ts,
                    unfurl_links=False,
                    unfurl_media=False,
                    **render_progress(self.title, self.parts, self.status_text),
                )
            except SlackApiError as exc:
                if _error(exc) not in _NOT_HERE:
                    raise
                self._unreachable = True
                await responder._not_here(_error(exc))
                return
            self.ts, self.channel = response["ts"], response["channel"]
            self._posted()
            return
        if self._native:
            await self._append_rest(Priority.PROGRESS)
            return
        client = await self._turn("chat.update", Priority.PROGRESS)
        try:
            await self.outbound.attempt(
                client,
                "chat.update",
                team,
                channel=self.channel,
                ts=self.ts,
                **render_progress(self.title, self.parts, self.status_text),
            )
        except SlackApiError as exc:
            if _error(exc) != DELETED:
                raise
            self._deleted()
            return
        self.edits += 1

    def _deleted(self) -> None:
        """Someone (an admin) deleted the message being written: it is not edited again, and the result is not
        posted anew, which would undo them (the version is still stored: /history has it)."""
        _log.info("the message %s being written was deleted; the result will not be posted again", self.ts)
        self._unreachable = True

    async def _append_rest(self, priority: Priority) -> None:
        """Native streaming: send Slack the text it does not have yet."""
        if self.ts is None:
            return
        if priority is Priority.PROGRESS:
            client = await self._turn("chat.appendStream", priority)
        else:
            await self.outbound.turn("chat.appendStream", self.responder.team, self.channel, priority)
            client = self.outbound.quiet(self.responder.client)
        text = escape(parts_text(self.parts))
        delta = text[len(self._appended) :] if text.startswith(self._appended) else ""
        if delta:
            await self.outbound.attempt(
                client,
                "chat.appendStream",
                self.responder.team,
                channel=self.channel,
                ts=self.ts,
                markdown_text=delta,
            )
            self._appended += delta

    async def _start_native(self) -> bool:
        """Open a Slack-native stream in the thread; False (chat.update from now on) if Slack refuses it."""
        responder = self.responder
        client = await self._turn("chat.startStream", Priority.POST)
        text = escape(parts_text(self.parts))
        title = f"*{escape(self.title)}*\n"
        try:
            response = await self.outbound.attempt(
                client,
                "chat.startStream",
                responder.team,
                channel=self.channel,
                thread_ts=responder.thread_ts or "",
                markdown_text=title + text,
                recipient_team_id=responder.conversation.workspace or None,
                recipient_user_id=responder.user_id or None,
            )
        except SlackApiError as exc:
            _log.info("chat.startStream refused (%s); streaming with chat.update instead", _error(exc))
            return False
        self.ts, self.channel = response["ts"], response.get("channel", self.channel)
        self._native, self._appended = True, text
        self._posted()
        return True


class NotInstalled(Exception):
    """Chorus holds no token for this workspace (it was never installed there, or was uninstalled)."""


class PublishRefused(Exception):
    """Slack refused an unprompted post for a reason other than the channel (it may pass: the post is retried)."""


class SlackPublisher:
    """Posts unprompted content (drops, brainstorm timers) with chat.postMessage; returns `"<channel>:<ts>"`."""

    def __init__(self, client_for: Any, options: SlackOptions, outbound: Outbound | None = None) -> None:
        # client_for(team_id) -> AsyncWebClient: the bot token of that workspace (one token, or OAuth installs).
        self._client_for = client_for
        self.options = options
        self.outbound = outbound or Outbound()

    async def _client(self, conversation: Conversation) -> AsyncWebClient:
        """The workspace's client; a workspace that uninstalled Chorus (no token stored any more) is one Chorus may
        not post to, not a passing fault."""
        try:
            client: AsyncWebClient = await self._client_for(conversation.workspace)
        except NotInstalled as exc:
            raise PublishForbidden(f"Slack refused channel {conversation.channel}: {exc}") from exc
        return client

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        client = await self._client(conversation)
        try:
            response = await self.outbound.send(
                self.outbound.quiet(client),
                "chat.postMessage",
                team=conversation.workspace,
                priority=Priority.POST,
                channel=conversation.channel,
                thread_ts=conversation.thread,
                unfurl_links=False,
                unfurl_media=False,
                **self.options.render(reply),
            )
        except SlackApiError as exc:
            if _error(exc) in _NOT_ALLOWED:
                raise PublishForbidden(f"Slack refused channel {conversation.channel}: {_error(exc)}") from exc
            # The reason reaches admins (/drops now, drop alerts): Slack's error code, not the SDK's dump of the call.
            raise PublishRefused(f"Slack refused the post ({_error(exc) or 'no reason given'})") from exc
        ref = message_ref(response["channel"], response["ts"])
        await upload_attachments(client, response["channel"], conversation.thread or response["ts"], reply.attachments)
        return ref

    async def edit(self, conversation: Conversation, message_ref: str, reply: Reply) -> bool:
        """chat.update of a message Chorus posted (a bot token may edit its own messages at any time)."""
        client = await self._client(conversation)
        channel, ts = split_ref(message_ref)
        try:
            await self.outbound.send(
                self.outbound.quiet(client),
                "chat.update",
                team=conversation.workspace,
                priority=Priority.POST,
                channel=channel,
                ts=ts,
                **self.options.render(reply),
            )
        except SlackApiError as exc:
            if _error(exc) in _NOT_EDITABLE or _error(exc) == DELETED:
                return False
            if _error(exc) in _NOT_ALLOWED:
                raise PublishForbidden(f"Slack refused channel {channel}: {_error(exc)}") from exc
            raise PublishRefused(f"Slack refused the edit ({_error(exc) or 'no reason given'})") from exc
        return True

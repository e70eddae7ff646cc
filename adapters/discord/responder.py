"""Delivers core replies to Discord: interactions (defer, throttled streaming edits, follow-ups), plain channel
messages (replies, threads, late deliveries) and unprompted posts (the Publisher).

Rules every path follows: allowed_mentions none; a reply that cannot be edited in place arrives as a follow-up or a
channel message instead, so nobody is left looking at a stale "thinking…"; an interaction token older than
`discord.interaction_token_ttl_s` is never used, the channel gets the message (just before that, a "thinking…" or
half-written original says so, or points to /history where the bot may not post).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import aiohttp
import discord
from discord.enums import InteractionResponseType
from discord.http import Route
from discord.webhook.async_ import async_context, interaction_response_params

from adapters.discord.callbacks import CallbackConnections, CallbackError
from adapters.discord.render import CONTENT_LIMIT, Page, render_progress, render_reply, sanitize, split_text
from bots.errors import UserError
from bots.events import Conversation
from bots.reply import PostedHook, PublishForbidden, Reply

if TYPE_CHECKING:
    from bots.reply import Responder

_log = logging.getLogger(__name__)

DELIVERY_ERRORS = (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError, OSError)
UNKNOWN_MESSAGE = 10008  # Discord's JSON error code for a message that does not exist (deleted)
# What became of an interaction in the adapter's first look at it: deferred publicly, answered privately at once
# (refused by the checks that cost nothing), or the defer failed.
DEFERRED, REFUSED, NOT_DEFERRED = "deferred", "refused", "not deferred"
# How long a final render keeps being retried (honouring Retry-After) before it is delivered another way.
FINAL_RETRY_S = 10.0
_T = TypeVar("_T")
_HINTS_KEPT = 512
# Connections early defers may hold open at once; more acks than that wait for one to come free (a local round
# trip is well under a millisecond, a real one a few tens) instead of each opening its own.
ACK_CONNECTIONS = 32
CALLBACK_ATTEMPTS = 5  # tries of one ack refused with a 429 (a bucket) or a 5xx


def _retry_after(body: bytes) -> float:
    try:
        return float(json.loads(body)["retry_after"])
    except (ValueError, KeyError, TypeError):
        return 1.0


class Host(Protocol):
    """What responders need from the adapter: the client, settings and shared bookkeeping."""

    client: discord.Client
    edit_interval_s: float
    token_ttl_s: float
    rate_hints: RateHints
    final_retry_s: float
    streams: set[DiscordStream]  # streams in flight, finished early with a note on shutdown

    @property
    def tones(self) -> Sequence[str]: ...

    def remember_thread(self, thread_id: str, parent_id: str) -> None: ...


class RateHints:
    """Rate-limit headers seen on webhook (interaction) requests, per token, so streaming slows down in time.

    Fed by an aiohttp TraceConfig on discord.py's session; bounded, oldest tokens are dropped.
    """

    def __init__(self) -> None:
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def observe(self, path: str, headers: Mapping[str, str]) -> None:
        if "/webhooks/" not in path or "X-RateLimit-Remaining" not in headers:
            return
        try:
            remaining = int(headers["X-RateLimit-Remaining"])
            reset_after = float(headers.get("X-RateLimit-Reset-After", "0"))
        except ValueError:
            return
        parts = path.split("/webhooks/", 1)[1].split("/")
        if len(parts) < 2:
            return
        token = parts[1]
        self._seen[token] = (remaining, reset_after)
        self._seen.move_to_end(token)
        while len(self._seen) > _HINTS_KEPT:
            self._seen.popitem(last=False)

    def interval(self, token: str, base: float) -> float:
        """Seconds to wait before the next edit: the configured pace, or slower if the bucket is running low."""
        hint = self._seen.get(token)
        if hint is None:
            return base
        remaining, reset_after = hint
        if remaining <= 0:
            return max(base, reset_after)
        return max(base, reset_after / remaining)

    def trace_config(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def on_request_end(session: Any, context: Any, params: aiohttp.TraceRequestEndParams) -> None:
            self.observe(params.url.path, params.response.headers)

        trace.on_request_end.append(on_request_end)
        return trace


class AckSession:
    """What acks (interaction callbacks) travel on: at most `connections` kept-alive connections of their own.

    A burst of interactions then reuses a few warm connections instead of opening a TCP (and TLS) connection per
    interaction, and acks never queue behind the uploads and streaming edits on discord.py's session. Callbacks are
    written directly on those connections (adapters.discord.callbacks); through a proxy they go through aiohttp."""

    def __init__(self, connections: int = ACK_CONNECTIONS) -> None:
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._direct: CallbackConnections | None = None

    def get(self) -> aiohttp.ClientSession:
        """The aiohttp session, opened on first use (it needs the running loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections), cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def respond(self, client: discord.Client, interaction_id: int, token: str, payload: dict[str, Any]) -> bool:
        """Send an interaction callback; False (logged) if Discord did not take it."""
        http = client.http
        if http.proxy is None:
            if self._direct is None:
                self._direct = CallbackConnections(Route.BASE, http.user_agent, self.connections)
            for attempt in range(CALLBACK_ATTEMPTS):  # as discord.py's webhook adapter retries
                try:
                    response = await self._direct.post(interaction_id, token, payload)
                except CallbackError as exc:
                    _log.warning("interaction callback %s failed: %s", interaction_id, exc)
                    return False
                if 200 <= response.status < 300:
                    return True
                if response.status == 429 and response.headers.get("via"):  # a bucket, not Cloudflare
                    await asyncio.sleep(_retry_after(response.body))
                elif response.status >= 500:
                    await asyncio.sleep(1 + attempt * 2)
                else:
                    break
            _log.warning(
                "Discord refused interaction callback %s: %s %s", interaction_id, response.status, response.body[:200]
            )
            return False
        params = interaction_response_params(type=payload["type"], data=payload.get("data"))
        try:
            await async_context.get().create_interaction_response(
                interaction_id, token, session=self.get(), proxy=http.proxy, proxy_auth=http.proxy_auth, params=params
            )
        except DELIVERY_ERRORS as exc:
            _log.warning("interaction callback %s failed: %s", interaction_id, exc)
            return False
        return True

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()
            self._direct = None
        if self._session is not None:
            await self._session.close()
            self._session = None


async def defer_raw(client: discord.Client, interaction_id: int, token: str, acks: AckSession) -> bool:
    """Send a deferred ("thinking…") callback straight from the raw payload, before discord.py builds models or the
    core runs, so the 3 s deadline is met even with hundreds of interactions arriving at once."""
    deferred = {"type": InteractionResponseType.deferred_channel_message.value}
    return await acks.respond(client, interaction_id, token, deferred)


def _private(text: str) -> dict[str, Any]:
    return {"content": text, "flags": 64, "allowed_mentions": {"parse": []}}


def _private_pages(text: str) -> list[dict[str, Any]]:
    """A private answer as one or more ephemeral messages, split at Discord's content limit like public replies."""
    return [_private(chunk) for chunk in split_text(text, CONTENT_LIMIT)]


async def _private_follow_ups(
    client: discord.Client,
    application_id: int,
    token: str,
    pages: Sequence[dict[str, Any]],
    session: aiohttp.ClientSession,
) -> None:
    """Send the rest of a long private answer as ephemeral follow-ups, in order."""
    http = client.http
    adapter = async_context.get()
    for page in pages:
        await adapter.execute_webhook(
            application_id, token, session=session, proxy=http.proxy, proxy_auth=http.proxy_auth, payload=page
        )


async def answer_raw(client: discord.Client, interaction_id: int, token: str, text: str, acks: AckSession) -> bool:
    """Answer an interaction privately straight from its raw payload: for those refused before discord.py or the
    core see them (unknown, outdated, invalid), so they never show a public "thinking…". Text past Discord's limit
    follows in further private messages."""
    first, *rest = _private_pages(text)
    payload = {"type": InteractionResponseType.channel_message.value, "data": first}
    answered = await acks.respond(client, interaction_id, token, payload)
    if answered and rest:
        try:
            await _private_follow_ups(client, client.application_id or 0, token, rest, acks.get())
        except DELIVERY_ERRORS as exc:
            _log.warning("the rest of a long private answer to interaction %s failed: %s", interaction_id, exc)
    return answered


async def replace_deferred_raw(
    client: discord.Client, application_id: int, token: str, text: str, session: aiohttp.ClientSession
) -> None:
    """Turn a deferred "thinking…" into a private answer without discord.py models: delete the loading response,
    then follow up ephemerally (a follow-up sent while it still loads would become it, publicly)."""
    http = client.http
    try:
        await async_context.get().delete_original_interaction_response(
            application_id, token, session=session, proxy=http.proxy, proxy_auth=http.proxy_auth
        )
        await _private_follow_ups(client, application_id, token, _private_pages(text), session)
    except DELIVERY_ERRORS as exc:
        _log.warning("could not answer a refused interaction: %s", exc)


def retry_after(exc: BaseException) -> float | None:
    """Seconds Discord asked us to wait before retrying, or None when retrying is pointless.

    A 429 without `Via` comes from Cloudflare (a ban, not a bucket): never retried. Server errors and dropped
    connections are retried after a second."""
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429:
            headers = exc.response.headers if exc.response is not None else {}
            if not headers.get("Via"):
                return None
            try:
                return max(0.0, float(headers.get("Retry-After", "1")))
            except ValueError:
                return 1.0
        return 1.0 if exc.status >= 500 else None
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):
        return 1.0
    return None


async def with_retries(attempt: Callable[[], Awaitable[_T]], deadline_s: float, what: str) -> _T:
    """Run `attempt` until it succeeds, waiting out Retry-After between tries, for at most `deadline_s`; then the
    last error is raised so the caller can deliver another way."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await attempt()
        except DELIVERY_ERRORS as exc:
            wait = retry_after(exc)
            if wait is None or time.monotonic() + wait > deadline:
                raise
            _log.info("%s failed (%s); retrying in %.2f s", what, exc, wait)
            await asyncio.sleep(wait)


def _files(reply: Reply) -> list[discord.File]:
    return [discord.File(a.path, filename=a.filename, description=a.description or None) for a in reply.attachments]


def _settle(page: Page) -> Page:
    """Stop a page's view before sending: custom_ids route clicks (DynamicItem), so discord.py need not keep it."""
    view = page.get("view")
    if view is not None:
        view.stop()
    return page


def _edit_kwargs(page: Page) -> dict[str, Any]:
    return {
        "content": page.get("content"),
        "embeds": page.get("embeds") or [],
        "view": page.get("view"),
        "allowed_mentions": page["allowed_mentions"],
    }


def _send_kwargs(page: Page) -> dict[str, Any]:
    kwargs = {key: value for key, value in page.items() if value is not None}
    if not kwargs.get("embeds"):
        kwargs.pop("embeds", None)
    return kwargs


PRIVATE_NOTE = "Chorus answered you privately."
NO_THREADS = (
    "Chorus can't open a thread in this channel. Ask a moderator to give Chorus the Create Public Threads and "
    "Send Messages in Threads permissions here."
)
HANDED_OVER = "⏳ This is taking a while: Chorus will post the result in this channel."
CANNOT_POST = "⏳ This is taking a while, and Chorus may not post in this channel: see the result with /history soon."
CANNOT_REPLY = (
    "Chorus couldn't answer you in <#{channel}>: it may not send messages there. Ask a moderator to give Chorus the "
    "Send Messages permission in that channel (Send Messages in Threads for a thread)."
)
_THREAD_TYPES = (discord.ChannelType.public_thread, discord.ChannelType.private_thread, discord.ChannelType.news_thread)


class ChannelResponder:
    """Posts into a channel or thread with the bot token: replies to messages, thread replies, late deliveries."""

    def __init__(
        self,
        host: Host,
        channel_id: int,
        *,
        reply_to: int | None = None,
        guild_id: int | None = None,
        asker: int | None = None,
    ) -> None:
        """`asker`: who wrote the message being answered; told by DM if Chorus may not post here."""
        self.host = host
        self.channel = host.client.get_partial_messageable(channel_id, guild_id=guild_id)
        self.reply_to = reply_to
        self.asker = asker
        self.refused: discord.Forbidden | None = None  # Discord refused a post here: later ones are not sent

    async def defer(self) -> None:
        """Show "Chorus is typing…"; a message has no deadline to meet."""
        with contextlib.suppress(*DELIVERY_ERRORS):
            await self.channel.typing()

    async def post(self, page: Page, *, files: Sequence[discord.File] = (), first: bool = True) -> discord.Message:
        kwargs = _send_kwargs(_settle(page))
        if files:
            kwargs["files"] = list(files)
        if first and self.reply_to is not None:
            kwargs["reference"] = discord.MessageReference(
                message_id=self.reply_to, channel_id=self.channel.id, fail_if_not_exists=False
            )
            kwargs["mention_author"] = False
        if self.refused is not None:
            raise self.refused  # each 403 counts towards Discord's ban on invalid requests: one is enough
        try:
            return await self.channel.send(**kwargs)
        except discord.Forbidden as exc:  # Missing Access / Missing Permissions
            self.refused = exc
            await self._tell_asker()
            raise

    async def _tell_asker(self) -> None:
        """Chorus may not post in this channel: tell the person who asked, by DM, what a moderator can change."""
        if self.asker is None:
            return
        asker, self.asker = self.asker, None  # once
        try:
            dm = await self.host.client.create_dm(discord.Object(asker))
            await dm.send(CANNOT_REPLY.format(channel=self.channel.id), allowed_mentions=discord.AllowedMentions.none())
        except DELIVERY_ERRORS as exc:  # 50007: the user accepts no DMs from this bot; nobody else to tell
            _log.warning("Chorus may not post in channel %s and could not DM user %s: %s", self.channel.id, asker, exc)

    async def send(self, reply: Reply) -> str:
        pages = render_reply(reply, self.host.tones)
        first = await self.post(pages[0], files=_files(reply))
        for page in pages[1:]:
            await self.post(page, first=False)
        return str(first.id)

    async def edit_page(self, message_id: int, page: Page) -> None:
        await self.channel.get_partial_message(message_id).edit(**_edit_kwargs(_settle(page)))

    async def edit(self, message_ref: str, reply: Reply) -> None:
        await self.edit_page(int(message_ref), render_reply(reply, self.host.tones)[0])

    def stream(self, title: str) -> DiscordStream:
        return DiscordStream(self.host, title, _ChannelSurface(self))

    async def open_thread(self, message_ref: str, name: str) -> tuple[str, Responder]:
        return await open_thread(self.host, self.channel.id, self.channel.guild_id, message_ref, name)


async def open_thread(
    host: Host, channel_id: int, guild_id: int | None, message_ref: str, name: str
) -> tuple[str, Responder]:
    """Start a public thread on a message Chorus posted; messages in it then reach the core without a mention."""
    channel = host.client.get_partial_messageable(channel_id, guild_id=guild_id)
    try:
        thread = await channel.get_partial_message(int(message_ref)).create_thread(
            name=sanitize(name)[:100] or "Chorus", auto_archive_duration=1440
        )
    except discord.Forbidden as exc:  # Missing Access / Missing Permissions: a moderator can fix that
        _log.warning("could not open a thread in channel %s: %s", channel_id, exc)
        raise UserError(NO_THREADS) from exc
    host.remember_thread(str(thread.id), str(channel_id))
    return str(thread.id), ChannelResponder(host, thread.id, guild_id=guild_id)


class DiscordResponder:
    """Answers one interaction. The first answer is the interaction callback (a defer or a message); later ones
    edit the original response or follow up, until the token is too old and the channel takes over."""

    def __init__(
        self,
        host: Host,
        interaction: discord.Interaction,
        *,
        received_at: float | None = None,
        early_defer: asyncio.Task[str] | None = None,
    ) -> None:
        self.host = host
        self.interaction = interaction
        self._early_defer = early_defer
        self.received_at = time.monotonic() if received_at is None else received_at
        # What the original response is: none yet, a "thinking…" placeholder, a message, or deleted.
        self.original = "none"
        self.original_id: int | None = None
        self.progress_shown = False  # the original shows a stream's progress, not its result
        self.handed_over = False  # the token is (nearly) expired: the channel takes over
        self._lock = asyncio.Lock()
        self._watchdog: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.channel = ChannelResponder(host, interaction.channel_id or 0, guild_id=interaction.guild_id)

    # ---------------------------------------------------------------- acknowledgement
    def guard(self, deadline_s: float) -> None:
        """Defer automatically if nothing has answered within `deadline_s` (Discord expires the token at 3 s)."""
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(deadline_s, lambda: loop.create_task(self.defer()))
        left = self.host.token_ttl_s - (time.monotonic() - self.received_at)
        self._expiry = loop.call_later(max(0.0, left), lambda: loop.create_task(self.hand_over()))

    def _stop_guard(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def fresh(self) -> bool:
        return not self.handed_over and time.monotonic() - self.received_at < self.host.token_ttl_s

    async def hand_over(self) -> None:
        """The token is about to expire (Discord: 15 minutes) with the answer still to come: while the token still
        works, turn a "thinking…" or half-written original into a note saying where the result will appear, so it
        is never left loading or unfinished; from now on the channel gets everything."""
        async with self._lock:
            self.handed_over = True
            if self.host.client.is_closed():  # stopped (or restarted) meanwhile: its HTTP session is gone
                return
            await self._settle_early_defer()
            if not (self.original == "thinking" or (self.original == "message" and self.progress_shown)):
                return
            note = HANDED_OVER if self.can_post() else CANNOT_POST
            try:
                await self.interaction.edit_original_response(
                    content=note, embeds=[], view=None, allowed_mentions=discord.AllowedMentions.none()
                )
            except DELIVERY_ERRORS as exc:
                _log.warning("could not mark interaction %s as continued in the channel: %s", self.interaction.id, exc)
                return
            self.original, self.progress_shown = "message", False

    def can_post(self) -> bool:
        """May the bot token post where this interaction came from? Interaction responses need no channel
        permission; the bot's own messages need View Channel and Send Messages (in a thread: in Threads)."""
        permissions = self.interaction.app_permissions
        in_thread = getattr(self.interaction.channel, "type", None) in _THREAD_TYPES
        allowed = permissions.send_messages_in_threads if in_thread else permissions.send_messages
        return permissions.view_channel and allowed

    @property
    def token(self) -> str:
        return self.interaction.token

    async def _settle_early_defer(self) -> None:
        """Adopt the defer the adapter sent on receipt, if any (discord.py did not see it go out)."""
        task, self._early_defer = self._early_defer, None
        if task is not None and await task == DEFERRED:
            self.interaction.response._response_type = InteractionResponseType.deferred_channel_message
            self.original = "thinking"

    async def defer(self) -> None:
        async with self._lock:
            self._stop_guard()
            await self._settle_early_defer()
            if self.interaction.response.is_done():
                return
            try:
                callback = await self.interaction.response.defer(thinking=True)
            except DELIVERY_ERRORS as exc:
                _log.warning("could not defer interaction %s: %s", self.interaction.id, exc)
                return
            self.original = "thinking"
            if callback is not None and callback.message_id is not None and self.original_id is None:
                self.original_id = callback.message_id

    async def open_modal(self, modal: discord.ui.Modal) -> None:
        async with self._lock:
            self._stop_guard()
            await self._settle_early_defer()
            await self.interaction.response.send_modal(modal)
            self.original = "modal"

    # ---------------------------------------------------------------- replies
    async def send(self, reply: Reply) -> str:
        async with self._lock:
            self._stop_guard()
            await self._settle_early_defer()
            if not self.fresh():
                return await self._to_channel(reply)
            pages = render_reply(reply, self.host.tones)
            files = _files(reply)
            try:
                return await self._send_pages(reply, pages, files)
            except DELIVERY_ERRORS as exc:
                if reply.ephemeral:  # never made public: a private answer that cannot be sent is dropped
                    _log.warning("a private reply to interaction %s failed: %s", self.interaction.id, exc)
                    message_id = await self._without_files(reply, exc) if reply.attachments else ""
                else:
                    _log.warning("interaction reply failed (%s); posting to the channel instead", exc)
                    message_id = await self.channel.send(reply)
                if self.original == "thinking":
                    await self.drop_placeholder()  # no stale "thinking…" above the answer
                return message_id

    async def _without_files(self, reply: Reply, exc: BaseException) -> str:
        """A private reply whose file Discord refused (over the server's upload limit, say): its text and why the
        file is missing, still privately, instead of no answer at all."""
        too_large = isinstance(exc, discord.HTTPException) and exc.status == 413
        why = "it is too large for this server's upload limit" if too_large else "Discord refused the upload"
        note = f"⚠ The file could not be attached: {why}."
        text_only = replace(reply, attachments=(), footer=f"{reply.footer}\n{note}" if reply.footer else note)
        try:
            return await self._send_pages(text_only, render_reply(text_only, self.host.tones), [])
        except DELIVERY_ERRORS as again:
            _log.warning("the private note for interaction %s failed too: %s", self.interaction.id, again)
            return ""

    async def _to_channel(self, reply: Reply) -> str:
        """The channel fallback, except for a private file (/mydata), which must never be posted for all to see."""
        if reply.ephemeral and reply.attachments:
            _log.warning("a private reply with files could not be delivered privately; it was not posted publicly")
            return ""
        if not self.can_post():
            _log.warning(
                "interaction %s: too late to answer, and Chorus may not post in its channel", self.interaction.id
            )
            return ""
        return await self.channel.send(reply)

    async def _send_pages(self, reply: Reply, pages: list[Page], files: list[discord.File]) -> str:
        response = self.interaction.response
        rest = pages[1:]
        if not response.is_done():
            kwargs = _send_kwargs(_settle(pages[0]))
            if files:
                kwargs["files"] = files
            callback = await response.send_message(**kwargs, ephemeral=reply.ephemeral)
            self.original = "message"
            self.original_id = callback.message_id
            first_id = str(callback.message_id or "")
        elif self.original == "thinking" and not reply.ephemeral:
            message = await self.interaction.edit_original_response(
                **_edit_kwargs(_settle(pages[0])), attachments=files
            )
            self.original, self.original_id = "message", message.id
            self.progress_shown = False
            first_id = str(message.id)
        else:
            if self.original == "thinking" and not await self.drop_placeholder() and reply.ephemeral:
                # The public "thinking…" could not be removed, and the next follow-up would become it (publicly):
                # fill it with a neutral line, so the private answer stays private.
                await self.follow_up({"content": PRIVATE_NOTE, "allowed_mentions": discord.AllowedMentions.none()})
                self.original = "message"
            first_id = await self.follow_up(pages[0], ephemeral=reply.ephemeral, files=files)
        for page in rest:
            await self.follow_up(page, ephemeral=reply.ephemeral)
        return first_id

    async def settle(self) -> None:
        """After the handler: a "thinking…" nothing answered (the result went elsewhere, e.g. into a brainstorm
        thread) is deleted, and the watchdog stops, so no stale placeholder is left behind."""
        async with self._lock:
            self._stop_guard()
            if self._expiry is not None:
                self._expiry.cancel()
            await self._settle_early_defer()
            if self.original == "thinking" and self.fresh():
                await self.drop_placeholder()

    async def drop_placeholder(self) -> bool:
        """Delete the original response (a stale "thinking…" or superseded progress); False if Discord refused."""
        try:
            await self.interaction.delete_original_response()
        except DELIVERY_ERRORS as exc:
            _log.warning("could not delete the original response of interaction %s: %s", self.interaction.id, exc)
            return False
        self.original = "deleted"
        return True

    async def follow_up(self, page: Page, *, ephemeral: bool = False, files: Sequence[discord.File] = ()) -> str:
        kwargs = _send_kwargs(_settle(page))
        if files:
            kwargs["files"] = list(files)
        message = await self.interaction.followup.send(**kwargs, ephemeral=ephemeral, wait=True)
        return str(message.id)

    async def edit(self, message_ref: str, reply: Reply) -> None:
        page = render_reply(reply, self.host.tones)[0]
        if self.fresh():
            try:
                if self.original_id is not None and message_ref == str(self.original_id):
                    await self.interaction.edit_original_response(**_edit_kwargs(_settle(page)))
                else:
                    await self.interaction.followup.edit_message(int(message_ref), **_edit_kwargs(_settle(page)))
                return
            except DELIVERY_ERRORS as exc:
                _log.warning("editing via the interaction failed (%s); using the bot token", exc)
        await self.channel.edit_page(int(message_ref), page)

    def stream(self, title: str) -> DiscordStream:
        return DiscordStream(self.host, title, _InteractionSurface(self))

    async def open_thread(self, message_ref: str, name: str) -> tuple[str, Responder]:
        return await open_thread(
            self.host, self.interaction.channel_id or 0, self.interaction.guild_id, message_ref, name
        )


class _Surface(Protocol):
    """Where a stream shows progress and lands: an interaction's original response, or a channel message."""

    def interval(self, base: float) -> float: ...

    async def progress(self, page: Page) -> None: ...

    async def deliver(self, reply: Reply, *, partial: bool = False) -> str:
        """Land the final reply; `partial`: text cut short (on shutdown), shown publicly though it has no result."""
        ...

    def posted_ref(self) -> str | None:
        """The id of the public message showing the stream now (None: none yet, or one the bot token cannot edit)."""
        ...


class _InteractionSurface:
    def __init__(self, responder: DiscordResponder) -> None:
        self.responder = responder
        self.late = _ChannelSurface(responder.channel)

    def interval(self, base: float) -> float:
        return self.responder.host.rate_hints.interval(self.responder.token, base)

    def posted_ref(self) -> str | None:
        responder = self.responder
        if not responder.fresh():
            return self.late.posted_ref()  # None keeps the original (its hand-over note) as the message to finish
        if responder.original in ("thinking", "message") and responder.original_id is not None:
            return str(responder.original_id)
        return None

    async def learn_original(self) -> None:
        """A "thinking…" acknowledged before discord.py saw it has no id yet: ask Discord for it (one request), so a
        restart after a kill can still find the message. An ephemeral one is left out: only its token could edit it."""
        responder = self.responder
        if responder.original != "thinking" or responder.original_id is not None or not responder.fresh():
            return
        try:
            message = await responder.interaction.original_response()
        except DELIVERY_ERRORS as exc:
            _log.info("could not look up the original response of interaction %s: %s", responder.interaction.id, exc)
            return
        if not message.flags.ephemeral and responder.original_id is None:
            responder.original_id = message.id

    async def progress(self, page: Page) -> None:
        responder = self.responder
        if not responder.fresh():
            if responder.can_post():  # else every edit would be a 403, and those count towards Discord's IP ban
                await self.late.progress(page)
            return
        if responder.original == "none":
            await responder.defer()
        if responder.original in ("thinking", "message"):
            message = await responder.interaction.edit_original_response(**_edit_kwargs(page))
            # The loading message is now a message: a follow-up would no longer replace it.
            responder.original, responder.original_id = "message", message.id
            responder.progress_shown = True

    async def deliver(self, reply: Reply, *, partial: bool = False) -> str:
        responder = self.responder
        if reply.generation_id is None and not reply.actions and not partial:
            # The stream ended without a result (queue full, model failure): say so to the asker only.
            return await responder.send(Reply(parts=reply.parts, title="", footer=reply.footer, ephemeral=True))
        if not responder.fresh():
            if responder.original == "thinking":
                await responder.drop_placeholder()
            if not responder.can_post():  # stored all the same: /history shows it, as the hand-over note says
                _log.warning(
                    "a late result for interaction %s cannot be posted in its channel", responder.interaction.id
                )
                return ""
            return await self.late.deliver(reply)
        pages = render_reply(reply, responder.host.tones)
        files = _files(reply)
        page = _settle(pages[0])

        async def final_edit() -> discord.InteractionMessage:
            for file in files:
                file.reset(seek=True)
            return await responder.interaction.edit_original_response(**_edit_kwargs(page), attachments=files)

        try:
            message = await with_retries(final_edit, responder.host.final_retry_s, "the final edit")
            first_id = str(message.id)
            responder.original, responder.original_id = "message", message.id
            responder.progress_shown = False
        except DELIVERY_ERRORS as exc:
            _log.warning("final edit failed (%s); delivering as a follow-up", exc)
            first_id = await self._fallback(page, files)
        for page in pages[1:]:
            try:
                await responder.follow_up(page)
            except DELIVERY_ERRORS:
                await responder.channel.post(page, first=False)
        return first_id

    async def _fallback(self, page: Page, files: list[discord.File]) -> str:
        """Deliver the final page another way. While the original still shows "thinking…", Discord turns the
        follow-up into an edit of it, so that message is the result and is kept; a superseded progress message is
        removed instead, so the user sees one result, and the returned id is always the one on screen."""
        responder = self.responder
        loading = responder.original == "thinking"
        for file in files:
            file.reset(seek=True)
        try:
            message_id = await responder.follow_up(page, files=files)
        except DELIVERY_ERRORS as exc:
            _log.warning("follow-up failed too (%s); posting to the channel", exc)
            for file in files:
                file.reset(seek=True)
            message_id = str((await responder.channel.post(page, files=files)).id)
        else:
            if loading or (responder.original_id is not None and message_id == str(responder.original_id)):
                responder.original, responder.original_id = "message", int(message_id)
                responder.progress_shown = False
                return message_id
        if responder.original in ("thinking", "message"):
            await responder.drop_placeholder()  # a stale "thinking…" or half-written text above the result
        return message_id


class _ChannelSurface:
    def __init__(self, channel: ChannelResponder) -> None:
        self.channel = channel
        self.message_id: int | None = None

    def interval(self, base: float) -> float:
        return base

    def posted_ref(self) -> str | None:
        return str(self.message_id) if self.message_id is not None else None

    async def progress(self, page: Page) -> None:
        if self.message_id is None:
            self.message_id = (await self.channel.post(page)).id
        else:
            await self.channel.edit_page(self.message_id, page)

    async def deliver(self, reply: Reply, *, partial: bool = False) -> str:
        if self.message_id is None or reply.attachments:
            first_id = await self.channel.send(reply)
            await self._drop_progress()
            return first_id
        progress_id = self.message_id
        pages = render_reply(reply, self.channel.host.tones)
        page = _settle(pages[0])
        try:
            await with_retries(
                lambda: self.channel.edit_page(progress_id, page), self.channel.host.final_retry_s, "the final edit"
            )
            first_id = str(progress_id)
        except DELIVERY_ERRORS as exc:
            # Past every retry the result is posted anew, and the progress message removed, so it never stays at
            # "writing…" and the stored ref is the message with the result.
            _log.warning("final edit failed (%s); posting the result as a new message", exc)
            first_id = str((await self.channel.post(page)).id)
            await self._drop_progress()
        for page in pages[1:]:
            await self.channel.post(page, first=False)
        return first_id

    async def _drop_progress(self) -> None:
        """Delete the progress message (a result went out as a new message instead); best effort."""
        message_id, self.message_id = self.message_id, None
        if message_id is None:
            return
        try:
            await self.channel.channel.get_partial_message(message_id).delete()
        except DELIVERY_ERRORS as exc:
            _log.warning("could not delete progress message %s: %s", message_id, exc)


class DiscordStream:
    """Streams text into one message, edited at most every `limits.stream_edit_interval_s` (slower when the
    rate-limit headers say so). Edits run in a background task, so a slow or rate-limited edit never holds up
    generation; the final reply replaces whatever progress edit is pending."""

    def __init__(self, host: Host, title: str, surface: _Surface) -> None:
        self.host = host
        self.title = title
        self.surface = surface
        self.parts: list[str] = []
        self.note = ""
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_posted: PostedHook | None = None
        self._announced: str | None = None
        self._learning: asyncio.Task[None] | None = None
        # Someone (a moderator) deleted the message this stream writes into: it is neither edited nor posted again.
        self.removed = False
        host.streams.add(self)

    def message_deleted(self, message_id: str) -> bool:
        """MESSAGE_DELETE for the message this stream is writing: stop writing it, and do not post the result again
        (the version is still stored, so /history has it). True when it was this stream's message."""
        if self.removed or message_id != self.surface.posted_ref():
            return False
        self._removed()
        return True

    def _removed(self) -> None:
        _log.info("the message of a result being written (%s) was deleted; it will not be posted again", self.title)
        self.removed = True
        if self._learning is not None:
            self._learning.cancel()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def on_posted(self, hook: PostedHook) -> None:
        self._on_posted = hook
        self._announce()
        if self._announced is None and isinstance(self.surface, _InteractionSurface):
            self._learning = asyncio.create_task(self._learn())

    async def _learn(self) -> None:
        """The first progress edit usually tells the message id within an edit interval; ask only if it did not."""
        assert isinstance(self.surface, _InteractionSurface)
        await asyncio.sleep(self.host.edit_interval_s)
        if self._announced is None:
            await self.surface.learn_original()
            self._announce()

    def _announce(self) -> None:
        ref = self.surface.posted_ref()
        if ref is not None and ref != self._announced and self._on_posted is not None:
            self._announced = ref
            self._on_posted(ref)

    def _kick(self) -> None:
        self._dirty.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            shown = self.surface.posted_ref()
            try:
                await self.surface.progress(render_progress(self.title, self.parts, self.note))
            except discord.NotFound as exc:
                if shown is not None and exc.code == UNKNOWN_MESSAGE:  # deleted before its gateway event came
                    self._removed()
                    return
                _log.warning("a streaming edit failed: %s", exc)
            except DELIVERY_ERRORS as exc:
                _log.warning("a streaming edit failed: %s", exc)
            self._announce()
            await asyncio.sleep(self.surface.interval(self.host.edit_interval_s))

    async def begin_part(self, index: int, total: int) -> None:
        self.parts.append("")

    async def write(self, delta: str) -> None:
        if not self.parts:
            self.parts.append("")
        self.parts[-1] += delta
        self.note = ""
        self._kick()

    async def status(self, text: str) -> None:
        self.note = text
        self._kick()

    async def _stop_progress(self) -> None:
        if self._learning is not None:
            self._learning.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def abandon(self) -> None:
        """The adapter is closing: stop showing progress (its HTTP session is about to close)."""
        if self._learning is not None:
            self._learning.cancel()
        if self._task is not None:
            self._task.cancel()
        self.host.streams.discard(self)

    async def finish(self, reply: Reply) -> str:
        await self._stop_progress()
        self.host.streams.discard(self)
        if self.removed:
            return ""
        try:
            return await self.surface.deliver(reply)
        except DELIVERY_ERRORS:
            _log.exception("could not deliver a finished result (%s)", self.title)
            return ""

    async def interrupt(self, note: str) -> None:
        """Shutdown, and the result will not come: make the text so far, with `note`, this message's final state
        instead of a "writing…" that never ends."""
        await self._stop_progress()
        self.host.streams.discard(self)
        if self.removed:
            return
        parts = tuple(part for part in self.parts if part) or ("…",)
        try:
            await self.surface.deliver(Reply(parts=parts, title=self.title, footer=f"⚠ {note}"), partial=True)
        except DELIVERY_ERRORS:
            _log.exception("could not finish an interrupted message (%s)", self.title)


# 400s for a thread closed to the bot: archived where posting cannot reopen it, or locked by a moderator.
_THREAD_CLOSED = frozenset({50083, 160005})


class DiscordPublisher:
    """Posts unprompted content (drops, brainstorm timers) with the bot token; returns the first message's id."""

    def __init__(self, host: Host) -> None:
        self.host = host

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        channel_id = int(conversation.thread or conversation.channel)
        guild_id = int(conversation.workspace) if conversation.workspace.isdigit() else None
        try:
            return await ChannelResponder(self.host, channel_id, guild_id=guild_id).send(reply)
        except (discord.Forbidden, discord.NotFound) as exc:  # Missing Access / Unknown Channel: not a passing fault
            raise PublishForbidden(f"Discord refused channel {channel_id}: {exc}") from exc
        except discord.HTTPException as exc:
            if exc.code in _THREAD_CLOSED:
                raise PublishForbidden(f"Discord refused channel {channel_id}: {exc}") from exc
            raise

    async def edit(self, conversation: Conversation, message_ref: str, reply: Reply) -> bool:
        """Edit a message Chorus posted, through the channel endpoint with the bot token: that works for interaction
        responses too (the application is their author) once their token has expired, except ephemeral ones, which
        only their token could reach. Pages past the first follow as new messages."""
        channel_id = int(conversation.thread or conversation.channel)
        guild_id = int(conversation.workspace) if conversation.workspace.isdigit() else None
        channel = ChannelResponder(self.host, channel_id, guild_id=guild_id)
        first, *rest = render_reply(reply, self.host.tones)
        try:
            await channel.edit_page(int(message_ref), first)
        except discord.NotFound:  # Unknown Message (deleted, or ephemeral) or Unknown Channel
            return False
        except discord.Forbidden as exc:
            if exc.code == 50005:  # Cannot edit a message authored by another user
                return False
            raise PublishForbidden(f"Discord refused channel {channel_id}: {exc}") from exc
        for page in rest:
            await channel.post(page, first=False)
        return True

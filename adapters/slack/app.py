"""Chorus on Slack: a slack-bolt AsyncApp in Socket Mode or HTTP mode, one bot token or OAuth installs.

Every listener acknowledges first and hands the work to an asyncio task, so the 3-second ack window never waits
for the model. Slack retries an event it thinks went unanswered; the event id is remembered so a retry never
starts a second generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import re
import signal
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.app.async_server import AsyncSlackAppServer
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.middleware.authorization.async_single_team_authorization import AsyncSingleTeamAuthorization
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.ledger import EventLedger
from adapters.slack.outbound import Outbound, SlackLimits
from adapters.slack.render import ask_modal, home_view, prefixed_commands, remix_modal
from adapters.slack.responder import NotInstalled, SlackOptions, SlackPublisher, SlackResponder
from adapters.slack.translate import (
    ACTION_PREFIX,
    ASK_CALLBACK,
    CHANGE_SUBTYPES,
    PLATFORM,
    REMIX_CALLBACK,
    REMIX_SHORTCUT,
    ask_metadata,
    asked_question,
    mentioned_users,
    remix_metadata,
    to_action,
    to_command,
    to_message,
    to_message_change,
    to_reaction,
    to_submission,
    unescape,
)
from bots.app import Chorus
from bots.commands import COMMANDS
from bots.events import Conversation, Event, Message, MessageEdited
from bots.redelivery import deliver_undelivered
from bots.reply import Reply
from bots.shutdown import Draining

_log = logging.getLogger(__name__)
Named = TypeVar("Named", Message, MessageEdited)

# What the bot token may do; the same list is in manifest.yaml and is asked for by the OAuth install.
BOT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "chat:write",
    "commands",
    "files:write",
    "groups:history",
    "im:history",
    "im:write",  # private files (/mydata) go to the user's direct messages
    "mpim:history",
    "reactions:read",
    "users:read",
)
NAMES_CACHED = 4096  # user id -> display name, so ideas posted as messages are credited by name, not by id
MENTIONS_LOOKED_UP = 10  # users.info calls one message may cost for mentions without a name
SEEN_EVENTS = 10_000  # event ids remembered for retry de-duplication (Slack retries within minutes)
LISTEN_BACKLOG = 1024  # pending connections the HTTP-mode listener queues (the kernel caps it at somaxconn)
CLIENTS_CACHED = 256  # per-workspace Web API clients kept for the Publisher in OAuth mode
WEB_API_TIMEOUT_S = 30  # seconds one Web API call may take, on the shared HTTP session
# Acks first: the work behind commands and clicks starts once no other has arrived for BURST_QUIET_S (a burst is
# over), so a burst's acks are not answered behind its own processing; none waits longer than BURST_MAX_HOLD_S.
BURST_QUIET_S = 0.005
BURST_MAX_HOLD_S = 0.25
STOP_DELIVERY_S = 20.0  # how long a stop waits to finish the messages it cut short
STOP_GRACE_S = 8.0  # how long a stop lets handlers finish (generations end at once; their replies still post)


def _slack_site(api_base_url: str) -> str:
    """`https://slack-gov.com/api/` -> `https://slack-gov.com`."""
    return api_base_url.rstrip("/").removesuffix("/api")


class SlackConfigError(Exception):
    """A missing token or secret, phrased for the person running Chorus."""


def retry_handlers() -> list[AsyncRetryHandler]:
    """429s wait out Retry-After and try again; dropped connections are retried once more."""
    return [AsyncRateLimitErrorRetryHandler(max_retry_count=5), AsyncConnectionErrorRetryHandler(max_retry_count=2)]


class SeenEvents:
    """A bounded memory of event ids: `first(id)` is True only the first time an id is offered."""

    def __init__(self, limit: int = SEEN_EVENTS) -> None:
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first(self, event_id: str) -> bool:
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return True


class SlackAdapter:
    """Owns the Bolt app, its Socket Mode connection or HTTP server, and the tasks that handle events."""

    def __init__(
        self, chorus: Chorus, *, env: Mapping[str, str] | None = None, limits: SlackLimits | None = None
    ) -> None:
        env = os.environ if env is None else env
        settings = chorus.settings.slack
        self.chorus = chorus
        self.settings = settings
        self.options = SlackOptions(
            edit_interval_s=chorus.settings.limits.stream_edit_interval_s,
            native_streaming=settings.native_streaming,
            tones=tuple(chorus.settings.tones),
            command_prefix=settings.command_prefix,
            commands=tuple(spec.name for spec in COMMANDS),
        )
        self.admins = frozenset(settings.admins)

        def secret(name: str) -> str:
            return env.get(name, "").strip() if name else ""

        bot_token = secret(settings.bot_token_env)
        self.app_token = secret(settings.app_token_env)
        signing_secret = secret(settings.signing_secret_env)
        if settings.mode == "socket" and not self.app_token:
            raise SlackConfigError(
                f"Socket Mode needs an app-level token (xapp-…, scope connections:write) in ${settings.app_token_env}."
            )
        if settings.mode == "http" and not signing_secret:
            raise SlackConfigError(
                f"HTTP mode needs the app's signing secret in ${settings.signing_secret_env} to verify requests."
            )
        oauth_settings = None
        self.installations: AsyncSQLAlchemyInstallationStore | None = None
        self._state_store: AsyncSQLAlchemyOAuthStateStore | None = None
        if settings.oauth:
            client_id, client_secret = secret(settings.client_id_env), secret(settings.client_secret_env)
            if not client_id or not client_secret:
                raise SlackConfigError(
                    f"OAuth installs need the app's client id and secret in ${settings.client_id_env} "
                    f"and ${settings.client_secret_env}."
                )
            engine = chorus.store.engine  # installations live in the Chorus database
            self.installations = AsyncSQLAlchemyInstallationStore(client_id=client_id, engine=engine)
            self._state_store = AsyncSQLAlchemyOAuthStateStore(expiration_seconds=600, engine=engine)
            oauth_settings = AsyncOAuthSettings(
                client_id=client_id,
                client_secret=client_secret,
                scopes=list(BOT_SCOPES),
                installation_store=self.installations,
                state_store=self._state_store,
                # The install link goes to the same Slack as the API (GovSlack: slack-gov.com).
                authorization_url=_slack_site(settings.api_base_url) + "/oauth/v2/authorize",
            )
            # Bolt checks every request's token with auth.test unless told to remember the answer; that call would
            # sit inside the 3-second ack window.
            oauth_settings.authorize = AsyncInstallationStoreAuthorize(
                logger=_log,
                installation_store=self.installations,
                client_id=client_id,
                client_secret=client_secret,
                cache_enabled=True,
            )
        elif not bot_token:
            raise SlackConfigError(f"Set the bot token (xoxb-…) in ${settings.bot_token_env}, or turn on slack.oauth.")
        self.client = AsyncWebClient(
            token=bot_token or None, base_url=settings.api_base_url, retry_handlers=retry_handlers()
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret,
            oauth_settings=oauth_settings,
            # Listeners only ack and start a task, so running them before answering costs nothing and saves
            # Bolt's 10 ms ack polling.
            process_before_response=True,
            request_verification_enabled=settings.mode == "http",
        )
        # Every chat.* call Chorus makes is paced to Slack's limits here, shared by responders and the Publisher.
        self.outbound = Outbound(limits)
        # On stop, generations in flight end at once with their text, stored as partial versions (bots/shutdown).
        self.draining = Draining.install(chorus)
        self.stopping = False
        self.seen = SeenEvents()
        self.ledger = EventLedger(chorus.store.engine)
        self.tasks: set[asyncio.Task[Any]] = set()
        self._held: list[Coroutine[Any, Any, Any]] = []
        self._held_since = 0.0
        self._last_arrival = 0.0
        self._release: asyncio.TimerHandle | None = None
        self._clients: OrderedDict[str, AsyncWebClient] = OrderedDict()
        self.names: OrderedDict[str, str] = OrderedDict()
        self._socket: Any = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.bot_user_id = ""
        self.started = datetime.now(UTC)
        self._register()

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the token, then listen (HTTP) or connect (Socket Mode); returns once Slack can reach Chorus."""
        # One HTTP session for every Web API call: kept-alive connections instead of a TCP (and TLS) handshake
        # per chat.update. slack_sdk opens a session per call when it has none.
        self.client.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEB_API_TIMEOUT_S))
        await self.ledger.create()
        if self.installations is not None and self._state_store is not None:
            await self.installations.create_tables()
            await self._state_store.create_tables()
        if self.client.token:
            try:
                identity = await self.client.auth_test()
            except SlackApiError as exc:
                raise SlackConfigError(
                    f"Slack refused the bot token in ${self.settings.bot_token_env}: {exc.response.get('error')}"
                ) from None
            self.bot_user_id = identity.get("user_id", "")
            self._trust_checked_token(identity)
        # Background services (drops, brainstorm timers) start before any event can arrive, so their start-up never
        # races a command's handling for the database.
        publisher = SlackPublisher(self.client_for, self.options, self.outbound)
        await self.chorus.attach_publisher(publisher)
        self.started = datetime.now(UTC)  # results stored from here on are this process' own to deliver
        if self.settings.mode == "http":
            server = AsyncSlackAppServer(port=self.settings.port, path=self.settings.path, app=self.app)
            self._runner = web.AppRunner(server.web_app, access_log=None)
            await self._runner.setup()
            # A burst of commands (a busy workspace, a retry storm) must not overflow the default 128-connection
            # accept queue: a dropped SYN is retried after a whole second, a third of Slack's deadline.
            site = web.TCPSite(self._runner, self.settings.host, self.settings.port, backlog=LISTEN_BACKLOG)
            await site.start()
            self.port = self._runner.addresses[0][1]
        else:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self._socket = AsyncSocketModeHandler(self.app, self.app_token, web_client=self.client)
            await self._socket.connect_async()
        # Results stored but not delivered when Chorus last stopped (killed mid-delivery) go out now, paced like any
        # other post.
        self.spawn(deliver_undelivered(self.chorus.store, publisher, PLATFORM, started=self.started))
        # Messages a killed Chorus left half-written are finished: into their result if it was stored, else a note.
        self.chorus.in_flight.start(publisher, PLATFORM)

    def _trust_checked_token(self, identity: Any) -> None:
        """Hand Bolt the auth.test answer Chorus got at start-up. Left alone, Bolt's single-workspace authorization
        calls auth.test again for every request that arrives before its first answer, inside the 3-second window."""
        for middleware in getattr(self.app, "_async_middleware_list", []):
            if isinstance(middleware, AsyncSingleTeamAuthorization) and middleware.auth_test_result is None:
                middleware.auth_test_result = identity

    async def stop(self) -> None:
        """SIGTERM/SIGINT: take no new work; every generation in flight ends at once with its text so far, stored as
        a partial version and shown with the restart note (its Regenerate works after the restart); a message still
        being written after the grace is finished with its text so far and a note; then the connections close."""
        self.stopping = self.outbound.stopping = True
        if self._socket is not None:
            await self._socket.close_async()  # a normal close (1000): Slack sends new events to other connections
        if self._runner is not None:
            await self._runner.cleanup()
        self._release_held(force=True)  # acknowledged already: their generations are refused with the restart note
        await self.draining.drain()
        pending = set(self.tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_S)
        for task in pending:
            task.cancel()
        if pending:
            _log.warning("stopping: %d handler(s) did not finish in %.0f s", len(pending), STOP_GRACE_S)
            await asyncio.gather(*pending, return_exceptions=True)
        await self._interrupt_streams()
        self._clients.clear()
        if self.client.session is not None:
            await self.client.session.close()

    async def _interrupt_streams(self) -> None:
        streams = list(self.outbound.streams)
        if not streams:
            return
        _log.info("finishing %d message(s) cut short by the stop", len(streams))
        try:
            await asyncio.wait_for(
                asyncio.gather(*(stream.interrupt() for stream in streams), return_exceptions=True), STOP_DELIVERY_S
            )
        except TimeoutError:
            _log.warning("some messages cut short by the stop could not be finished in %s s", STOP_DELIVERY_S)
            for stream in streams:
                stream.abandon()

    async def client_for(self, team_id: str) -> AsyncWebClient:
        """The Web API client holding that workspace's bot token."""
        if self.installations is None:
            return self.client
        client = self._clients.get(team_id)
        if client is None:
            bot = await self.installations.async_find_bot(enterprise_id=None, team_id=team_id)
            if bot is None:
                raise NotInstalled(f"Chorus is not installed in Slack workspace {team_id}.")
            client = AsyncWebClient(
                token=bot.bot_token,
                base_url=self.settings.api_base_url,
                retry_handlers=retry_handlers(),
                session=self.client.session,
            )
            self._clients[team_id] = client
            if len(self._clients) > CLIENTS_CACHED:
                self._clients.popitem(last=False)
        self._clients.move_to_end(team_id)
        return client

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(self._guard(work))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _guard(self, work: Awaitable[Any]) -> None:
        try:
            await work
        except Exception:
            _log.exception("a Slack event handler failed")

    def _handle(self, event: Event, responder: SlackResponder) -> None:
        self._remember_name(event.user.id, event.user.name)
        self._after_burst(self.chorus.handle(event, responder))

    def _after_burst(self, work: Coroutine[Any, Any, Any]) -> None:
        """Start `work` once the burst it arrived in is over (see BURST_QUIET_S)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._held:
            self._held_since = now
        self._held.append(work)
        self._last_arrival = now
        if self._release is None:
            self._release = loop.call_later(BURST_QUIET_S, self._release_held)

    def _release_held(self, force: bool = False) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        quiet_at = self._last_arrival + BURST_QUIET_S
        deadline = self._held_since + BURST_MAX_HOLD_S
        if not force and now < quiet_at and now < deadline:
            self._release = loop.call_at(min(quiet_at, deadline), self._release_held)
            return
        if self._release is not None:
            self._release.cancel()
            self._release = None
        held, self._held = self._held, []
        for work in held:
            self.spawn(work)

    def _remember_name(self, user_id: str, name: str) -> None:
        if user_id and name and name != user_id:
            self.names[user_id] = name
            self.names.move_to_end(user_id)
            while len(self.names) > NAMES_CACHED:
                self.names.popitem(last=False)

    async def _display_name(self, user_id: str, client: AsyncWebClient) -> str:
        """A person's display name: the one seen in a command or click, else users.info (kept); "" if unknown. A
        failed look-up is remembered, so it is not repeated at every message."""
        name = self.names.get(user_id)
        if name is None:
            try:
                found = (await client.users_info(user=user_id)).get("user") or {}
            except (TimeoutError, SlackApiError, aiohttp.ClientError) as exc:
                _log.info("users.info for %s failed (%s); no name for them", user_id, exc)
                self.names[user_id] = user_id  # not asked again until a command or click brings the name
                return ""
            profile = found.get("profile") or {}
            name = profile.get("display_name") or profile.get("real_name") or found.get("name") or ""
            self._remember_name(user_id, name)
        return "" if name == user_id else name

    async def _named(self, message: Named, client: AsyncWebClient) -> Named:
        """Message events carry only the user id: use the person's display name, else keep the id. Names credit
        ideas; a `<@id>` would ping the person instead."""
        user = message.user
        if user.name != user.id:
            return message
        name = await self._display_name(user.id, client)
        return dataclasses.replace(message, user=dataclasses.replace(user, name=name or user.id))

    async def _mention_names(self, text: str, client: AsyncWebClient | None = None) -> dict[str, str]:
        """Display names of the people `text` mentions without a label, so the core reads `@bob`, not `@U0BOB`.
        Without a client only names already known are used (a modal's trigger expires in 3 s); at most
        MENTIONS_LOOKED_UP are asked for per text. Unknown ones are left out: they read `@someone`."""
        names: dict[str, str] = {}
        for index, user_id in enumerate(mentioned_users(text)):
            if client is None or index >= MENTIONS_LOOKED_UP:
                name = self.names.get(user_id, "")
                name = "" if name == user_id else name
            else:
                name = await self._display_name(user_id, client)
            if name:
                names[user_id] = name
        return names

    def _handle_once(self, body: Mapping[str, Any], work: Callable[[], Awaitable[Any]]) -> None:
        """Run an Events API event's work unless another worker already took this event id (checked after the
        ack, so the database never delays it)."""
        event_id = str(body.get("event_id") or "")

        async def once() -> None:
            if event_id and not await self.ledger.first(event_id):
                _log.info("Slack event %s was already handled by another worker", event_id)
                return
            await work()

        self.spawn(once())

    # -- listeners ---------------------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        app.middleware(self._dedupe)
        for spec in COMMANDS:
            app.command(f"/{self.settings.command_prefix}{spec.name}")(self._on_command)
        app.action(re.compile("^" + re.escape(ACTION_PREFIX)))(self._on_action)
        app.view(ASK_CALLBACK)(self._on_submission)
        app.view(REMIX_CALLBACK)(self._on_submission)
        app.shortcut(REMIX_SHORTCUT)(self._on_remix_shortcut)
        app.event("message")(self._on_message)
        app.event("reaction_added")(self._on_reaction)
        app.event("reaction_removed")(self._on_reaction)
        app.event("app_home_opened")(self._on_home_opened)
        app.event("app_mention")(self._on_app_mention)
        app.event("app_uninstalled")(self._on_uninstalled)
        app.event("tokens_revoked")(self._on_tokens_revoked)

    async def _on_uninstalled(self, body: dict[str, Any], context: Any) -> None:
        """A workspace removed Chorus: its tokens are dead. With OAuth its installation is deleted (as Slack asks of
        apps), so nothing keeps a revoked token and its drops pause at their next slot; a reinstall starts afresh.
        Its stored results, drops and sessions stay until their retention runs out (docs/data.md)."""
        await self._forget_workspace(body, context, "uninstalled Chorus", "Reinstall the app and set its new token.")

    async def _on_tokens_revoked(self, body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        """Tokens revoked in a workspace. Chorus asks for bot tokens only, and its installation rows hold that same
        token, so a revoked bot token deletes the workspace's installation like an uninstall."""
        if (event.get("tokens") or {}).get("bot"):
            await self._forget_workspace(body, context, "revoked Chorus' bot token", "Set a new one.")

    async def _forget_workspace(self, body: dict[str, Any], context: Any, what: str, todo: str) -> None:
        team = str(body.get("team_id") or context.team_id or "")
        if self.installations is not None:
            await self.installations.async_delete_all(enterprise_id=context.enterprise_id, team_id=context.team_id)
            self._clients.pop(team, None)
            _log.warning("Slack workspace %s %s; its installation is deleted", team, what)
        else:
            _log.error(
                "Slack workspace %s %s: the bot token in $%s no longer works. %s",
                team,
                what,
                self.settings.bot_token_env,
                todo,
            )

    async def _dedupe(self, body: dict[str, Any], next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        """Answer a retried event (same event_id; X-Slack-Retry-Num set) with a 200 and do nothing else."""
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if event_id and not self.seen.first(str(event_id)):
            _log.info("ignoring a retry of Slack event %s", event_id)
            return BoltResponse(status=200, body="")
        await next()
        return None

    def _responder(
        self, client: AsyncWebClient, event: Event, thread_ts: str | None = None, response_url: str | None = None
    ) -> SlackResponder:
        return SlackResponder(
            client,
            event.conversation,
            event.user.id,
            self.options,
            outbound=self.outbound,
            thread_ts=thread_ts,
            response_url=response_url,
        )

    async def _on_command(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        # Bolt answers Slack once this listener returns: the users.info calls for the people the text mentions
        # (slow, or waiting out a 429) come after that, never inside the 3-second window.
        self._after_burst(self._command(body, client))

    async def _command(self, body: dict[str, Any], client: AsyncWebClient) -> None:
        names = await self._mention_names(body.get("text", ""), client)
        command = to_command(body, self.admins, self.settings.command_prefix, names)
        self._remember_name(command.user.id, command.user.name)
        await self.chorus.handle(command, self._responder(client, command, response_url=body.get("response_url")))

    async def _on_action(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        action = to_action(body, self.admins)
        if action is None:
            return
        responder = self._responder(
            client, action, thread_ts=action.conversation.thread, response_url=body.get("response_url")
        )
        question = asked_question(body)
        if question:
            view = ask_modal(question, ask_metadata(action))
            self.spawn(self._open_view(client, body.get("trigger_id", ""), view, responder))
            return
        self._handle(action, responder)

    async def _on_submission(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        event = to_submission(body, self.admins)
        if event is not None:
            self._handle(event, self._responder(client, event, thread_ts=event.conversation.thread))

    async def _on_remix_shortcut(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        limits = self.chorus.settings.limits
        original = (body.get("message") or {}).get("text", "")
        names = await self._mention_names(original)  # known names only: the trigger expires in 3 s
        metadata = remix_metadata(body, limits.max_prompt_chars, names)
        preview = unescape(original, names)
        view = remix_modal(preview, self.options.tones, limits.max_variants, metadata)
        user = (body.get("user") or {}).get("id", "")
        where = Conversation(
            PLATFORM, (body.get("team") or {}).get("id", ""), (body.get("channel") or {}).get("id", "")
        )
        responder = SlackResponder(
            client, where, user, self.options, outbound=self.outbound, response_url=body.get("response_url")
        )
        self.spawn(self._open_view(client, body.get("trigger_id", ""), view, responder))

    async def _open_view(
        self, client: AsyncWebClient, trigger_id: str, view: dict[str, Any], responder: SlackResponder
    ) -> None:
        """Open a modal. Slack takes a click's trigger_id for 3 seconds only; when it refuses, the person is told to
        try again instead of seeing nothing happen."""
        try:
            await client.views_open(trigger_id=trigger_id, view=view)
        except SlackApiError as exc:
            error = exc.response.get("error", "") if exc.response is not None else ""
            _log.warning("views.open failed: %s", error)
            await responder.send(Reply.error(f"The form could not open (Slack said {error or 'no'}). Try again."))

    async def _on_message(
        self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient, context: Any
    ) -> None:
        bot_user_id = context.get("bot_user_id") or self.bot_user_id
        if event.get("subtype") in CHANGE_SUBTYPES:
            team = str(body.get("team_id", ""))
            if to_message_change(event, team, bot_user_id, self.admins) is not None:
                self._handle_once(body, lambda: self._message_changed(event, team, bot_user_id, client))
            return
        found = to_message(event, body.get("team_id", ""), bot_user_id, self.admins)
        if found is None:
            return
        if isinstance(found, Message):
            team_id = str(body.get("team_id", ""))
            self._handle_once(body, lambda: self._refine_from_message(event, team_id, bot_user_id, client))
        else:
            activity = found
            self._handle_once(body, lambda: self.chorus.handle(activity, self._responder(client, activity)))

    async def _refine_from_message(
        self, event: dict[str, Any], team_id: str, bot_user_id: str, client: AsyncWebClient
    ) -> None:
        """A message to Chorus, with the people it mentions by name; in a thread it replies to the thread's root,
        and the core picks the newest result there (feedback.message_target)."""
        text = str(event.get("text", ""))
        names = await self._mention_names(text.replace(f"<@{bot_user_id}>", " ") if bot_user_id else text, client)
        found = to_message(event, team_id, bot_user_id, self.admins, names)
        if not isinstance(found, Message):
            return
        message = await self._named(found, client)
        await self.chorus.handle(message, self._responder(client, message, thread_ts=message.conversation.thread))

    async def _message_changed(
        self, event: dict[str, Any], team_id: str, bot_user_id: str, client: AsyncWebClient
    ) -> None:
        """An edited or deleted message. An edit in a thread (where brainstorm ideas are) reads its mentions and its
        author by name, as a new message does; edits elsewhere cost no look-ups."""
        change = to_message_change(event, team_id, bot_user_id, self.admins)
        if isinstance(change, MessageEdited) and change.conversation.thread is not None:
            text = str((event.get("message") or {}).get("text", ""))
            names = await self._mention_names(text.replace(f"<@{bot_user_id}>", " ") if bot_user_id else text, client)
            edited = to_message_change(event, team_id, bot_user_id, self.admins, names)
            if isinstance(edited, MessageEdited):
                change = await self._named(edited, client)
        if change is not None:
            await self.chorus.handle(change, self._responder(client, change, thread_ts=change.conversation.thread))

    async def _on_reaction(self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        reaction = to_reaction(event, body.get("team_id", ""), self.admins)
        if reaction is not None:
            self._handle_once(body, lambda: self.chorus.handle(reaction, self._responder(client, reaction)))

    async def _on_app_mention(self) -> None:
        """Mentions arrive as message events too and are handled there; this only keeps Slack from retrying."""

    async def _on_home_opened(self, event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab", "home") == "home" and event.get("user"):
            self.spawn(self._publish_home(event["user"], client))

    async def _publish_home(self, user_id: str, client: AsyncWebClient) -> None:
        usage = await self.chorus.store.user_data_counts(PLATFORM, user_id)
        prefix, names = self.settings.command_prefix, self.options.commands
        commands = [(prefixed_commands(spec.usage, prefix, names), spec.summary) for spec in COMMANDS]
        settings = None
        if user_id in self.admins:
            chorus_settings = self.chorus.settings
            settings = {
                "mode": self.settings.mode,
                "admins": ", ".join(self.settings.admins) or "none",
                "quota per user": f"{chorus_settings.limits.quota_per_minute} generations a minute",
                "max variants": str(chorus_settings.limits.max_variants),
                "kinds": ", ".join(chorus_settings.kinds),
                "native streaming": "on" if self.settings.native_streaming else "off",
                "model": chorus_settings.generation.url or chorus_settings.model.source,
            }
        forget = prefixed_commands("/forget", prefix, names)
        await client.views_publish(user_id=user_id, view=home_view(commands, usage, settings, forget))


def settle_heap() -> None:
    """Move everything loaded so far (the model, torch, the libraries) out of the garbage collector's sight.

    Those objects live as long as the process; scanning them made one full collection pause the event loop for
    280 ms during an ack burst on the 2-core VM, longer than the whole ack budget we aim for.
    """
    gc.collect()
    gc.freeze()


async def run_slack(chorus: Chorus) -> int:
    """`chorus run` with chorus.platform = "slack": serve until SIGINT/SIGTERM."""
    # Signals first: a SIGTERM while connecting (or while drops start up) still means a clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        return await _serve(chorus, stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)


async def _serve(chorus: Chorus, stop: asyncio.Event) -> int:
    try:
        adapter = SlackAdapter(chorus)
        await adapter.start()
    except SlackConfigError as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"chorus: cannot reach Slack or listen for it: {exc.strerror or exc}", file=sys.stderr)
        return 1
    settle_heap()
    where = (
        f"listening on http://{adapter.settings.host}:{adapter.port}{adapter.settings.path}"
        if adapter.settings.mode == "http"
        else "connected through Socket Mode"
    )
    print(f"Chorus is on Slack, {where}. Ctrl-C stops.", flush=True)
    try:
        await stop.wait()
    finally:
        await adapter.stop()
    return 0

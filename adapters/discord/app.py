"""The Discord adapter: a discord.py client wired to Chorus, and a supervisor that keeps it running.

Gateway payloads go through translate (pure) into core events; replies come back through the responders. Every
gateway parser is guarded, so one malformed or unexpected event is logged and dropped instead of ending
`Client.start()`, and the supervisor restarts the client if anything still stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket, ReconnectWebSocket

from adapters.discord.commands import ChorusComponent, ask_modal, register, remix_modal, required_options
from adapters.discord.responder import (
    DEFERRED,
    FINAL_RETRY_S,
    NOT_DEFERRED,
    REFUSED,
    AckSession,
    ChannelResponder,
    DiscordPublisher,
    DiscordResponder,
    DiscordStream,
    RateHints,
    answer_raw,
    defer_raw,
    replace_deferred_raw,
)
from adapters.discord.translate import (
    REMIX_MENU,
    REMIX_MODAL_ID,
    AskFirst,
    MentionNames,
    decode_custom_id,
    defers_at_once,
    encode_custom_id,
    mentioned_ids,
    to_action,
    to_command,
    to_message,
    to_message_deletes,
    to_message_edit,
    to_reaction,
    to_remix_command,
)
from bots.commands import COMMANDS
from bots.events import Event
from bots.feedback import GENERATING_ACTIONS
from bots.redelivery import deliver_undelivered
from bots.reply import Reply, Responder
from bots.router import CommandSpec
from bots.shutdown import RESTART_NOTE, Draining
from bots.validation import refusal

if TYPE_CHECKING:
    from bots.app import Chorus
    from config import Settings

_log = logging.getLogger(__name__)

_KEPT = 1024  # bounded caches: raw interaction payloads, threads Chorus opened
# Deferred interactions are processed once every early defer in flight is out, but never held longer than this.
ACKS_FIRST_MAX_HOLD_S = 0.25


# Private answers to interactions Chorus cannot serve as sent; each says what to do.
UNREADABLE = "Chorus couldn't read this request. Please try again; if it keeps happening, reload Discord (Ctrl+R)."
OUTDATED_COMMAND = (
    "Your Discord app has an older version of /{name} (it did not send: {missing}). "
    "Reload Discord (Ctrl+R, or restart the app) and try again."
)
UNKNOWN_COMMAND = (
    "Chorus has no /{name} command any more. Reload Discord (Ctrl+R) to refresh the command list; "
    "/help lists what Chorus can do."
)
OLD_BUTTON = "This button is from an older version of Chorus and no longer works. Start again with /create."
COMMAND_FAILED = "That command could not run. Reload Discord (Ctrl+R) and try again."
RESTARTING = "Chorus is restarting. Try again in a minute."
# On SIGTERM/SIGINT, how long generations in flight get to land their text so far before their messages are finished
# with what they show (process managers allow about 10 s before they kill).
SHUTDOWN_GRACE_S = 8.0


class TokenMissing(Exception):
    """No bot token in the environment variable or secrets file the config names."""


def read_token(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """The bot token, from `discord.token_env` or else `discord.token_file`; never from a config value."""
    env = os.environ if env is None else env
    section = settings.discord
    token = env.get(section.token_env, "").strip() if section.token_env else ""
    if not token and section.token_file:
        path = Path(section.token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenMissing(f"cannot read discord.token_file {path}: {exc.strerror}") from None
    if not token:
        where = f"${section.token_env}" + (f" or {section.token_file}" if section.token_file else "")
        raise TokenMissing(f"no Discord bot token: set {where} (Developer Portal → your app → Bot → Reset Token).")
    return token


def apply_endpoints(settings: Settings) -> None:
    """Point discord.py at `api_base_url` / `gateway_url` (a REST proxy, or a fake Discord in tests)."""
    section = settings.discord
    if section.api_base_url:
        discord.http.Route.BASE = section.api_base_url.rstrip("/")
    if section.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(section.gateway_url)


def intents_for(settings: Settings) -> discord.Intents:
    """Guilds, guild and DM messages, reactions; Message Content only when configured (it is privileged)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.guild_reactions = True
    intents.dm_reactions = True
    intents.message_content = settings.discord.message_content_intent
    return intents


# A gateway failure outside discord.py's own handling is turned into a RESUME, up to this many times a minute; past
# that the client stops and the supervisor starts a new one (a new session).
RESUMES_PER_MINUTE = 3
# What discord.py's connect loop handles by itself (reconnecting, resuming or stopping).
_GATEWAY_HANDLED = (
    ReconnectWebSocket,
    discord.ConnectionClosed,
    discord.GatewayNotFound,
    discord.HTTPException,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)


class _Failures:
    """Recent gateway failures, across the connections of one client."""

    def __init__(self) -> None:
        self.at: deque[float] = deque(maxlen=RESUMES_PER_MINUTE + 1)

    def too_many(self) -> bool:
        """Record one failure; True when there were more than RESUMES_PER_MINUTE in the last minute."""
        now = time.monotonic()
        self.at.append(now)
        return len(self.at) > RESUMES_PER_MINUTE and now - self.at[0] < 60.0


def _resuming(ws: DiscordWebSocket, failures: _Failures) -> Callable[[], Coroutine[Any, Any, None]]:
    """Wrap one gateway connection's poll so that an unexpected failure (an undecodable frame, a bug in a handler)
    closes this connection and RESUMEs the session: Discord replays what was missed, nothing is lost."""
    poll = ws.poll_event

    async def poll_event() -> None:
        try:
            await poll()
        except _GATEWAY_HANDLED:
            raise
        except Exception:
            if failures.too_many():
                raise
            _log.exception("the gateway connection failed; resuming the session")
            with contextlib.suppress(Exception):
                await ws.close(code=4000)  # not 1000: that would end the session
            raise ReconnectWebSocket(ws.shard_id, resume=True) from None

    return poll_event


def _close_with_1000(client: discord.Client) -> None:
    """Make the client's coming close a clean one (1000: the session ends, Discord shows the bot offline at once).

    discord.py closes with 1000, but its poll loop, woken by that close, closes the socket first with 4000 (a
    resumable drop), and that code is the one sent. A clean stop is not a drop, so this connection's socket closes
    with 1000 whatever it is asked."""
    ws = client.ws
    if ws is None or not ws.open:
        return
    socket = ws.socket
    close = socket.close

    async def close_cleanly(*, code: int = 1000, message: bytes = b"") -> bool:
        return await close(code=1000, message=message)

    socket.close = close_cleanly  # type: ignore[method-assign]


class _ChorusClientMixin:
    """Hooks shared by the plain and the auto-sharded client."""

    def __init__(self, adapter: DiscordAdapter, **kwargs: Any) -> None:
        self._gateway: DiscordWebSocket | None = None
        self._gateway_failures = _Failures()
        super().__init__(**kwargs)
        self.adapter = adapter
        self.tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(self)  # type: ignore[arg-type,type-var]

    @property
    def ws(self) -> DiscordWebSocket | None:
        return self._gateway

    @ws.setter
    def ws(self, ws: DiscordWebSocket | None) -> None:
        """discord.py sets this once per gateway connection; each one gets the resuming poll."""
        if ws is not None:
            ws.poll_event = _resuming(ws, self._gateway_failures)  # type: ignore[method-assign]
        self._gateway = ws

    async def setup_hook(self) -> None:
        await self.adapter.setup(self)  # type: ignore[arg-type]

    async def on_ready(self) -> None:
        await self.adapter.on_ready()

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type == discord.InteractionType.modal_submit:
            await self.adapter.on_component(interaction)

    async def on_chorus_component(self, interaction: discord.Interaction) -> None:
        await self.adapter.on_component(interaction)


class ChorusClient(_ChorusClientMixin, discord.Client):  # type: ignore[misc]  # `ws` is a property here
    pass


class ShardedChorusClient(_ChorusClientMixin, discord.AutoShardedClient):  # type: ignore[misc]
    pass


class DiscordAdapter:
    """Chorus on Discord. `run(token)` supervises a client; tests start it against a fake Discord."""

    def __init__(self, chorus: Chorus, *, client_options: Mapping[str, Any] | None = None) -> None:
        """`client_options` go to the discord.py client as they are (tests shorten `guild_ready_timeout`)."""
        self.chorus = chorus
        # Results stored before this moment are a previous process' (redelivered on connect); later ones are ours.
        self.started = datetime.now(UTC)
        self.client_options = dict(client_options or {})
        settings = chorus.settings
        self.section = settings.discord
        self.tones: Sequence[str] = tuple(settings.tones)
        self.edit_interval_s = settings.limits.stream_edit_interval_s
        self.token_ttl_s = self.section.interaction_token_ttl_s
        self.final_retry_s = FINAL_RETRY_S
        self.streams: set[DiscordStream] = set()
        self.draining = Draining.install(chorus)
        self.rate_hints = RateHints()
        self.threads: OrderedDict[str, str] = OrderedDict()  # thread id -> parent channel id
        self.raw_interactions: OrderedDict[int, tuple[float, dict[str, Any]]] = OrderedDict()
        self.early_defers: OrderedDict[int, asyncio.Task[str]] = OrderedDict()
        self.ack_session = AckSession()
        self._acks_in_flight = 0
        self._after_acks: deque[Callable[[], None]] = deque()
        self._hold_timer: asyncio.TimerHandle | None = None
        self.generating_commands = frozenset(spec.name for spec in chorus.router.commands.values() if spec.generates)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.restarts = 0
        self.dropped_events = 0
        self._publisher_attached = False
        self._stopping = False
        self.client: discord.Client = self._make_client()

    # ---------------------------------------------------------------- lifecycle
    def _make_client(self) -> discord.Client:
        kwargs: dict[str, Any] = {
            "intents": intents_for(self.chorus.settings),
            "http_trace": self.rate_hints.trace_config(),
            "allowed_mentions": discord.AllowedMentions.none(),
            "max_messages": 200,
            "chunk_guilds_at_startup": False,
            **self.client_options,
        }
        if self.section.shard_count is not None:
            if self.section.shard_ids:  # this process runs its share; others on the same database run the rest
                kwargs["shard_ids"] = sorted(self.section.shard_ids)
            return ShardedChorusClient(self, shard_count=self.section.shard_count, **kwargs)
        return ChorusClient(self, **kwargs)

    async def run(self, token: str) -> int:
        """Run until stopped; a crash of the client (a KeyError out of discord.py, say) restarts it."""
        while not self._stopping:
            client = self.client
            try:
                await client.start(token)
                if self._stopping or client.is_closed():
                    return 0
            except discord.LoginFailure:
                print("chorus: Discord refused the bot token (LoginFailure). Check the token.", file=sys.stderr)
                return 1
            except discord.PrivilegedIntentsRequired:
                print(
                    "chorus: discord.message_content_intent is on, but the Message Content intent is not enabled "
                    "for this bot (Developer Portal → Bot → Privileged Gateway Intents).",
                    file=sys.stderr,
                )
                return 1
            except Exception:
                _log.exception("the Discord client stopped unexpectedly; restarting it")
            finally:
                if not client.is_closed():
                    with contextlib.suppress(Exception):
                        await client.close()
            if self._stopping:
                return 0
            self.restarts += 1
            await asyncio.sleep(self.section.reconnect_delay_s)
            self.client = self._make_client()
        return 0

    async def shutdown(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """SIGTERM/SIGINT: take no new work, let each generation in flight end with its text so far and the restart
        note (stored, so Regenerate works after the restart), finish any message still showing progress the same
        way, then close the gateway cleanly (1000, so Discord does not wait for a resume)."""
        if self._stopping:
            return
        self._stopping = True
        self.final_retry_s = min(self.final_retry_s, grace_s / 2)
        await self.draining.drain()
        pending = [task for task in self.tasks if not task.done() and task is not asyncio.current_task()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_s)
            if late:
                _log.warning("stopping: %d handler(s) did not finish in %.0f s", len(late), grace_s)
        for stream in list(self.streams):
            await stream.interrupt(RESTART_NOTE)
        await self.stop()

    async def stop(self) -> None:
        """Stop handling, then disconnect: in-flight handlers are cancelled before the HTTP session closes."""
        self._stopping = True
        for task in list(self.tasks):
            task.cancel()
        for stream in list(self.streams):
            stream.abandon()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        _close_with_1000(self.client)
        await self.client.close()
        await self.ack_session.close()

    async def setup(self, client: ChorusClient | ShardedChorusClient) -> None:
        """Guard the gateway parsers, register commands and components, and sync the commands."""
        state = client._connection
        parsers = state.parsers
        for name, parser in list(parsers.items()):
            parsers[name] = self._guarded(name, parser)
        tree = client.tree
        register(
            tree,
            COMMANDS,
            self.chorus.settings,
            self.on_command,
            self.on_remix if "remix" in self.chorus.router.commands else None,
        )
        tree.error(self.on_tree_error)
        client.add_dynamic_items(ChorusComponent)
        await self._sync(tree)

    async def _sync(self, tree: app_commands.CommandTree) -> None:
        if self.section.shard_ids and 0 not in self.section.shard_ids:
            # Several processes split the shards: the one running shard 0 registers the commands, once per start.
            _log.info("slash commands are synced by the process that runs shard 0; not this one")
            return
        try:
            if self.section.sync_guilds:
                for guild_id in self.section.sync_guilds:
                    guild = discord.Object(id=int(guild_id))
                    tree.copy_global_to(guild=guild)
                    await tree.sync(guild=guild)
            else:
                await tree.sync()
        except Exception as exc:  # a failed sync must not stop the bot; the previous commands stay registered
            _log.error("syncing slash commands failed (the old ones stay until the next start): %s", exc)

    def _guarded(self, name: str, parser: Callable[[Any], None]) -> Callable[[Any], None]:
        raw_hook = {
            "MESSAGE_CREATE": self._on_raw_message,
            "MESSAGE_REACTION_ADD": lambda data: self._on_raw_reaction(data, True),
            "MESSAGE_REACTION_REMOVE": lambda data: self._on_raw_reaction(data, False),
            "MESSAGE_UPDATE": self._on_raw_edit,
            "MESSAGE_DELETE": self._on_raw_delete,
            "MESSAGE_DELETE_BULK": self._on_raw_delete,
        }.get(name)

        def guarded(data: Any) -> None:
            try:
                if name == "INTERACTION_CREATE":
                    early = self._stash_interaction(data)
                    if early == REFUSED:
                        return  # answered privately already; discord.py and the core never see it
                    if isinstance(early, asyncio.Task):
                        # discord.py's models and the core run once the defers in flight are out, so a burst of
                        # interactions is acknowledged first and processed after, instead of every ack waiting
                        # behind the processing of the ones before it.
                        early.add_done_callback(lambda task: self._after_early_ack(task, lambda: guarded_parse(data)))
                        return
                guarded_parse(data)
            except Exception:
                self._drop(name)

        def guarded_parse(data: Any) -> None:
            try:
                parser(data)
                if raw_hook is not None:
                    raw_hook(data)
            except Exception:
                self._drop(name)
                if name == "INTERACTION_CREATE":
                    self._answer_unreadable(data)

        return guarded

    def _drop(self, name: str) -> None:
        self.dropped_events += 1
        _log.exception("ignored a malformed %s gateway event", name)

    async def on_ready(self) -> None:
        if not self._publisher_attached:
            self._publisher_attached = True
            publisher = DiscordPublisher(self)
            await self.chorus.attach_publisher(publisher)
            # Results stored but not delivered when Chorus last stopped go out now.
            self._spawn(deliver_undelivered(self.chorus.store, publisher, "discord", started=self.started))
            # Messages a killed Chorus left "thinking…" or half-written are finished: into their result, or a note.
            self.chorus.in_flight.start(publisher, "discord")

    # ---------------------------------------------------------------- bookkeeping
    def remember_thread(self, thread_id: str, parent_id: str) -> None:
        self.threads[thread_id] = parent_id
        while len(self.threads) > _KEPT:
            self.threads.popitem(last=False)

    def _stash_interaction(self, data: dict[str, Any]) -> asyncio.Task[str] | str | None:
        """Keep the raw payload for translate. One Chorus cannot serve as sent (unreadable, unknown, from a client
        with an outdated command list) is answered privately at once and goes no further (REFUSED). One that will
        generate passes the checks that cost nothing and only then is deferred (returns that task), so its errors
        are private from the start."""
        interaction_id = int(data["id"])
        self.raw_interactions[interaction_id] = (time.monotonic(), data)
        while len(self.raw_interactions) > _KEPT:
            self.raw_interactions.popitem(last=False)
        problem = self._unservable(data)
        if problem is None and self._stopping and data.get("type") in (2, 3, 5):  # not autocomplete
            problem = RESTARTING
        if problem is not None:
            token = str(data["token"])
            self._spawn(answer_raw(self.client, interaction_id, token, problem, self.ack_session))
            return REFUSED
        if self.section.defer_on_receipt and defers_at_once(data, self.generating_commands, GENERATING_ACTIONS):
            task = asyncio.get_running_loop().create_task(self._check_then_defer(interaction_id, data))
            self._acks_in_flight += 1
            task.add_done_callback(self._ack_settled)  # before the caller's callback, so the count is current
            self.early_defers[interaction_id] = task
            while len(self.early_defers) > _KEPT:
                self.early_defers.popitem(last=False)
            return task
        return None

    def _unservable(self, data: dict[str, Any]) -> str | None:
        """Why Chorus cannot serve this interaction as sent (what to tell the user), or None."""
        inner = data.get("data") or {}
        try:
            kind = data.get("type")
            if kind == 2:
                name = str(inner.get("name", ""))
                if inner.get("type", 1) != 1:
                    known = name == REMIX_MENU and "remix" in self.chorus.router.commands
                    return None if known else UNKNOWN_COMMAND.format(name=name)
                spec = self.chorus.router.commands.get(name)
                if spec is None:
                    return UNKNOWN_COMMAND.format(name=name)
                given = {str(option.get("name")) for option in inner.get("options") or []}
                missing = [option for option in required_options(spec) if option not in given]
                if missing:
                    return OUTDATED_COMMAND.format(name=name, missing=", ".join(missing))
            elif kind in (3, 5):
                custom_id = str(inner.get("custom_id", ""))
                if custom_id != REMIX_MODAL_ID and decode_custom_id(custom_id) is None:
                    return OLD_BUTTON
        except (AttributeError, TypeError, ValueError):
            return UNREADABLE
        return None

    async def _check_then_defer(self, interaction_id: int, data: dict[str, Any]) -> str:
        """The checks that cost nothing (permissions, arguments, moderation, quota), then the public defer; a refused
        interaction is answered privately instead. Returns DEFERRED, REFUSED or NOT_DEFERRED."""
        token = str(data["token"])
        try:
            reason = await self._refusal(data)
        except Exception:
            _log.exception("checking interaction %s before deferring failed; deferring anyway", interaction_id)
            reason = None
        if reason is not None:
            answered = await answer_raw(self.client, interaction_id, token, reason, self.ack_session)
            return REFUSED if answered else NOT_DEFERRED
        deferred = await defer_raw(self.client, interaction_id, token, self.ack_session)
        return DEFERRED if deferred else NOT_DEFERRED

    async def _refusal(self, data: dict[str, Any]) -> str | None:
        inner = data.get("data") or {}
        commands = self.chorus.router.commands
        if data.get("type") == 2:
            spec = commands.get(str(inner.get("name", "")))
            if spec is None:
                return None
            return await refusal(self.chorus, to_command(data, free_text=not spec.options), spec)
        remix = to_remix_command(data)
        if remix is not None:
            return await refusal(self.chorus, remix, commands.get("remix"))
        action = to_action(data)
        return await refusal(self.chorus, action) if action is not None and not isinstance(action, AskFirst) else None

    def _after_early_ack(self, task: asyncio.Task[str], parse: Callable[[], None]) -> None:
        if task.cancelled() or task.result() != REFUSED:
            self._when_acked(parse)

    def _answer_unreadable(self, data: dict[str, Any]) -> None:
        """discord.py could not read an interaction: answer it privately, replacing the "thinking…" if it was
        deferred on receipt, so it is never left loading."""
        try:
            interaction_id, token = int(data["id"]), str(data["token"])
        except (KeyError, TypeError, ValueError):
            return  # nothing to answer with
        early = self.early_defers.pop(interaction_id, None)
        if early is not None and early.done() and not early.cancelled() and early.result() == DEFERRED:
            application_id = int(data.get("application_id") or self.client.application_id or 0)
            self._spawn(replace_deferred_raw(self.client, application_id, token, UNREADABLE, self.ack_session.get()))
        else:
            self._spawn(answer_raw(self.client, interaction_id, token, UNREADABLE, self.ack_session))

    def _ack_settled(self, _: asyncio.Task[str]) -> None:
        self._acks_in_flight -= 1
        if self._acks_in_flight == 0:
            self._release_held()

    def _when_acked(self, work: Callable[[], None]) -> None:
        """Run `work` now if no early defer is in flight, else once they are all out (at most
        ACKS_FIRST_MAX_HOLD_S later, so a steady stream of interactions cannot hold it back for long)."""
        if self._acks_in_flight == 0:
            work()
            return
        self._after_acks.append(work)
        if self._hold_timer is None:
            self._hold_timer = asyncio.get_running_loop().call_later(ACKS_FIRST_MAX_HOLD_S, self._release_held)

    def _release_held(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        held, self._after_acks = self._after_acks, deque()
        for work in held:
            work()

    def _payload(self, interaction: discord.Interaction) -> tuple[float, dict[str, Any]]:
        stashed = self.raw_interactions.pop(interaction.id, None)
        if stashed is not None:
            return stashed
        return time.monotonic(), {
            "id": str(interaction.id),
            "data": interaction.data or {},
            "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
            "channel_id": str(interaction.channel_id or ""),
            "member": {
                "user": {"id": str(interaction.user.id), "username": interaction.user.name},
                "permissions": str(interaction.permissions.value),
            },
        }

    def _responder(self, interaction: discord.Interaction, received_at: float) -> DiscordResponder:
        early = self.early_defers.pop(interaction.id, None)
        responder = DiscordResponder(self, interaction, received_at=received_at, early_defer=early)
        responder.guard(self.section.ack_deadline_s)
        return responder

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, event: Event, responder: Responder) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)  # so stop() can cancel it before the session closes
        try:
            await self.chorus.handle(event, responder)
            if isinstance(responder, DiscordResponder):
                await responder.settle()
        except Exception:
            if not self._stopping:
                _log.exception("handling a Discord %s failed", type(event).__name__)
        finally:
            if task is not None:
                self.tasks.discard(task)

    # ---------------------------------------------------------------- interactions
    async def on_command(self, interaction: discord.Interaction, spec: CommandSpec) -> None:
        received_at, payload = self._payload(interaction)
        options = (payload.get("data") or {}).get("options") or []
        text = " ".join(str(option.get("value", "")) for option in options)
        names = self._mention_names(str(payload.get("guild_id") or ""), text)
        event = to_command(payload, free_text=not spec.options, names=names)
        await self._handle(event, self._responder(interaction, received_at))

    def _mention_names(self, guild_id: str, text: str) -> MentionNames:
        """Names from discord.py's cache for the people, roles and channels `text` mentions (roles and channels come
        with every guild; people only when cached, as Chorus asks for no member list)."""
        if "<" not in text:
            return MentionNames()
        guild = self.client.get_guild(int(guild_id)) if guild_id.isdigit() else None
        users: dict[str, str] = {}
        roles: dict[str, str] = {}
        channels: dict[str, str] = {}
        for kind, id_ in mentioned_ids(text):
            if kind == "@&" and guild is not None and (role := guild.get_role(int(id_))) is not None:
                roles[id_] = role.name
            elif kind == "#" and guild is not None and (channel := guild.get_channel_or_thread(int(id_))) is not None:
                channels[id_] = channel.name
            elif kind == "@":
                member = guild.get_member(int(id_)) if guild is not None else None
                person = member or self.client.get_user(int(id_))
                if person is not None:
                    users[id_] = person.display_name
        return MentionNames(users, roles, channels)

    async def on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """discord.py refused a command before Chorus saw it (an option schema it does not match, say): answer
        privately, replacing any "thinking…", instead of leaving it to expire."""
        _log.warning("discord.py refused interaction %s: %s", interaction.id, error)
        if isinstance(error, app_commands.CommandSignatureMismatch):
            text = OUTDATED_COMMAND.format(name=error.command.name, missing="its current options")
        elif isinstance(error, app_commands.CommandNotFound):
            text = UNKNOWN_COMMAND.format(name=error.name)
        else:
            text = COMMAND_FAILED
        received_at, _ = self._payload(interaction)
        responder = self._responder(interaction, received_at)
        try:
            await responder.send(Reply.error(text))
        finally:
            await responder.settle()

    async def on_remix(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The message menu: a modal asks for the tone; its submission arrives as /remix (see on_component)."""
        received_at, payload = self._payload(interaction)
        data = payload.get("data") or {}
        target = ((data.get("resolved") or {}).get("messages") or {}).get(str(data.get("target_id"))) or {}
        names = self._mention_names(str(payload.get("guild_id") or ""), str(target.get("content") or ""))
        text = to_command(payload, free_text=True, names=names).text
        modal = remix_modal(text, self.tones, self.chorus.settings.limits.max_prompt_chars)
        modal.stop()
        try:
            await self._responder(interaction, received_at).open_modal(modal)
        except discord.HTTPException as exc:
            _log.warning("could not open the remix modal: %s", exc)

    async def on_component(self, interaction: discord.Interaction) -> None:
        received_at, payload = self._payload(interaction)
        remix = to_remix_command(payload)
        if remix is not None:
            await self._handle(remix, self._responder(interaction, received_at))
            return
        action = to_action(payload)
        if action is None:
            return
        responder = self._responder(interaction, received_at)
        if isinstance(action, AskFirst):
            custom_id = encode_custom_id(action.action_id, action.target_id, kind="m")
            modal = ask_modal(action.label, custom_id, self.chorus.settings.limits.max_prompt_chars)
            modal.stop()  # the submission is routed by custom_id, so discord.py need not keep the modal
            try:
                await responder.open_modal(modal)
            except discord.HTTPException as exc:
                _log.warning("could not open a modal: %s", exc)
            return
        await self._handle(action, responder)

    # ---------------------------------------------------------------- messages and reactions
    def _thread_of(self, channel_id: str) -> tuple[str | None, bool]:
        """(parent channel id if this is a thread, whether Chorus opened that thread)."""
        if channel_id in self.threads:
            return self.threads[channel_id], True
        channel = self.client.get_channel(int(channel_id)) if channel_id.isdigit() else None
        if isinstance(channel, discord.Thread):
            me = self.client.user
            return str(channel.parent_id), me is not None and channel.owner_id == me.id
        return None, False

    def _bot_id(self) -> str:
        return str(self.client.user.id) if self.client.user else ""

    def _on_raw_message(self, data: dict[str, Any]) -> None:
        if self._stopping:
            return
        parent, ours = self._thread_of(str(data.get("channel_id", "")))
        places = self._mention_names(str(data.get("guild_id") or ""), str(data.get("content") or ""))
        event = to_message(data, bot_id=self._bot_id(), thread_parent=parent, chorus_thread=ours, places=places)
        if event is None:
            return
        guild_id = int(data["guild_id"]) if data.get("guild_id") else None
        author = int((data.get("author") or {}).get("id") or 0) or None
        responder = ChannelResponder(
            self, int(data["channel_id"]), reply_to=int(data["id"]), guild_id=guild_id, asker=author
        )
        self._spawn(self._handle(event, responder))

    def _on_raw_reaction(self, data: dict[str, Any], added: bool) -> None:
        parent, _ = self._thread_of(str(data.get("channel_id", "")))
        event = to_reaction(data, added=added, bot_id=self._bot_id(), thread_parent=parent)
        if event is None:
            return
        guild_id = int(data["guild_id"]) if data.get("guild_id") else None
        self._spawn(self._handle(event, ChannelResponder(self, int(data["channel_id"]), guild_id=guild_id)))

    def _on_raw_edit(self, data: dict[str, Any]) -> None:
        if self._stopping:
            return
        parent, _ = self._thread_of(str(data.get("channel_id", "")))
        content_intent = self.section.message_content_intent
        event = to_message_edit(data, bot_id=self._bot_id(), thread_parent=parent, content_intent=content_intent)
        if event is None:
            return
        guild_id = int(data["guild_id"]) if data.get("guild_id") else None
        author = int(event.user.id) if event.user.id.isdigit() else None
        responder = ChannelResponder(
            self, int(data["channel_id"]), reply_to=int(data["id"]), guild_id=guild_id, asker=author
        )
        self._spawn(self._handle(event, responder))

    def _on_raw_delete(self, data: dict[str, Any]) -> None:
        if self._stopping:
            return
        parent, _ = self._thread_of(str(data.get("channel_id", "")))
        guild_id = int(data["guild_id"]) if data.get("guild_id") else None
        for event in to_message_deletes(data, thread_parent=parent):
            for stream in list(self.streams):
                stream.message_deleted(event.message_ref)
            self._spawn(self._handle(event, ChannelResponder(self, int(data["channel_id"]), guild_id=guild_id)))


async def run_discord(chorus: Chorus) -> int:
    """`chorus run` with chorus.platform = "discord"."""
    try:
        token = read_token(chorus.settings)
    except TokenMissing as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 2
    apply_endpoints(chorus.settings)
    adapter = DiscordAdapter(chorus)
    loop = asyncio.get_running_loop()
    shutting_down: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if not shutting_down:
            shutting_down.append(loop.create_task(adapter.shutdown()))

    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal)
    try:
        return await adapter.run(token)
    finally:
        if shutting_down:
            await shutting_down[0]
        await adapter.stop()
        for signum in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)

"""A fake Discord (REST + gateway) on 127.0.0.1 that the real discord.py client talks to.

It records every request (method, path, headers, JSON body), dispatches gateway events (READY, GUILD_CREATE,
INTERACTION_CREATE, MESSAGE_CREATE, MESSAGE_REACTION_ADD), and injects 429s and socket closes. Traps it honours:
JSON responses carry Content-Type exactly `application/json`, the interaction callback returns a JSON body,
interactions carry `attachment_size_limit`, reactions carry `type`, and 429s carry `Via` unless told otherwise.

Documented rules it models, because they are the ones that bite:
- a follow-up sent while a deferred response is still loading *edits that loading message* (its ephemeral flag is
  ignored; the deferred response's is kept) instead of creating a new one (Create Followup Message);
- rate-limit buckets (`limits`): per interaction token and per channel, announced in X-RateLimit-* headers; a request
  into an exhausted bucket is answered 429 and counted in `violations`;
- gateway RESUME: dispatches of a session are kept, and a RESUME with the session id replays those after its `seq`;
- message content over 2000 characters is refused with 400 Invalid Form Body (code 50035), as Discord does, and so
  is a body past the other documented limits (embeds, components, modals, thread names, commands: `form_problem`);
- an interaction token is valid for 15 minutes (`token_ttl_s`): later, its webhook routes (edits of the original,
  follow-ups) answer 401 Invalid Webhook Token (code 50027), and such uses are counted in `expired_uses`;
- interaction responses need no channel permission, bot-token messages do: in a channel of `no_send` the bot lacks
  Send Messages, its interactions say so in `app_permissions`, and its posts there get 403 Missing Permissions (50013);
- a DM to a user of `dms_closed` gets 403 Cannot send messages to this user (50007).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1420070400000
_JSON_BODY = web.RequestKey("json_body", object)
APP_ID = "900000000000000001"
BOT_ID = APP_ID
GUILD_ID = "910000000000000001"
CHANNEL_ID = "920000000000000001"
BAKERS_ROLE_ID = "915000000000000001"  # a mentionable role of the fake guild, for prompts that mention it
CONTENT_LIMIT = 2000  # characters of message content Discord accepts
MOD_PERMISSIONS = str((1 << 4) | (1 << 10) | (1 << 11))  # Manage Channels, View Channel, Send Messages
USER_PERMISSIONS = str((1 << 10) | (1 << 11))

BOT_USER = {
    "id": BOT_ID,
    "username": "Chorus",
    "discriminator": "0",
    "global_name": "Chorus",
    "avatar": None,
    "bot": True,
}


_SEQUENCE = itertools.count(1)


def snowflake(at_ms: float | None = None) -> str:
    """A Discord id whose timestamp is `at_ms` (now by default), so created_at is meaningful."""
    ms = int(time.time() * 1000) if at_ms is None else int(at_ms)
    return str(((ms - DISCORD_EPOCH_MS) << 22) | (next(_SEQUENCE) & 0x3FFFFF))


def user_payload(user_id: str, name: str) -> dict[str, Any]:
    return {"id": user_id, "username": name, "discriminator": "0", "global_name": name, "avatar": None}


def member_payload(user_id: str, name: str) -> dict[str, Any]:
    return {
        "user": user_payload(user_id, name),
        "roles": [],
        "joined_at": _now_iso(),
        "deaf": False,
        "mute": False,
        "flags": 0,
    }


def channel_payload(channel_id: str) -> dict[str, Any]:
    """The one text channel of the fake guild, as the gateway (GUILD_CREATE) and interactions both carry it."""
    return {
        "id": channel_id,
        "type": 0,
        "guild_id": GUILD_ID,
        "name": "general",
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
    }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    query: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    files: dict[str, bytes] = field(default_factory=dict)  # multipart uploads: filename -> content
    peer: str = ""  # the client's address and port: which connection the request came on


@dataclass
class Bucket:
    """A fixed-window bucket: `limit` requests per `window_s`, the window starting at the first request."""

    limit: int
    window_s: float
    started: float = 0.0
    used: int = 0

    def take(self, now: float) -> tuple[bool, int, float]:
        """(allowed, remaining after this request, seconds until the window resets)."""
        if now - self.started >= self.window_s:
            self.started, self.used = now, 0
        reset_after = self.window_s - (now - self.started)
        if self.used >= self.limit:
            return False, 0, reset_after
        self.used += 1
        return True, self.limit - self.used, reset_after


@dataclass
class RateLimits:
    """Bucket sizes: interaction webhook routes share one bucket per token; bot-token message routes one per
    channel (Discord's per-resource limits, sized as commonly observed)."""

    per_token: tuple[int, float] = (5, 2.0)
    per_channel: tuple[int, float] = (5, 5.0)


# Discord's JSON error codes a fault can carry, with their documented messages.
_ERROR_MESSAGES = {
    10003: "Unknown Channel",
    50001: "Missing Access",
    50013: "Missing Permissions",
    50083: "Operation cannot be performed on an archived thread",
    160005: "Thread is locked",
}


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    times: int
    status: int = 429
    is_global: bool = False
    via: bool = True
    retry_after: float = 0.05
    hits: int = 0
    when: Callable[[Any], bool] | None = None  # only requests whose JSON body this accepts
    code: int | None = None  # Discord's JSON error code for a 4xx other than 429 (10003 Unknown Channel, …)


class FakeDiscord:
    """Start with `await fake.start()`; point discord.py at `fake.api_base_url` / `fake.gateway_url`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.originals: dict[str, str] = {}  # interaction token -> original response message id
        self.dispatched_at: dict[str, float] = {}  # interaction id -> monotonic time of dispatch
        self.callback_at: dict[str, float] = {}  # interaction id -> monotonic time its callback arrived
        self.gateway_ops: list[dict[str, Any]] = []  # IDENTIFY / RESUME / ... as sent by the client
        self.sockets: list[web.WebSocketResponse] = []
        self.session_id = "fake-session-1"
        self.seq = 0
        self.rate_limit_headers: dict[str, str] = {}  # extra headers on webhook responses (X-RateLimit-*)
        self.threads: dict[str, dict[str, Any]] = {}
        self.upload_limit = 10 * 1024 * 1024  # bytes per attached file, as attachment_size_limit says
        self._connected = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.guild_threads: list[dict[str, Any]] = []
        self.burst_sent_ms = 0.0
        # Intent bits this bot was not granted in the Developer Portal: IDENTIFY with them is closed with 4014.
        self.privileged_refused = 0
        self.loading: set[str] = set()  # tokens whose deferred response still shows "thinking…"
        self.followups: dict[str, list[str]] = {}  # token -> ids of the new messages its follow-ups created
        self.deleted: set[str] = set()  # message ids deleted through the API
        self.limits: RateLimits | None = None  # None: no bucket limits (faults still apply)
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.violations: list[Recorded] = []  # requests sent into an exhausted bucket
        self.close_codes: list[int | None] = []  # how each gateway connection was closed by the client
        self.sessions = itertools.count(1)
        self.replay: list[tuple[int, str]] = []  # (seq, frame) of the current session, for RESUME
        self.token_ttl_s = 15 * 60.0  # how long an interaction token works (Discord: 15 minutes)
        self.token_issued: dict[str, float] = {}  # interaction token -> monotonic time of its dispatch
        self.expired_uses: list[Recorded] = []  # webhook requests made with an expired interaction token
        self.invalid_forms: list[tuple[str, str]] = []  # (path, what broke a documented limit): 400 50035
        self.no_send: set[str] = set()  # channels where the bot may not send messages (View Channel only)
        self.dms: dict[str, str] = {}  # DM channel id -> the user it reaches
        self.dms_closed: set[str] = set()  # users who accept no DMs from this bot
        self.channel_edits: list[tuple[str, dict[str, Any]]] = []  # (message id, body) edited with the bot token

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_post("/_fake/burst", self._control_burst)
        app.router.add_get("/_fake/acks", self._control_acks)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def serve_forever(self) -> None:
        """`python tests/fake_discord.py`: serve until killed, printing the port first (for bench/ack.py)."""
        await self.start()
        print(f"FAKE_DISCORD_PORT {self.port}", flush=True)
        await asyncio.Event().wait()

    async def stop(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ---------------------------------------------------------------- queries for tests
    def env(self) -> dict[str, str]:
        """The settings that point Chorus at this fake (started first, so the port is known)."""
        return {"CHORUS_DISCORD__API_BASE_URL": self.api_base_url, "CHORUS_DISCORD__GATEWAY_URL": self.gateway_url}

    def find(self, method: str, pattern: str) -> list[Recorded]:
        regex = re.compile(pattern)
        return [r for r in self.requests if r.method == method and regex.search(r.path)]

    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests if isinstance(r.body, dict)]

    def fail(
        self,
        method: str,
        pattern: str,
        *,
        times: int = 1,
        status: int = 429,
        is_global: bool = False,
        via: bool = True,
        retry_after: float = 0.05,
        when: Callable[[Any], bool] | None = None,
        code: int | None = None,
    ) -> Fault:
        fault = Fault(method, re.compile(pattern), times, status, is_global, via, retry_after, when=when, code=code)
        self.faults.append(fault)
        return fault

    # ---------------------------------------------------------------- control (for benchmarks in another process)
    async def burst(self, n: int, options: dict[str, Any] | None = None) -> list[str]:
        """Dispatch n /create interactions back to back (payloads built first); returns their ids."""
        options = options or {"kind": "slogan", "prompt": "a lighthouse that serves tea"}
        await self.wait_connected()
        payloads = []
        for index in range(n):
            data = {
                "id": snowflake(),
                "name": "create",
                "type": 1,
                "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()],
            }
            payloads.append(interaction_payload(2, data, user=(str(950000000000000000 + index), f"user{index}")))
        frames = []
        for payload in payloads:
            self.seq += 1
            frames.append(
                (payload["id"], json.dumps({"op": 0, "t": "INTERACTION_CREATE", "s": self.seq, "d": payload}))
            )
        ws = self.sockets[-1]
        for payload in payloads:
            self.token_issued[payload["token"]] = time.monotonic()
        for interaction_id, frame in frames:
            self.dispatched_at[interaction_id] = time.monotonic()
            await ws.send_str(frame)
        self.burst_sent_ms = (time.monotonic() - self.dispatched_at[frames[0][0]]) * 1000
        return [payload["id"] for payload in payloads]

    async def _control_burst(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = await self.burst(int(body["n"]), body.get("options"))
        return _json({"ids": ids, "sent_ms": round(self.burst_sent_ms, 1)})

    async def _control_acks(self, request: web.Request) -> web.Response:
        """Milliseconds from dispatch to the interaction callback, per interaction id (null: not acked yet)."""
        ids = request.query.get("ids", "").split(",")
        acks = {
            i: (self.callback_at[i] - self.dispatched_at[i]) * 1000 if i in self.callback_at else None
            for i in ids
            if i in self.dispatched_at
        }
        return _json({"acks": acks, "connected": self._connected.is_set()})

    # ---------------------------------------------------------------- REST
    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if request.path == "/gateway" or request.path.startswith("/_fake/"):
            return await handler(request)
        body: Any = None
        files: dict[str, bytes] = {}
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "")
        if raw and ctype.startswith("application/json"):
            body = json.loads(raw)
        elif raw and ctype.startswith("multipart/"):
            match = re.search(rb'name="payload_json".*?\r\n\r\n(.*?)\r\n--', raw, re.S)
            body = json.loads(match.group(1)) if match else {"multipart": True}
            boundary = ctype.partition("boundary=")[2].strip('"').encode()
            for part in raw.split(b"--" + boundary) if boundary else ():
                head, _, content = part.partition(b"\r\n\r\n")
                if name := re.search(rb'filename="([^"]+)"', head):
                    files[name.group(1).decode()] = content.removesuffix(b"\r\n")
        path = request.path.removeprefix("/api/v10")
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        self.requests.append(
            Recorded(
                request.method,
                path,
                dict(request.headers),
                body,
                dict(request.query),
                files=files,
                peer=f"{peer[0]}:{peer[1]}" if peer else "",
            )
        )
        if any(len(content) > self.upload_limit for content in files.values()):
            # Discord refuses a file over the guild's upload limit (interactions carry it as attachment_size_limit).
            return _json({"message": "Request entity too large", "code": 40005}, status=413)
        if (m := re.match(r"/webhooks/\d+/([^/]+)", path)) and self._expired(m.group(1)):
            # Discord: interaction tokens are valid for 15 minutes; then follow-ups and edits are refused.
            self.expired_uses.append(self.requests[-1])
            return _json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        for fault in self.faults:
            if (
                fault.hits < fault.times
                and fault.method == request.method
                and fault.pattern.search(path)
                and (fault.when is None or fault.when(body))
            ):
                fault.hits += 1
                return self._fault_response(fault)
        if _content_too_long(body) or (problem := form_problem(request.method, path, body)):
            self.invalid_forms.append((path, problem if not _content_too_long(body) else "content over 2000"))
            return _json({"message": "Invalid Form Body", "code": 50035}, status=400)
        limit_headers: dict[str, str] = {}
        key = self._bucket_key(request.method, path)
        if key is not None and self.limits is not None:
            size = self.limits.per_token if key[0] == "token" else self.limits.per_channel
            bucket = self.buckets.setdefault(key, Bucket(*size))
            allowed, remaining, reset_after = bucket.take(time.monotonic())
            limit_headers = {
                "X-RateLimit-Limit": str(bucket.limit),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                "X-RateLimit-Bucket": f"{key[0]}-{key[1]}",
            }
            if not allowed:
                self.violations.append(self.requests[-1])
                body = {"message": "You are being rate limited.", "retry_after": reset_after, "global": False}
                headers = {**limit_headers, "Retry-After": f"{reset_after:.3f}", "X-RateLimit-Scope": "user"}
                return _json(body, status=429, headers=headers | {"Via": "1.1 google"})
        request[_JSON_BODY] = body
        response = await handler(request)
        response.headers.update(limit_headers)
        return response

    def _expired(self, token: str) -> bool:
        issued = self.token_issued.get(token)
        return issued is not None and time.monotonic() - issued > self.token_ttl_s

    @staticmethod
    def _bucket_key(method: str, path: str) -> tuple[str, str] | None:
        """Which bucket a request draws on: its interaction token, or the channel it posts or edits in."""
        if m := re.fullmatch(r"/webhooks/\d+/([^/]+)(/.*)?", path):
            return "token", m.group(1)
        if method != "GET" and (m := re.fullmatch(r"/channels/(\d+)/messages(/\d+)?", path)):
            return "channel", m.group(1)
        return None

    def _fault_response(self, fault: Fault) -> web.Response:
        headers = {"X-RateLimit-Scope": "global" if fault.is_global else "user"}
        if fault.via:
            headers["Via"] = "1.1 google"
        if fault.status == 429:
            body = {
                "message": "You are being rate limited.",
                "retry_after": fault.retry_after,
                "global": fault.is_global,
            }
            headers["Retry-After"] = str(fault.retry_after)
            if not fault.is_global:
                headers["X-RateLimit-Remaining"] = "0"
                headers["X-RateLimit-Reset-After"] = str(fault.retry_after)
                headers["X-RateLimit-Bucket"] = "fake-bucket"
            return _json(body, status=429, headers=headers)
        if fault.code is not None:
            message = _ERROR_MESSAGES.get(fault.code, "fault")
            return _json({"message": message, "code": fault.code}, status=fault.status, headers=headers)
        if fault.status == 403:  # what Discord answers for a channel the bot can no longer see or post in
            return _json({"message": "Missing Access", "code": 50001}, status=403, headers=headers)
        return _json({"message": "fault", "code": 0}, status=fault.status, headers=headers)

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        method = request.method
        body = request[_JSON_BODY] or {}
        if method == "GET" and path == "/users/@me":
            return _json(BOT_USER)
        if method == "GET" and path == "/oauth2/applications/@me":
            return _json(
                {
                    "id": APP_ID,
                    "name": "Chorus",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": user_payload("930000000000000009", "owner"),
                    "verify_key": "00",
                    "flags": 0,
                }
            )
        if method == "GET" and path == "/gateway/bot":
            limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
            return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})
        if method == "GET" and path == "/gateway":
            return _json({"url": self.gateway_url})
        if method == "PUT" and re.fullmatch(r"/applications/\d+(/guilds/\d+)?/commands", path):
            commands = [
                {
                    "description": "",
                    **command,
                    "id": snowflake(),
                    "application_id": APP_ID,
                    "version": "1",
                    "default_member_permissions": None,
                }
                for command in body
            ]
            return _json(commands)
        if m := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", path):
            return self._callback(m.group(1), m.group(2), body)
        if m := re.fullmatch(r"/webhooks/\d+/([^/]+)/messages/([^/]+)", path):
            token, which = m.groups()
            message_id = self.originals.get(token) if which == "@original" else which
            if message_id is None or message_id not in self.messages:
                return _json({"message": "Unknown Message", "code": 10008}, status=404)
            if which == "@original" and method != "GET":  # reading it leaves it loading
                self.loading.discard(token)
            if method == "DELETE":
                self.messages.pop(message_id)
                self.deleted.add(message_id)
                return web.Response(status=204)
            if method == "PATCH":
                message = self._edit(message_id, body)
                return _json(message, headers=self.rate_limit_headers)
            return _json(self.messages[message_id])
        if m := re.fullmatch(r"/webhooks/\d+/([^/]+)", path):
            token = m.group(1)
            if token in self.loading and self.originals.get(token) in self.messages:
                # Discord: a follow-up to a deferred response that is still loading edits that loading message;
                # the follow-up's ephemeral flag is ignored, the deferred response's is kept.
                self.loading.discard(token)
                message = self._edit(self.originals[token], {k: v for k, v in body.items() if k != "flags"})
                return _json(message, headers=self.rate_limit_headers)
            message = self._new_message(CHANNEL_ID, body)
            self.followups.setdefault(token, []).append(message["id"])
            return _json(message, headers=self.rate_limit_headers)
        if m := re.fullmatch(r"/channels/(\d+)/messages/(\d+)/threads", path):
            if m.group(1) in self.threads:  # Discord has no threads inside threads
                return _json({"message": "Cannot execute action on this channel type", "code": 50024}, status=400)
            thread_id = snowflake()
            thread = {
                "id": thread_id,
                "type": 11,
                "guild_id": GUILD_ID,
                "parent_id": m.group(1),
                "owner_id": BOT_ID,
                "name": body.get("name", "thread"),
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": body.get("auto_archive_duration", 1440),
                    "archive_timestamp": _now_iso(),
                    "locked": False,
                },
                "message_count": 0,
                "member_count": 1,
                "rate_limit_per_user": 0,
                "flags": 0,
            }
            self.threads[thread_id] = thread
            return _json(thread)
        if method == "POST" and path == "/users/@me/channels":
            user_id = str(body.get("recipient_id"))
            dm_id = next((dm for dm, user in self.dms.items() if user == user_id), None) or snowflake()
            self.dms[dm_id] = user_id
            return _json({"id": dm_id, "type": 1, "last_message_id": None, "recipients": [user_payload(user_id, "u")]})
        if (m := re.fullmatch(r"/channels/(\d+)/messages", path)) and method == "POST":
            if m.group(1) in self.no_send:
                return _json({"message": "Missing Permissions", "code": 50013}, status=403)
            if self.dms.get(m.group(1)) in self.dms_closed:
                return _json({"message": "Cannot send messages to this user", "code": 50007}, status=403)
            return _json(self._new_message(m.group(1), body))
        if (m := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", path)) and method == "PATCH":
            message = self.messages.get(m.group(2))
            # Discord: ephemeral messages exist for their interaction's token only; channel endpoints do not see them.
            if message is None or int(message.get("flags") or 0) & 64:
                return _json({"message": "Unknown Message", "code": 10008}, status=404)
            if (message.get("author") or {}).get("id") != BOT_USER["id"]:
                return _json({"message": "Cannot edit a message authored by another user", "code": 50005}, status=403)
            self.channel_edits.append((m.group(2), dict(body)))
            message.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
            # Assumed, not documented: a deferred response given content this way shows it instead of "thinking…".
            message["flags"] = int(message.get("flags") or 0) & ~128
            return _json(message)
        if (m := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", path)) and method == "DELETE":
            if self.messages.pop(m.group(2), None) is None:
                return _json({"message": "Unknown Message", "code": 10008}, status=404)
            self.deleted.add(m.group(2))
            return web.Response(status=204)
        return _json({"message": f"404: Not Found ({method} {path})", "code": 0}, status=404)

    def _edit(self, message_id: str, body: dict[str, Any]) -> dict[str, Any]:
        message = self.messages[message_id]
        message.update({k: v for k, v in body.items() if k in ("content", "embeds", "components", "flags")})
        message["flags"] = int(message.get("flags") or 0) & ~128  # no longer loading
        message["edited_timestamp"] = _now_iso()
        return message

    def visible(self, token: str) -> dict[str, Any] | None:
        """The message a user sees as the answer to an interaction: its original response, if not deleted."""
        message_id = self.originals.get(token)
        return self.messages.get(message_id) if message_id is not None else None

    def _callback(self, interaction_id: str, token: str, body: dict[str, Any]) -> web.Response:
        self.callback_at.setdefault(interaction_id, time.monotonic())
        kind = body.get("type")
        data = body.get("data") or {}
        interaction: dict[str, Any] = {"id": interaction_id, "type": 2}
        resource: dict[str, Any] | None = None
        if kind in (4, 5):
            message = self._new_message(
                CHANNEL_ID, data if kind == 4 else {"content": "", "flags": data.get("flags", 0) | 128}
            )
            self.originals[token] = message["id"]
            if kind == 5:
                self.loading.add(token)
            interaction.update(
                response_message_id=message["id"],
                response_message_loading=kind == 5,
                response_message_ephemeral=bool(data.get("flags", 0) & 64),
            )
            resource = {"type": kind, "message": message}
        elif kind in (6, 7):
            resource = {"type": kind}
        payload: dict[str, Any] = {"interaction": interaction}
        if resource is not None:
            payload["resource"] = resource
        return _json(payload)

    def _new_message(
        self, channel_id: str, body: dict[str, Any], author: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        message = message_payload(
            snowflake(),
            channel_id,
            author or BOT_USER,
            body.get("content") or "",
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            flags=body.get("flags", 0) or 0,
        )
        self.messages[message["id"]] = message
        return message

    # ---------------------------------------------------------------- gateway
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            op = data.get("op")
            self.gateway_ops.append(data)
            if op == 1:
                await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
            elif op == 2 and data["d"].get("intents", 0) & self.privileged_refused:
                await ws.close(code=4014, message=b"Disallowed intent(s).")
            elif op == 2:
                self.seq = 0
                self.replay.clear()
                self.session_id = f"fake-session-{next(self.sessions)}"
                ready = self._ready()
                if data["d"].get("shard"):
                    ready["shard"] = data["d"]["shard"]
                await self._send(ws, "READY", ready)
                await self._send(ws, "GUILD_CREATE", self._guild())
                self._connected.set()
            elif op == 6 and data["d"].get("session_id") != self.session_id:
                await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            elif op == 6:
                after = int(data["d"].get("seq") or 0)
                for seq, frame in list(self.replay):
                    if seq > after:
                        await ws.send_str(frame)
                await self._send(ws, "RESUMED", {})
                self._connected.set()
        self.close_codes.append(ws.close_code)
        if ws in self.sockets:
            self.sockets.remove(ws)
        return ws

    def _ready(self) -> dict[str, Any]:
        return {
            "v": 10,
            "user": BOT_USER,
            "guilds": [{"id": GUILD_ID, "unavailable": True}],
            "session_id": self.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": APP_ID, "flags": 0},
            "private_channels": [],
            "relationships": [],
        }

    def _guild(self) -> dict[str, Any]:
        return {
            "id": GUILD_ID,
            "name": "Fake Guild",
            "icon": None,
            "owner_id": "930000000000000009",
            "roles": [
                {
                    "id": GUILD_ID,
                    "name": "@everyone",
                    "permissions": USER_PERMISSIONS,
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                },
                {
                    "id": BAKERS_ROLE_ID,
                    "name": "Bakers",
                    "permissions": "0",
                    "position": 1,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": True,
                    "flags": 0,
                },
            ],
            "emojis": [],
            "features": [],
            "member_count": 3,
            "members": [],
            "channels": [channel_payload(CHANNEL_ID)],
            "threads": self.guild_threads,
            "presences": [],
            "voice_states": [],
            "stickers": [],
            "large": False,
            "unavailable": False,
            "joined_at": _now_iso(),
            "preferred_locale": "en-US",
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "system_channel_flags": 0,
        }

    async def _send(self, ws: web.WebSocketResponse, event: str, data: Any) -> None:
        """Send a dispatch and keep it for replay: a frame lost with a dropped connection comes back on RESUME."""
        self.seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self.seq, "d": data})
        self.replay.append((self.seq, frame))
        del self.replay[:-1000]
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(frame)

    async def wait_connected(self, timeout_s: float = 20.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def dispatch(self, event: str, data: Any) -> None:
        """Send one DISPATCH to the connected client (waits until one is connected)."""
        await self.wait_connected()
        await self._send(self.sockets[-1], event, data)

    async def send_raw(self, text: str) -> None:
        await self.wait_connected()
        await self.sockets[-1].send_str(text)

    async def close_socket(self, code: int = 4000) -> None:
        """Drop the gateway connection the way Discord does on a restart; the client should RESUME."""
        self._connected.clear()
        ws = self.sockets[-1]
        await ws.close(code=code, message=b"fake close")

    # ---------------------------------------------------------------- interactions the tests send
    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: tuple[str, str] = ("940000000000000001", "alice"),
        moderator: bool = False,
        channel_id: str = CHANNEL_ID,
    ) -> dict[str, Any]:
        data = {
            "id": snowflake(),
            "name": name,
            "type": 1,
            "options": [
                {"name": k, "type": 4 if isinstance(v, int) else 3, "value": v} for k, v in (options or {}).items()
            ],
        }
        return await self.interact(2, data, user=user, moderator=moderator, channel_id=channel_id)

    async def click(
        self,
        message_id: str,
        custom_id: str,
        *,
        values: list[str] | None = None,
        user: tuple[str, str] = ("940000000000000001", "alice"),
    ) -> dict[str, Any]:
        message = self.messages[message_id]
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": 3 if values is not None else 2}
        if values is not None:
            data["values"] = values
        return await self.interact(3, data, user=user, message=message)

    async def submit_modal(
        self,
        custom_id: str,
        text: str,
        *,
        user: tuple[str, str] = ("940000000000000001", "alice"),
        more: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        values = {"text": text, **(more or {})}
        data = {
            "custom_id": custom_id,
            "components": [
                {"type": 1, "components": [{"type": 4, "custom_id": key, "value": value}]}
                for key, value in values.items()
            ],
        }
        return await self.interact(5, data, user=user)

    async def interact(
        self,
        kind: int,
        data: dict[str, Any],
        *,
        user: tuple[str, str],
        moderator: bool = False,
        message: dict[str, Any] | None = None,
        channel_id: str = CHANNEL_ID,
    ) -> dict[str, Any]:
        payload = interaction_payload(
            kind, data, user=user, moderator=moderator, message=message, channel_id=channel_id
        )
        if channel_id in self.threads:  # an interaction in a thread carries the thread channel (type 11)
            payload["channel"] = self.threads[channel_id]
        if channel_id in self.no_send:
            payload["app_permissions"] = str(1 << 10)  # View Channel, not Send Messages
        self.dispatched_at[payload["id"]] = time.monotonic()
        self.token_issued[payload["token"]] = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def user_message(
        self,
        content: str,
        *,
        user: tuple[str, str] = ("940000000000000001", "alice"),
        reply_to: str | None = None,
        mention: bool = False,
        channel_id: str = CHANNEL_ID,
    ) -> dict[str, Any]:
        message = message_payload(snowflake(), channel_id, user_payload(*user), content)
        message["guild_id"] = GUILD_ID
        message["member"] = {"roles": [], "joined_at": _now_iso(), "deaf": False, "mute": False, "flags": 0}
        if mention:
            message["mentions"] = [BOT_USER]
        if reply_to is not None:
            message["message_reference"] = {
                "message_id": reply_to,
                "channel_id": channel_id,
                "guild_id": GUILD_ID,
                "type": 0,
            }
            ref = self.messages.get(reply_to)
            message["referenced_message"] = ref
            if ref is not None and ref["author"]["id"] == BOT_ID:
                message["mentions"] = [BOT_USER]
                message["type"] = 19
        self.messages[message["id"]] = message
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def edit_message(self, message_id: str, content: str) -> dict[str, Any]:
        """Its author edits a message: the stored message takes the new content, and the gateway sends MESSAGE_UPDATE
        with the whole message, `edited_timestamp` set, and the same extra fields as MESSAGE_CREATE (guild_id,
        member), as Discord's Gateway Events reference describes Message Update. Also what Discord sends after Chorus
        edits one of its own posts."""
        message = self.messages[message_id]
        message.update(content=content, edited_timestamp=_now_iso())
        update = {**message, "guild_id": message.get("guild_id", GUILD_ID)}
        if str(message["author"]["id"]) != BOT_ID:
            update["member"] = {"roles": [], "joined_at": _now_iso(), "deaf": False, "mute": False, "flags": 0}
        await self.dispatch("MESSAGE_UPDATE", update)
        return update

    async def delete_message(self, message_id: str) -> None:
        """A message is deleted (by its author or a moderator): MESSAGE_DELETE carries only `id`, `channel_id` and
        `guild_id` (Gateway Events: Message Delete), never who deleted it or whose it was."""
        message = self.messages.pop(message_id)
        await self.dispatch(
            "MESSAGE_DELETE", {"id": message_id, "channel_id": message["channel_id"], "guild_id": GUILD_ID}
        )

    async def react(self, message_id: str, emoji: str, *, user_id: str = "940000000000000001") -> None:
        await self.dispatch(
            "MESSAGE_REACTION_ADD",
            {
                "user_id": user_id,
                "channel_id": CHANNEL_ID,
                "message_id": message_id,
                "guild_id": GUILD_ID,
                "emoji": {"id": None, "name": emoji},
                "type": 0,
                "burst": False,
                "message_author_id": BOT_ID,
                "member": member_payload(user_id, "alice"),
            },
        )


def message_payload(
    message_id: str,
    channel_id: str,
    author: dict[str, Any],
    content: str,
    *,
    embeds: list[Any] | None = None,
    components: list[Any] | None = None,
    flags: int = 0,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "channel_id": channel_id,
        "author": author,
        "content": content,
        "timestamp": _now_iso(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": embeds or [],
        "components": components or [],
        "pinned": False,
        "type": 0,
        "flags": flags,
    }


def interaction_payload(
    kind: int,
    data: dict[str, Any],
    *,
    user: tuple[str, str],
    moderator: bool = False,
    message: dict[str, Any] | None = None,
    channel_id: str = CHANNEL_ID,
    created_ms: float | None = None,
) -> dict[str, Any]:
    permissions = MOD_PERMISSIONS if moderator else USER_PERMISSIONS
    payload: dict[str, Any] = {
        "id": snowflake(created_ms),
        "application_id": APP_ID,
        "type": kind,
        "data": data,
        "guild_id": GUILD_ID,
        "channel_id": channel_id,
        "channel": channel_payload(channel_id),
        "member": member_payload(*user) | {"permissions": permissions},
        "token": f"tok-{snowflake()}",
        "version": 1,
        "app_permissions": str((1 << 11) | (1 << 10)),
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": GUILD_ID},
        "context": 0,
        "attachment_size_limit": 10 * 1024 * 1024,
    }
    if message is not None:
        payload["message"] = message
    return payload


# Discord's documented limits (Message, Embed, Component, Modal, Thread and Application Command resources).
_EMBED_LIMITS = {"title": 256, "description": 4096}
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def form_problem(method: str, path: str, body: Any) -> str:
    """What in a request body breaks one of Discord's documented limits ("" when nothing does)."""
    if method not in ("POST", "PATCH", "PUT") or body is None:
        return ""
    if re.fullmatch(r"/applications/\d+(/guilds/\d+)?/commands", path):
        return next(filter(None, (_command_problem(command) for command in body)), "")
    if not isinstance(body, dict):
        return ""
    if path.endswith("/threads"):
        return "" if 1 <= len(str(body.get("name", ""))) <= 100 else "thread name must be 1-100 characters"
    if path.endswith("/callback"):
        data = body.get("data") or {}
        if body.get("type") == 9:
            return _modal_problem(data)
        if body.get("type") == 8:
            choices = data.get("choices") or []
            if len(choices) > 25 or any(len(c["name"]) > 100 or len(str(c["value"])) > 100 for c in choices):
                return "autocomplete: at most 25 choices, name and value at most 100 characters"
            return ""
        return _message_problem(data)
    return _message_problem(body)


def _message_problem(message: dict[str, Any]) -> str:
    embeds = message.get("embeds") or []
    if len(embeds) > 10:
        return "more than 10 embeds"
    total = 0
    for embed in embeds:
        for key, limit in _EMBED_LIMITS.items():
            if len(embed.get(key) or "") > limit:
                return f"embed {key} over {limit}"
        footer = str((embed.get("footer") or {}).get("text") or "")
        author = str((embed.get("author") or {}).get("name") or "")
        fields = embed.get("fields") or []
        if len(footer) > 2048 or len(author) > 256 or len(fields) > 25:
            return "embed footer over 2048, author name over 256 or more than 25 fields"
        if any(len(f.get("name", "")) > 256 or len(f.get("value", "")) > 1024 for f in fields):
            return "embed field name over 256 or value over 1024"
        total += sum(len(embed.get(key) or "") for key in _EMBED_LIMITS) + len(footer) + len(author)
        total += sum(len(f.get("name", "")) + len(f.get("value", "")) for f in fields)
    if total > 6000:
        return "embeds over 6000 characters in all"
    rows = message.get("components") or []
    if len(rows) > 5:
        return "more than 5 action rows"
    for row in rows:
        items = row.get("components") or []
        if not 1 <= len(items) <= 5:
            return "an action row holds 1-5 components"
        for item in items:
            if len(item.get("custom_id", "")) > 100:
                return "custom_id over 100"
            if item.get("type") == 2 and len(item.get("label") or "") > 80:
                return "button label over 80"
            if item.get("type") == 3:
                if len(items) > 1:
                    return "a select must be alone in its row"
                options = item.get("options") or []
                if not 1 <= len(options) <= 25 or len(item.get("placeholder") or "") > 150:
                    return "a select has 1-25 options and a placeholder of at most 150"
                for option in options:
                    if not all(1 <= len(option.get(k) or "x") <= 100 for k in ("label", "value", "description")):
                        return "select option label, value or description over 100"
    return ""


def _modal_problem(modal: dict[str, Any]) -> str:
    if not 1 <= len(modal.get("title", "")) <= 45:
        return "modal title must be 1-45 characters"
    rows = modal.get("components") or []
    if not 1 <= len(rows) <= 5:
        return "a modal has 1-5 rows"
    for row in rows:
        for item in row.get("components") or [row.get("component") or {}]:
            if len(item.get("label") or "") > 45 or len(item.get("custom_id", "")) > 100:
                return "text input label over 45 or custom_id over 100"
            if len(item.get("value") or "") > 4000 or len(item.get("placeholder") or "") > 100:
                return "text input value over 4000 or placeholder over 100"
    return ""


def _command_problem(command: dict[str, Any]) -> str:
    name, description = str(command.get("name", "")), str(command.get("description", ""))
    if command.get("type", 1) == 1 and (not _COMMAND_NAME.match(name) or name != name.lower()):
        return f"command name {name!r}"
    if len(name) > 32 or len(description) > 100:
        return f"command {name}: name over 32 or description over 100"
    options = command.get("options") or []
    if len(options) > 25:
        return f"command {name}: more than 25 options"
    for option in options:
        if not _COMMAND_NAME.match(str(option.get("name", ""))) or len(option.get("description", "")) > 100:
            return f"command {name}: option {option.get('name')!r}"
        choices = option.get("choices") or []
        if len(choices) > 25 or any(len(c["name"]) > 100 or len(str(c["value"])) > 100 for c in choices):
            return f"command {name}: option {option.get('name')}: at most 25 choices of at most 100 characters"
        subcommands = option.get("options") or [] if option.get("type") in (1, 2) else []
        if problem := next(filter(None, (_command_problem(sub) for sub in subcommands)), ""):
            return problem
    return ""


def _content_too_long(body: Any) -> bool:
    """A message (or an interaction callback's message) whose content is over Discord's 2000 characters."""
    if not isinstance(body, dict):
        return False
    message = body.get("data") if isinstance(body.get("data"), dict) else body
    return len(str(message.get("content") or "")) > CONTENT_LIMIT


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py compares Content-Type to exactly "application/json", so no charset suffix.
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={**(headers or {}), "Content-Type": "application/json"}
    )


if __name__ == "__main__":
    asyncio.run(FakeDiscord().serve_forever())

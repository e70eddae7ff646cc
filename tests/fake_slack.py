"""A fake Slack on 127.0.0.1: the Web API, response_url, file uploads and a Socket Mode WebSocket.

The real slack_sdk / slack-bolt clients talk to it (`slack.api_base_url`). It records every request (method, path,
headers, parsed body), answers with realistic `ts` / `channel` values, injects faults (429 with Retry-After, API
errors) and, for Socket Mode, pushes envelopes, records acks and can drop the connection. Also: Slack's request
signing, so HTTP-mode tests send exactly what Slack sends.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import WSMsgType, web

TEAM = "T0CHORUS"
BOT_USER = "U0CHORUSBOT"
BOT_ID = "B0CHORUS"
BOT_TOKEN = "xoxb-1-chorus-test"
APP_TOKEN = "xapp-1-chorus-test"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
# Payloads carry a response_url; by default one on 127.0.0.1 where nothing listens, so no test reaches Slack.
NOWHERE = "http://127.0.0.1:1/response/none"


@dataclass
class Call:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    response: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """Every string in the body, for "was this ever sent" assertions."""
        return json.dumps(self.body, ensure_ascii=False)


@dataclass
class Fault:
    status: int = 429
    retry_after: float = 1.0
    error: str = ""


def sign(body: str, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack adds: v0 HMAC-SHA256 over `v0:{timestamp}:{body}` with the signing secret."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.faults: dict[str, list[Fault]] = {}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.tokens: dict[str, str] = {BOT_TOKEN: TEAM}
        self.acks: dict[str, dict[str, Any]] = {}
        self.ack_times: dict[str, float] = {}
        self.sent_times: dict[str, float] = {}
        self.connections = 0
        self.uploads: dict[str, bytes] = {}  # file id -> the bytes sent to its upload URL
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_ready = asyncio.Event()
        self._ts = itertools.count(1)
        self._base_ts = int(time.time())
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack_sdk GETs a few methods, users.info among them
        app.router.add_post("/response/{hook}", self._response_url)
        app.router.add_post("/upload/{file}", self._upload)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, hook: str = "") -> str:
        return f"{self.url}/response/{hook or uuid.uuid4().hex[:12]}"

    # -- faults and queries ------------------------------------------------------------------------------------

    def fail(
        self, method: str, *, times: int = 1, status: int = 429, retry_after: float = 1.0, error: str = ""
    ) -> None:
        """The next `times` calls of `method` answer 429 (with Retry-After) or, with `error`, `ok: false`."""
        self.faults.setdefault(method, []).extend(Fault(status, retry_after, error) for _ in range(times))

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def answered(self, method: str) -> list[Call]:
        """Calls of `method` that were not turned away by an injected fault."""
        return [call for call in self.calls_to(method) if not call.body.get("_faulted")]

    def new_ts(self) -> str:
        return f"{self._base_ts}.{next(self._ts):06d}"

    # -- Web API -----------------------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.text()
        if request.content_type == "application/json":
            return json.loads(raw or "{}")
        body: dict[str, Any] = dict(parse_qsl(raw, keep_blank_values=True))
        body.update(request.query)
        for key in ("blocks", "view", "attachments"):
            if isinstance(body.get(key), str) and body[key][:1] in "[{":
                body[key] = json.loads(body[key])
        return body

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await self._body(request)
        call = Call(method, request.path, dict(request.headers), body)
        self.calls.append(call)
        queued = self.faults.get(method)
        if queued:
            fault = queued.pop(0)
            body["_faulted"] = True
            if fault.error:
                return web.json_response({"ok": False, "error": fault.error})
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=fault.status,
                headers={"Retry-After": str(fault.retry_after)},
            )
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or body.get("token", "")
        answer = getattr(self, "_" + method.replace(".", "_"), None)
        call.response = answer(body, token) if answer is not None else {"ok": True}
        return web.json_response(call.response)

    def _auth_test(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        team = self.tokens.get(token)
        if team is None:
            return {"ok": False, "error": "invalid_auth"}
        return {
            "ok": True,
            "url": "https://chorus-test.slack.com/",
            "team": "Chorus Test",
            "user": "chorus",
            "team_id": team,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_postMessage(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        channel, ts = body.get("channel", ""), self.new_ts()
        message = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "ts": ts, "text": body.get("text", "")}
        if body.get("blocks"):
            message["blocks"] = body["blocks"]
        if body.get("thread_ts"):
            message["thread_ts"] = body["thread_ts"]
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        key = (body.get("channel", ""), body.get("ts", ""))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key].update({"text": body.get("text", ""), "blocks": body.get("blocks", [])})
        return {"ok": True, "channel": key[0], "ts": key[1], "text": body.get("text", "")}

    def _users_info(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        """U0BOB is "bob" (users:read)."""
        user_id = body.get("user", "")
        name = user_id.removeprefix("U0").lower()
        return {"ok": True, "user": {"id": user_id, "name": name, "profile": {"display_name": name, "real_name": ""}}}

    def _chat_postEphemeral(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        return {"ok": True, "message_ts": self.new_ts()}

    def _chat_startStream(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        channel, ts = body.get("channel", ""), self.new_ts()
        self.messages[(channel, ts)] = {"ts": ts, "text": body.get("markdown_text", ""), "streaming": True}
        return {"ok": True, "channel": channel, "ts": ts}

    def _chat_appendStream(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        key = (body.get("channel", ""), body.get("ts", ""))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key]["text"] += body.get("markdown_text", "")
        return {"ok": True, "channel": key[0], "ts": key[1]}

    def _chat_stopStream(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        key = (body.get("channel", ""), body.get("ts", ""))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key]["streaming"] = False
        return {"ok": True, "channel": key[0], "ts": key[1]}

    def _views_open(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        return {"ok": True, "view": {"id": "V" + uuid.uuid4().hex[:10].upper(), **(body.get("view") or {})}}

    _views_publish = _views_open

    def _apps_connections_open(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        if not token.startswith("xapp-"):
            return {"ok": False, "error": "not_allowed_token_type"}
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket?ticket={uuid.uuid4().hex}"}

    def _conversations_open(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        """The direct-message channel with one user (im:write): D + the user id."""
        users = body.get("users", "")
        return {"ok": True, "channel": {"id": "D" + users.removeprefix("U")}}

    def _files_getUploadURLExternal(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        file_id = "F" + uuid.uuid4().hex[:10].upper()
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        files = body.get("files")
        files = json.loads(files) if isinstance(files, str) else files or []
        return {"ok": True, "files": [{"id": f.get("id"), "title": f.get("title", "")} for f in files]}

    def _oauth_v2_access(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        team = "T0SECOND"
        bot_token = f"xoxb-2-{team.lower()}"
        self.tokens[bot_token] = team
        return {
            "ok": True,
            "app_id": "A0CHORUS",
            "authed_user": {"id": "U0INSTALLER"},
            "scope": "commands,chat:write",
            "token_type": "bot",
            "access_token": bot_token,
            "bot_user_id": BOT_USER,
            "team": {"id": team, "name": "Second"},
            "enterprise": None,
            "is_enterprise_install": False,
        }

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self.calls.append(Call("response_url", request.path, dict(request.headers), body))
        return web.Response(text="ok")

    async def _upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        self.uploads[request.match_info["file"]] = data
        self.calls.append(Call("upload", request.path, dict(request.headers), {"bytes": len(data)}))
        return web.Response(text="OK")

    # -- Socket Mode -------------------------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
                "connection_info": {"app_id": "A0CHORUS"},
            }
        )
        self._socket_ready.set()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    data = json.loads(message.data)
                    if "envelope_id" in data:
                        self.acks[data["envelope_id"]] = data
                        self.ack_times[data["envelope_id"]] = time.monotonic()
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            if not self._sockets:
                self._socket_ready.clear()
        return ws

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self._socket_ready.wait(), timeout_s)

    async def push(
        self, kind: str, payload: Mapping[str, Any], *, retry_attempt: int = 0, accepts_response_payload: bool = True
    ) -> str:
        """Send one envelope ("slash_commands", "interactive", "events_api") and return its envelope_id."""
        await self.wait_connected()
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": dict(payload),
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = "timeout" if retry_attempt else ""
        self.sent_times[envelope_id] = time.monotonic()
        await self._sockets[-1].send_json(envelope)
        return envelope_id

    async def push_many(self, kind: str, payloads: list[Mapping[str, Any]]) -> list[str]:
        """Send several envelopes back to back, serialized beforehand so that sending them costs little."""
        await self.wait_connected()
        ids = [str(uuid.uuid4()) for _ in payloads]
        frames = [
            json.dumps({"envelope_id": i, "type": kind, "payload": dict(p), "accepts_response_payload": True})
            for i, p in zip(ids, payloads, strict=True)
        ]
        ws = self._sockets[-1]
        for envelope_id, frame in zip(ids, frames, strict=True):
            self.sent_times[envelope_id] = time.monotonic()
            await ws.send_str(frame)
        return ids

    async def drop_socket(self) -> None:
        """Close every Socket Mode connection, as Slack does on a refresh or an outage."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"going away")


# -- what Slack sends ----------------------------------------------------------------------------------------------


def _name(user: str) -> str:
    """U0ALICE is "alice" wherever Slack sends a user name (slash commands, clicks, modals)."""
    return user.lower().removeprefix("u0")


def slash_body(command: str, text: str, *, user: str = "U0ALICE", channel: str = "C0GENERAL", **extra: str) -> dict:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "team_domain": "chorus-test",
        "channel_id": channel,
        "channel_name": "general",
        "user_id": user,
        "user_name": _name(user),
        "command": command,
        "text": text,
        "api_app_id": "A0CHORUS",
        "is_enterprise_install": "false",
        "response_url": extra.pop("response_url", NOWHERE),
        "trigger_id": "1337.42.abcdef",
        **extra,
    }


def form(body: Mapping[str, Any]) -> str:
    return urlencode(body)


def event_callback(event: Mapping[str, Any], *, event_id: str | None = None, team: str = TEAM) -> dict:
    return {
        "token": "legacy-verification-token",
        "team_id": team,
        "api_app_id": "A0CHORUS",
        "event": dict(event),
        "type": "event_callback",
        "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team,
                "user_id": BOT_USER,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def block_actions(
    message: Mapping[str, Any], element: Mapping[str, Any], *, user: str = "U0ALICE", channel: str = "C0GENERAL"
) -> dict:
    """A click on `element` (a button or select from the message's blocks, with the choice made)."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": _name(user), "name": _name(user), "team_id": TEAM},
        "api_app_id": "A0CHORUS",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel, "is_ephemeral": False},
        "trigger_id": "1337.42.fedcba",
        "team": {"id": TEAM, "domain": "chorus-test"},
        "channel": {"id": channel, "name": "general"},
        "message": dict(message),
        "response_url": NOWHERE,
        "actions": [{**element, "block_id": "b1", "action_ts": str(time.time())}],
    }


def find_element(message: Mapping[str, Any], action_id: str) -> dict:
    for block in message.get("blocks", []):
        for element in block.get("elements", []):
            if element.get("action_id") == action_id:
                return dict(element)
    raise AssertionError(f"no element {action_id!r} in the message")


def message_event(
    text: str,
    *,
    user: str = "U0ALICE",
    channel: str = "C0GENERAL",
    ts: str | None = None,
    thread_ts: str | None = None,
    parent_user_id: str | None = None,
    channel_type: str = "channel",
) -> dict:
    event = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts or f"{time.time():.6f}",
        "channel": channel,
        "channel_type": channel_type,
        "event_ts": f"{time.time():.6f}",
        "team": TEAM,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = parent_user_id or BOT_USER
    return event


def reaction_event(reaction: str, channel: str, ts: str, *, user: str = "U0BOB", added: bool = True) -> dict:
    return {
        "type": "reaction_added" if added else "reaction_removed",
        "user": user,
        "reaction": reaction,
        "item_user": BOT_USER,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": f"{time.time():.6f}",
    }


def view_submission(callback_id: str, metadata: str, values: Mapping[str, Mapping[str, Any]], *, user: str = "U0ALICE"):
    """A submitted modal; `values` maps block_id -> {action_id: state} as Slack sends them."""
    return {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "chorus-test"},
        "user": {"id": user, "username": _name(user), "name": _name(user), "team_id": TEAM},
        "api_app_id": "A0CHORUS",
        "token": "legacy-verification-token",
        "trigger_id": "1337.42.submit",
        "view": {
            "id": "V0MODAL",
            "team_id": TEAM,
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": metadata,
            "state": {"values": {block: dict(actions) for block, actions in values.items()}},
            "hash": "156772938.1827394",
        },
        "response_urls": [],
    }


def message_shortcut(text: str, *, user: str = "U0ALICE", channel: str = "C0GENERAL", author: str = "U0BOB") -> dict:
    return {
        "type": "message_action",
        "token": "legacy-verification-token",
        "action_ts": f"{time.time():.6f}",
        "team": {"id": TEAM, "domain": "chorus-test"},
        "user": {"id": user, "username": _name(user), "name": _name(user), "team_id": TEAM},
        "channel": {"id": channel, "name": "general"},
        "callback_id": "chorus_remix",
        "trigger_id": "1337.42.shortcut",
        "message_ts": "1700000000.000100",
        "message": {"type": "message", "user": author, "ts": "1700000000.000100", "text": text},
        "response_url": NOWHERE,
    }

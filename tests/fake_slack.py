"""A fake Slack on 127.0.0.1: the Web API, response_url, file uploads and a Socket Mode WebSocket.

The real slack_sdk / slack-bolt clients talk to it (`slack.api_base_url`). It records every request (method, path,
headers, parsed body), answers with realistic `ts` / `channel` values, injects faults (429 with Retry-After, API
errors) and, for Socket Mode, pushes envelopes, records acks and can drop the connection. Also: Slack's request
signing, so HTTP-mode tests send exactly what Slack sends.

It models the documented rules that bite: Block Kit's limits (a message over them is refused with
`invalid_blocks`) and, when given a `RateModel`, Slack's rate limits (one message a second per channel, method tiers
per workspace), answering a call over them with 429 and Retry-After and recording it in `violations`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
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
RESPONSE_URL_LIFETIME_S = 30 * 60


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


# docs.slack.dev/apis/web-api/rate-limits: limits apply per method per workspace per app, by the method's tier;
# posting is one message a second per channel, with short bursts allowed.
TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
METHOD_TIERS = {
    "chat.update": 3,
    "chat.delete": 3,
    "chat.postEphemeral": 4,
    "chat.appendStream": 4,
    "chat.stopStream": 4,
    "views.open": 4,
    "views.publish": 4,
    "users.info": 4,
    "files.getUploadURLExternal": 4,
    "files.completeUploadExternal": 4,
}
PER_CHANNEL = frozenset({"chat.postMessage", "chat.startStream"})  # each posts a new message in the channel


@dataclass
class RateModel:
    """Slack's rate limits on a clock `scale` times as long as Slack's (0.05: a Slack second lasts 50 ms).

    Buckets refill at the documented rate; `post_burst` messages may go at once in a channel ("short bursts >1
    allowed") and a tier's bucket holds `tier_burst_s` seconds of its rate ("bursts welcome"). Retry-After is in
    Slack seconds, rounded up to a whole second as Slack sends it.
    """

    scale: float = 1.0
    post_burst: float = 2.0
    tier_burst_s: float = 10.0

    def bucket(self, method: str) -> _Bucket | None:
        if method in PER_CHANNEL:
            return _Bucket(rate=1.0 / self.scale, capacity=self.post_burst)
        tier = METHOD_TIERS.get(method)
        if tier is None:
            return None
        per_second = TIER_PER_MINUTE[tier] / 60
        return _Bucket(rate=per_second / self.scale, capacity=max(1.0, per_second * self.tier_burst_s))


@dataclass
class _Bucket:
    rate: float  # tokens a (real) second
    capacity: float
    tokens: float = 0.0
    at: float = 0.0

    def __post_init__(self) -> None:
        self.tokens, self.at = self.capacity, time.monotonic()

    def take(self, now: float) -> float:
        """0 when a call may go now (and counts it); else the seconds until one may."""
        self.tokens = (
            self.capacity if self.tokens < 0 else min(self.capacity, self.tokens + (now - self.at) * self.rate)
        )
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


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
    def __init__(self, rates: RateModel | None = None) -> None:
        self.calls: list[Call] = []
        self.rates = rates
        self._buckets: dict[tuple[str, ...], _Bucket] = {}
        self.violations: list[Call] = []  # calls over a modelled rate limit (answered 429)
        self.refused: list[Call] = []  # calls Slack refuses for their content (invalid_blocks and friends)
        self.socket_closes: list[int | None] = []  # the close code of each Socket Mode connection that ended
        self.faults: dict[str, list[Fault]] = {}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.tokens: dict[str, str] = {BOT_TOKEN: TEAM}
        self.acks: dict[str, dict[str, Any]] = {}
        self.ack_times: dict[str, float] = {}
        self.sent_times: dict[str, float] = {}
        self.connections = 0
        self.uploads: dict[str, bytes] = {}  # file id -> the bytes sent to its upload URL
        self.response_urls: dict[str, float] = {}  # response_url hook -> when it was first used
        self.held: dict[str, asyncio.Event] = {}  # method -> calls of it wait for this (a slow Slack)
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

    def hold(self, method: str) -> asyncio.Event:
        """Calls of `method` go unanswered until the returned event is set, as when Slack is slow."""
        return self.held.setdefault(method, asyncio.Event())

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def answered(self, method: str) -> list[Call]:
        """Calls of `method` that were not turned away by an injected fault, a rate limit or a content check."""
        return [
            call
            for call in self.calls_to(method)
            if not any(call.body.get(mark) for mark in ("_faulted", "_limited", "_refused"))
        ]

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
        if method in self.held:
            await self.held[method].wait()
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
        limited = self._over_limit(method, self.tokens.get(token, TEAM), body)
        if limited:
            body["_limited"] = True
            self.violations.append(call)
            retry_after = max(1, math.ceil(limited / self.rates.scale)) if self.rates else 1
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(retry_after)}
            )
        problems = message_problems(method, body)
        if problems:
            body["_refused"] = True
            self.refused.append(call)
            call.response = {"ok": False, "error": problems[0][0], "response_metadata": {"messages": problems}}
            return web.json_response(call.response)
        answer = getattr(self, "_" + method.replace(".", "_"), None)
        call.response = answer(body, token) if answer is not None else {"ok": True}
        return web.json_response(call.response)

    def _over_limit(self, method: str, team: str, body: dict[str, Any]) -> float:
        """Seconds until `method` would be within Slack's limits again; 0 when this call is within them."""
        if self.rates is None:
            return 0.0
        key = (method, team, body.get("channel", "")) if method in PER_CHANNEL else (method, team)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self.rates.bucket(method)
            if bucket is None:
                return 0.0
            self._buckets[key] = bucket
        return bucket.take(time.monotonic())

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

    def _chat_delete(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        key = (body.get("channel", ""), body.get("ts", ""))
        if self.messages.pop(key, None) is None:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": key[0], "ts": key[1]}

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

    def _files_upload(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        """Retired for every app in November 2025: uploads go through files.getUploadURLExternal and
        files.completeUploadExternal (slack_sdk's files_upload_v2)."""
        return {"ok": False, "error": "method_deprecated"}

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
        """docs.slack.dev "Handling user interaction": a response_url takes at most 5 messages within 30 minutes of
        the payload that carried it; after that Slack answers 404 (`used_url`, `expired_url`)."""
        body = await self._body(request)
        call = Call("response_url", request.path, dict(request.headers), body)
        self.calls.append(call)
        hook = request.match_info["hook"]
        first = self.response_urls.setdefault(hook, call.at)
        uses = sum(1 for c in self.calls if c.method == "response_url" and c.path == request.path)
        refusal = "used_url" if uses > 5 else "expired_url" if call.at - first > RESPONSE_URL_LIFETIME_S else ""
        if refusal:
            body["_refused"] = True
            self.refused.append(call)
            return web.Response(status=404, text=refusal)
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
            self.socket_closes.append(ws.close_code)
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


# -- what Slack refuses ---------------------------------------------------------------------------------------------

# docs.slack.dev/reference/block-kit: the limits a message or view is checked against.
MESSAGE_BLOCKS, VIEW_BLOCKS = 50, 100
TEXT_LIMIT = 3000  # a text object; section text
MESSAGE_TEXT_LIMIT = 40_000  # the top-level `text` of a message
_LIMITS: dict[tuple[str, str], int] = {
    ("header", "text"): 150,
    ("button", "text"): 75,
    ("button", "value"): 2000,
    ("option", "text"): 75,
    ("option", "value"): 150,
    ("static_select", "placeholder"): 150,
    ("input", "label"): 2000,
    ("modal", "title"): 24,
    ("modal", "submit"): 24,
    ("modal", "close"): 24,
    ("modal", "private_metadata"): 3000,
}
_MESSAGE_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral", "chat.stopStream"})


def _text_of(value: Any) -> str:
    return value.get("text", "") if isinstance(value, dict) else str(value or "")


def block_problems(blocks: list[dict[str, Any]], limit: int) -> list[str]:
    """What Slack would object to in `blocks` (empty when they would be accepted)."""
    problems: list[str] = []
    if len(blocks) > limit:
        problems.append(f"no more than {limit} items allowed [json-pointer:/blocks]")

    def check(kind: str, field_name: str, value: Any, where: str) -> None:
        text = _text_of(value)
        most = _LIMITS.get((kind, field_name), TEXT_LIMIT)
        if len(text) > most:
            problems.append(f"must be less than {most + 1} characters [json-pointer:{where}/{field_name}]")
        if isinstance(value, dict) and not text:
            problems.append(f"must be more than 0 characters [json-pointer:{where}/{field_name}]")

    # block_id and action_id: at most 255 characters, and each unique within the message or view.
    ids: dict[str, set[str]] = {"block_id": set(), "action_id": set()}

    def check_id(name: str, value: Any, where: str) -> None:
        if value is None:
            return
        if len(str(value)) > 255:
            problems.append(f"must be less than 256 characters [json-pointer:{where}/{name}]")
        if value in ids[name]:
            problems.append(f"{name} {value!r} already exists [json-pointer:{where}/{name}]")
        ids[name].add(value)

    for i, block in enumerate(blocks):
        where = f"/blocks/{i}"
        kind = block.get("type", "")
        check_id("block_id", block.get("block_id"), where)
        element = block.get("element")
        if isinstance(element, dict):
            check_id("action_id", element.get("action_id"), f"{where}/element")
            if element.get("type") == "plain_text_input" and element.get("max_length", 0) > TEXT_LIMIT:
                problems.append(f"must be at most {TEXT_LIMIT} [json-pointer:{where}/element/max_length]")
        if "text" in block:
            check(kind, "text", block["text"], where)
        if kind == "header" and block["text"].get("type") != "plain_text":
            problems.append(f"must be plain_text [json-pointer:{where}/text]")
        if kind == "context" and len(block.get("elements", [])) > 10:
            problems.append(f"no more than 10 items allowed [json-pointer:{where}/elements]")
        if kind == "actions" and len(block.get("elements", [])) > 25:
            problems.append(f"no more than 25 items allowed [json-pointer:{where}/elements]")
        if kind == "input":
            check("input", "label", block.get("label"), where)
        for j, element in enumerate(block.get("elements", [])):
            inner = f"{where}/elements/{j}"
            element_kind = element.get("type", "")
            check_id("action_id", element.get("action_id"), inner)
            for name in ("text", "value", "placeholder"):
                if name in element:
                    check(element_kind, name, element[name], inner)
            options = element.get("options", [])
            if len(options) > 100:
                problems.append(f"no more than 100 items allowed [json-pointer:{inner}/options]")
            for k, option in enumerate(options):
                check("option", "text", option.get("text"), f"{inner}/options/{k}")
                check("option", "value", option.get("value"), f"{inner}/options/{k}")
    return problems


def message_problems(method: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(error, detail) pairs for a message or view Slack would refuse; empty when it would be accepted."""
    problems: list[tuple[str, str]] = []
    if method in _MESSAGE_METHODS:
        if len(str(body.get("text") or "")) > MESSAGE_TEXT_LIMIT:
            problems.append(("msg_too_long", f"text is over {MESSAGE_TEXT_LIMIT} characters"))
        blocks = body.get("blocks")
        if isinstance(blocks, list):
            problems += [("invalid_blocks", p) for p in block_problems(blocks, MESSAGE_BLOCKS)]
    elif method in ("views.open", "views.publish"):
        view = body.get("view") or {}
        problems += [("invalid_arguments", p) for p in block_problems(view.get("blocks", []), VIEW_BLOCKS)]
        if view.get("type") == "modal":
            for name in ("title", "submit", "close", "private_metadata"):
                text = _text_of(view.get(name))
                most = _LIMITS[("modal", name)]
                if len(text) > most:
                    problems.append(("invalid_arguments", f"must be less than {most + 1} characters [{name}]"))
    return problems


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


def message_changed_event(original: Mapping[str, Any], text: str) -> dict:
    """Slack's `message` event with subtype `message_changed` for an edit of `original` (a `message_event`), as
    docs.slack.dev/reference/events/message/message_changed shows it: hidden, stamped with the edit's own `ts`, the
    message as it is now in `message` (its original `ts`, `thread_ts` for a thread reply, and `edited`) and the one
    before in `previous_message`. Slack sends it for edits of thread replies too, under the same message.* events."""
    edited_at = f"{time.time():.6f}"
    keep = ("type", "user", "ts", "thread_ts", "parent_user_id", "bot_id", "team")
    before = {key: original[key] for key in (*keep, "text") if key in original}
    now = {key: original[key] for key in keep if key in original}
    now.update(text=text, edited={"user": original.get("user", ""), "ts": edited_at})
    return {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "message": now,
        "previous_message": before,
        "channel": original["channel"],
        "channel_type": original.get("channel_type", "channel"),
        "ts": edited_at,
        "event_ts": edited_at,
    }


def message_deleted_event(original: Mapping[str, Any]) -> dict:
    """Slack's `message` event with subtype `message_deleted` (docs.slack.dev/reference/events/message/
    message_deleted): hidden, the deleted message's `ts` as `deleted_ts`, the message itself in `previous_message`."""
    deleted_at = f"{time.time():.6f}"
    keep = ("type", "user", "text", "ts", "thread_ts", "parent_user_id", "bot_id", "team")
    return {
        "type": "message",
        "subtype": "message_deleted",
        "hidden": True,
        "channel": original["channel"],
        "channel_type": original.get("channel_type", "channel"),
        "ts": deleted_at,
        "deleted_ts": original["ts"],
        "event_ts": deleted_at,
        "previous_message": {key: original[key] for key in keep if key in original},
    }


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

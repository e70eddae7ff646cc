"""Interaction callbacks (the acks) written straight onto a few kept-alive HTTP/1.1 connections.

An ack is one small JSON POST whose answer Chorus only needs the status of. Sent through discord.py's webhook
adapter and aiohttp it costs about 0.3 ms of CPU; written here, about a third of that. With hundreds of interactions
arriving at once the event loop sends them one after another, so that cost is what the last one waits for.
Anything this client does not expect (a proxy, a response it cannot frame) is left to the ordinary aiohttp path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_log = logging.getLogger(__name__)

IDLE_S = 30.0  # a connection unused for longer is closed rather than reused (servers drop idle ones)
TIMEOUT_S = 10.0  # one callback's round trip, at most
_HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class CallbackError(Exception):
    """The callback was not delivered (the connection failed or the response could not be read)."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used_at = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class CallbackConnections:
    """POSTs interaction callbacks to Discord's API (`base_url`, e.g. https://discord.com/api/v10) on at most
    `limit` kept-alive connections; more callbacks than that wait for a connection to come free."""

    def __init__(self, base_url: str, user_agent: str, limit: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        default_port = self.port == (443 if self.tls else 80)
        authority = self.host if default_port else f"{self.host}:{self.port}"
        self._head = (
            f"Host: {authority}\r\nUser-Agent: {user_agent}\r\nContent-Type: application/json\r\n"
            "Connection: keep-alive\r\n"
        ).encode()
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self._open: set[_Connection] = set()

    async def post(self, interaction_id: int, token: str, payload: dict[str, Any]) -> Response:
        """Send one callback; returns the response (header names in lower case). Raises CallbackError if it was not
        sent."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        path = f"{self.prefix}/interactions/{interaction_id}/{token}/callback?with_response=1"
        request = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (path.encode(), self._head, len(body), body)
        async with self._slots:
            connection, reused = await self._connection()
            try:
                return await asyncio.wait_for(self._exchange(connection, request), TIMEOUT_S)
            except _Stale:
                if not reused:
                    raise CallbackError("the connection closed before answering") from None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError) as exc:
                self._drop(connection)
                raise CallbackError(str(exc) or type(exc).__name__) from exc
            # A kept-alive connection the server had closed while idle: nothing was read, so send it once more.
            connection, _ = await self._connection(fresh=True)
            try:
                return await asyncio.wait_for(self._exchange(connection, request), TIMEOUT_S)
            except (_Stale, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                self._drop(connection)
                raise CallbackError(str(exc) or type(exc).__name__) from exc
            except TimeoutError as exc:
                self._drop(connection)
                raise CallbackError("timed out") from exc

    async def _connection(self, fresh: bool = False) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle and not fresh:
            connection = self._idle.pop()
            if now - connection.used_at < IDLE_S and not connection.reader.at_eof():
                return connection, True
            self._drop(connection)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
                ),
                TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:
            raise CallbackError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        connection = _Connection(reader, writer)
        self._open.add(connection)
        return connection, False

    async def _exchange(self, connection: _Connection, request: bytes) -> Response:
        connection.writer.write(request)
        try:
            head = await connection.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                self._drop(connection)
                raise _Stale from None
            raise
        if len(head) > _HEAD_LIMIT:
            raise ValueError("response head too long")
        status_line, *lines = head[:-4].split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = await self._chunked(connection.reader)
        elif b"content-length" in headers:
            body = await connection.reader.readexactly(int(headers[b"content-length"]))
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # framed by the server closing the connection
            body = await connection.reader.read()
            headers[b"connection"] = b"close"
        if headers.get(b"connection", b"").lower() == b"close":
            self._drop(connection)
        else:
            connection.used_at = time.monotonic()
            self._idle.append(connection)
        return Response(status, {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}, body)

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                await _trailers(reader)
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def _drop(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()

    async def close(self) -> None:
        self._idle.clear()
        for connection in list(self._open):
            self._drop(connection)


async def _trailers(reader: asyncio.StreamReader) -> None:
    """Skip the trailer section after the last chunk (usually just the empty line)."""
    while (await reader.readuntil(b"\r\n")) != b"\r\n":
        pass


class _Stale(Exception):
    """The server closed a kept-alive connection before answering: nothing was read."""

"""RemoteGenerator: the Generator protocol over an OpenAI-compatible server (chorus serve, vLLM, SGLang, TGI).

Streams `POST {base}/chat/completions` with `stream: true` and turns the SSE deltas back into Chunks. Chorus'
own extensions (queue position, exact finish reason and token count, time budget) travel in a `chorus` field that
other servers ignore; without them, finish reasons come from OpenAI's and tokens are counted one per delta.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

import httpx

from generation.types import (
    Chunk,
    FinishReason,
    GenerationError,
    GenerationRequest,
    GeneratorBusy,
    Health,
    ModelUnavailable,
)

_log = logging.getLogger(__name__)

_FINISH_REASONS: frozenset[str] = frozenset(get_args(FinishReason))
# A server that does not know the `chorus.time_budget_s` extension is cut off this long after the budget.
TIME_BUDGET_GRACE_S = 1.0
HEALTH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _Done:
    """The end of an HTTP stream: the Chorus finish reason (or None if the server stopped without one)."""

    finish: FinishReason | None
    tokens: int | None = None
    error: str | None = None
    prompt_tokens: int | None = None


@dataclass
class _Call:
    """One request in flight: the task that reads its HTTP stream and where that task puts what it read."""

    events: asyncio.Queue[Chunk | _Done | BaseException]
    reader: asyncio.Task[None] | None = None
    aborted: bool = False


class RemoteGenerator:
    """A Generator whose work happens on an OpenAI-compatible HTTP server; see the module docstring."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_retries: int = 3,
        backoff_s: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.connect_retries = connect_retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._has_key = bool(api_key)
        # No connection cap: the server's bounded queue decides who waits, and answers "busy" at once when full.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            headers=headers,
            transport=transport,
        )
        self._calls: dict[str, _Call] = {}
        self._model_lock = asyncio.Lock()
        self._closed = False

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield the server's chunks; raises GeneratorBusy (429), ModelUnavailable (down, 503), GenerationError."""
        if self._closed:
            raise GenerationError("The generator is closed.")
        rid = request.request_id
        # The time budget covers the whole request, the model-name lookup of a first request included.
        deadline = asyncio.get_running_loop().time() + request.time_budget_s + TIME_BUDGET_GRACE_S
        try:
            async with asyncio.timeout_at(deadline):
                body = await self._body(request)
        except TimeoutError:
            raise GenerationError(
                f"The generation server at {self.base_url} did not answer within {request.time_budget_s:g} s "
                "(generation.time_budget_s)."
            ) from None
        call = _Call(events=asyncio.Queue())
        self._calls[rid] = call
        call.reader = asyncio.create_task(self._read(rid, body, call), name=f"remote-{rid}")
        tokens = 0
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await call.events.get()
                except TimeoutError:
                    yield Chunk(request_id=rid, finish_reason="time", tokens=tokens)
                    return
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, _Done):
                    if event.finish is None:
                        if call.aborted:
                            yield Chunk(request_id=rid, finish_reason="abort", tokens=tokens)
                            return
                        raise GenerationError(f"The generation server at {self.base_url} ended the stream early.")
                    tokens = max(tokens, event.tokens or 0)
                    yield Chunk(
                        request_id=rid,
                        finish_reason=event.finish,
                        error=event.error,
                        tokens=tokens,
                        prompt_tokens=event.prompt_tokens,
                    )
                    return
                if event.text:
                    tokens += 1
                    yield Chunk(request_id=rid, text=event.text, tokens=tokens)
                else:
                    yield event
        finally:
            self._calls.pop(rid, None)
            if not call.reader.done():
                call.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call.reader

    async def abort(self, request_id: str) -> None:
        """Close the request's HTTP stream (chorus serve aborts on disconnect); its stream ends with 'abort'."""
        call = self._calls.get(request_id)
        if call is None or call.reader is None or call.reader.done():
            return
        call.aborted = True
        call.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call.reader

    async def health(self) -> Health:
        """GET {base}/../health (chorus serve, vLLM, TGI), then {base}/models, which needs the API key where the
        server asks for one, so a missing or wrong key shows here rather than at the first request; never raises."""
        if self._closed:
            return Health(ok=False, detail="closed", model=self.model or "")
        root = httpx.URL(self.base_url + "/").join("../health")
        try:
            response = await self._client.get(root, timeout=HEALTH_TIMEOUT_S)
            listed = await self._client.get(f"{self.base_url}/models", timeout=HEALTH_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return Health(ok=False, detail=self._unreachable(exc), model=self.model or "")
        if listed.status_code in (401, 403):
            sent = "the API key was refused" if self._has_key else "no API key was sent"
            detail = _error_message(listed) or f"HTTP {listed.status_code}"
            return Health(
                ok=False,
                detail=f"{self.base_url}/models: {sent} (HTTP {listed.status_code}: {detail}); set "
                "generation.api_key_env to the variable that holds the server's key",
                model=self.model or "",
            )
        if response.status_code in (404, 405):
            response = listed
        info = _json_object(response)
        model = info.get("model") if isinstance(info.get("model"), str) else None
        if model is None and isinstance(info.get("data"), list) and info["data"]:
            model = str(info["data"][0].get("id", "")) if isinstance(info["data"][0], dict) else None
        model = self.model or model or ""
        if response.status_code != 200:
            detail = _error_message(response) or f"HTTP {response.status_code}"
            return Health(ok=False, detail=f"{self.base_url}: {detail}", model=model)
        detail = str(info["detail"]) if isinstance(info.get("detail"), str) else "ok"
        return Health(ok=True, detail=f"{self.base_url}: {detail}", model=model or "remote")

    async def close(self) -> None:
        """Abort what is in flight and close the HTTP client."""
        self._closed = True
        for request_id in list(self._calls):
            await self.abort(request_id)
        await self._client.aclose()

    # -- the HTTP side ---------------------------------------------------------------------------------------------

    async def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": await self._model_name(),
            "messages": [{"role": message.role, "content": message.content} for message in request.messages],
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
            # The final event then carries usage: the prompt's token count, which only the server knows.
            "stream_options": {"include_usage": True},
            "chorus": {"priority": request.priority.name.lower(), "time_budget_s": request.time_budget_s},
        }
        if request.conversation_key:
            body["chorus"]["conversation"] = request.conversation_key
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if request.repetition_penalty != 1.0:  # vLLM's, SGLang's and TGI's name; sent only when set
            body["repetition_penalty"] = request.repetition_penalty
        return body

    async def _model_name(self) -> str:
        """The configured model, or the first one the server lists (asked once)."""
        async with self._model_lock:
            if self.model is None:
                response = await self._send(self._client.build_request("GET", f"{self.base_url}/models"))
                try:
                    self._raise_for_status(response, await response.aread())
                finally:
                    await response.aclose()
                models = _json_object(response).get("data")
                if not isinstance(models, list) or not models or not isinstance(models[0], dict):
                    raise ModelUnavailable(f"The generation server at {self.base_url} lists no models.")
                self.model = str(models[0].get("id", ""))
            return self.model

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send, retrying only when the connection could not be made (nothing reached the server)."""
        for attempt in range(self.connect_retries + 1):
            try:
                return await self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == self.connect_retries:
                    raise ModelUnavailable(self._unreachable(exc)) from None
                _log.info("cannot connect to %s (%s); retry %d", self.base_url, exc, attempt + 1)
                await asyncio.sleep(self.backoff_s * 2**attempt)
            except httpx.TimeoutException as exc:
                raise GenerationError(self._timed_out(exc)) from None
            except httpx.HTTPError as exc:
                raise GenerationError(f"The generation server at {self.base_url} failed: {exc}") from None
        raise AssertionError("unreachable")

    async def _read(self, rid: str, body: dict[str, Any], call: _Call) -> None:
        """Read one SSE stream into call.events; cancelling this task closes the connection."""
        try:
            request = self._client.build_request("POST", f"{self.base_url}/chat/completions", json=body)
            response = await self._send(request)
            try:
                if response.status_code != 200:
                    self._raise_for_status(response, await response.aread())
                await self._read_events(rid, response, call)
            finally:
                await response.aclose()
        except asyncio.CancelledError:
            call.events.put_nowait(_Done(finish=None))
            raise
        except httpx.TimeoutException as exc:
            call.events.put_nowait(GenerationError(self._timed_out(exc)))
        except httpx.HTTPError as exc:
            call.events.put_nowait(GenerationError(f"The generation server at {self.base_url} failed: {exc}"))
        except GenerationError as exc:
            call.events.put_nowait(exc)
        except Exception as exc:
            _log.exception("reading the stream from %s failed", self.base_url)
            call.events.put_nowait(GenerationError(f"Reading from {self.base_url} failed: {type(exc).__name__}"))

    async def _read_events(self, rid: str, response: httpx.Response, call: _Call) -> None:
        done = _Done(finish=None)
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, `: comments`, `event:` and `id:` fields
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                event = json.loads(data)
            except ValueError:
                _log.warning("ignoring a malformed event from %s: %.80s", self.base_url, data)
                continue
            if not isinstance(event, dict):
                continue
            if "error" in event:
                error = event["error"]
                message = error.get("message") if isinstance(error, dict) else str(error)
                done = _Done(finish="error", error=str(message or "the server reported an error"))
                break
            chorus = event.get("chorus")
            extension: dict[str, Any] = chorus if isinstance(chorus, dict) else {}
            choices = event.get("choices") or []
            if not choices:
                position = extension.get("queue_position")
                if isinstance(position, int):
                    eta = extension.get("eta_s")
                    call.events.put_nowait(
                        Chunk(request_id=rid, queue_position=position, eta_s=eta if _is_number(eta) else None)
                    )
                usage = event.get("usage")
                if isinstance(usage, dict) and done.finish:
                    done = _with_usage(done, usage)
                continue
            choice = choices[0] if isinstance(choices[0], dict) else {}
            raw_delta = choice.get("delta")
            delta: dict[str, Any] = raw_delta if isinstance(raw_delta, dict) else {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                call.events.put_nowait(Chunk(request_id=rid, text=text))
            if choice.get("finish_reason"):
                done = _finish(choice["finish_reason"], extension)
        call.events.put_nowait(done)

    def _raise_for_status(self, response: httpx.Response, content: bytes) -> None:
        status = response.status_code
        if status < 400:
            return
        message = _error_message(response) or _plain_text(content) or response.reason_phrase or f"HTTP {status}"
        where = f"The generation server at {self.base_url}"
        if status == 429:
            raise GeneratorBusy(message, retry_after_s=_retry_after_s(response.headers.get("Retry-After")))
        if status == 401 or status == 403:
            raise GenerationError(f"{where} refused the API key (HTTP {status}): {message}")
        if status == 503:
            raise ModelUnavailable(f"{where} has no model ready (HTTP 503): {message}")
        if status < 500:
            raise GenerationError(f"{where} rejected the request (HTTP {status}): {message}")
        raise GenerationError(f"{where} failed (HTTP {status}): {message}")

    def _unreachable(self, exc: httpx.HTTPError) -> str:
        cause = "connection timed out" if isinstance(exc, httpx.TimeoutException) else _reason(exc)
        return (
            f"Cannot reach the generation server at {self.base_url} ({cause}). Is `chorus serve` running? "
            "Check generation.url, or leave it empty to generate in this process."
        )

    def _timed_out(self, exc: httpx.TimeoutException) -> str:
        kind = type(exc).__name__.removesuffix("Timeout").lower() or "request"
        return f"The generation server at {self.base_url} did not answer within {self.timeout_s:g} s ({kind} timeout)."


def _finish(reason: object, extension: Mapping[str, Any]) -> _Done:
    """A Chorus finish reason: the server's own from the extension, else OpenAI's mapped back."""
    tokens = extension.get("tokens") if isinstance(extension.get("tokens"), int) else None
    error = extension.get("error") if isinstance(extension.get("error"), str) else None
    exact = extension.get("finish_reason")
    if isinstance(exact, str) and exact in _FINISH_REASONS:
        return _Done(finish=exact, tokens=tokens, error=error)  # type: ignore[arg-type]
    mapped: FinishReason = "length" if reason == "length" else "abort" if reason == "abort" else "stop"
    return _Done(finish=mapped, tokens=tokens, error=error)


def _with_usage(done: _Done, usage: Mapping[str, Any]) -> _Done:
    """The end of a stream with the counts of its usage event (OpenAI's `stream_options.include_usage`)."""
    completion, prompt = usage.get("completion_tokens"), usage.get("prompt_tokens")
    return _Done(
        finish=done.finish,
        tokens=completion if _is_count(completion) else done.tokens,
        error=done.error,
        prompt_tokens=prompt if _is_count(prompt) else done.prompt_tokens,
    )


def _retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date (RFC 9110); None when absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_message(response: httpx.Response) -> str:
    """OpenAI's `{"error": {"message"}}`, TGI's `{"error": "..."}` or FastAPI's `{"detail": ...}`."""
    body = _json_object(response)
    error = body.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if body.get("detail"):
        return str(body["detail"])
    return ""


def _plain_text(content: bytes) -> str:
    """A plain-text error body, on one line and cut short; "" for an HTML page (a proxy's 502 or 504 page)."""
    text = " ".join(content.decode(errors="replace").split())
    return "" if text.startswith("<") else text[:300]


def _reason(exc: BaseException) -> str:
    """The root cause of a connect error in a few words ("connection refused", "unknown host", ...)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "unknown host"
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

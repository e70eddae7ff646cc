"""`chorus serve`: an OpenAI-compatible HTTP service over any Generator (aiohttp).

Routes: `POST /v1/chat/completions` (JSON or SSE stream), `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`,
`GET /metrics`; `POST /v1/completions` (legacy) answers a 404 that points at chat completions.
Errors use OpenAI's body, `{"error": {"message", "type", "param", "code"}}`, so OpenAI clients show them as-is.

Chorus extensions ride in a `chorus` field that OpenAI clients ignore:
- request: `"chorus": {"priority": "interactive"|"brainstorm"|"scheduled", "conversation": str, "time_budget_s": n}`;
- stream: while queued, chunks with empty `choices` and `"chorus": {"queue_position", "eta_s"}`, only to a request
  that carries `chorus` (stock clients read `choices[0]` of every chunk; they get SSE comments instead);
- the final chunk and the non-stream body: `"chorus": {"finish_reason", "tokens"}` with Chorus' own finish reason,
  because OpenAI's `finish_reason` has no words for a time budget or an abort (see FINISH_REASONS).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import signal
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from generation.serve_embeddings import register_embeddings
from generation.types import (
    ChatMessage,
    Chunk,
    Embedder,
    FinishReason,
    GenerationError,
    GenerationRequest,
    Generator,
    GeneratorBusy,
    ModelUnavailable,
    Priority,
    RequestTooLarge,
    Role,
)

_log = logging.getLogger(__name__)

# Chorus finish reason → OpenAI's. A time budget truncates like max_tokens does, so both are "length". An abort
# only reaches a client that is still listening when the server shuts down or another caller aborted the request;
# its text is complete as far as it goes, so "stop". An error after some text is "stop" too (non-stream) or an
# error event (stream). The exact reason is always in the `chorus` extension.
FINISH_REASONS: Mapping[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "time": "length",
    "abort": "stop",
    "error": "stop",
}
ROLES: Mapping[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
PRIORITIES: Mapping[str, Priority] = {priority.name.lower(): priority for priority in Priority}
MAX_STOP_STRINGS = 16
PENALTIES = ("presence_penalty", "frequency_penalty")
# Retry-After for a busy generator that does not say how long to wait.
RETRY_AFTER_S = 1
SEED_RANGE = range(-(2**63), 2**64)
# nginx's code for "the client closed the connection before the answer"; only used as a metric label.
CLIENT_CLOSED = 499


class ApiError(Exception):
    """A request the service refuses, with the HTTP status and OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        reason: str = "invalid_request",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.reason = reason
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


@dataclass(frozen=True)
class ChatParams:
    """A parsed `POST /v1/chat/completions` body: the generation request plus how to answer it."""

    request: GenerationRequest
    stream: bool = False
    include_usage: bool = False
    # Queue positions stream as chunks with empty `choices`, which only clients that send `chorus` expect.
    queue_notes: bool = False


def parse_chat_request(
    body: object, *, model_name: str, max_tokens_limit: int = 2048, time_budget_s: float = 60.0
) -> ChatParams:
    """Validate an OpenAI chat completion body; raises ApiError naming the offending field."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "model must be a string.", param="model")
    if model is not None and model != model_name:
        raise ApiError(
            404,
            f"The model `{model}` does not exist. This server serves `{model_name}`.",
            param="model",
            code="model_not_found",
            reason="model_not_found",
        )
    messages = _messages(body.get("messages"))
    max_tokens_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, max_tokens_field, default=max_tokens_limit)
    # Without a limit from the client, generate until the end or until the context is full, as OpenAI does.
    fit_to_context = body.get(max_tokens_field) is None
    if max_tokens < 1:
        raise ApiError(400, f"{max_tokens_field} must be at least 1, not {max_tokens}.", param=max_tokens_field)
    if max_tokens > max_tokens_limit:
        raise ApiError(
            400,
            f"{max_tokens_field} is too large: {max_tokens}. This server allows at most {max_tokens_limit}.",
            param=max_tokens_field,
        )
    temperature = _number(body, "temperature", default=1.0)
    if not 0.0 <= temperature <= 2.0:
        raise ApiError(400, f"temperature must be between 0 and 2, not {temperature}.", param="temperature")
    top_p = _number(body, "top_p", default=1.0)
    if not 0.0 < top_p <= 1.0:
        raise ApiError(400, f"top_p must be greater than 0 and at most 1, not {top_p}.", param="top_p")
    # vLLM's, SGLang's and TGI's extension: above 1 discourages tokens the reply already used; 1 = off.
    repetition_penalty = _number(body, "repetition_penalty", default=1.0)
    if not 0.0 < repetition_penalty <= 10.0:
        raise ApiError(
            400,
            f"repetition_penalty must be greater than 0 and at most 10, not {repetition_penalty}.",
            param="repetition_penalty",
        )
    for name in PENALTIES:
        # Accepted (many clients send them by habit) but not applied: see docs/serve.md.
        penalty = _number(body, name, default=0.0)
        if not -2.0 <= penalty <= 2.0:
            raise ApiError(400, f"{name} must be between -2 and 2, not {penalty}.", param=name)
    _refuse_unsupported(body)
    n = _integer(body, "n", default=1)
    if n != 1:
        raise ApiError(400, f"n must be 1 (one choice per request), not {n}.", param="n", code="unsupported_value")
    seed = _integer(body, "seed", default=None) if body.get("seed") is not None else None
    if seed is not None and seed not in SEED_RANGE:
        raise ApiError(400, f"seed must be a 64-bit integer, not {seed}.", param="seed")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false.", param="stream")
    options = _object(body, "stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise ApiError(400, "stream_options.include_usage must be true or false.", param="stream_options")
    chorus = _object(body, "chorus")
    priority_name = chorus.get("priority", "interactive")
    if not isinstance(priority_name, str) or priority_name not in PRIORITIES:
        allowed = ", ".join(PRIORITIES)
        raise ApiError(400, f"chorus.priority must be one of {allowed}, not {priority_name!r}.", param="chorus")
    conversation = chorus.get("conversation", "")
    if not isinstance(conversation, str):
        raise ApiError(400, "chorus.conversation must be a string.", param="chorus")
    budget = chorus.get("time_budget_s", time_budget_s)
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not (0 < budget < math.inf):
        message = f"chorus.time_budget_s must be a positive number of seconds, not {budget!r}."
        raise ApiError(400, message, param="chorus")
    request = GenerationRequest(
        messages=messages,
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=_stop(body.get("stop")),
        seed=seed,
        time_budget_s=min(float(budget), time_budget_s),
        priority=PRIORITIES[priority_name],
        conversation_key=conversation,
        fit_max_new_tokens=fit_to_context,
        repetition_penalty=repetition_penalty,
    )
    return ChatParams(
        request=request,
        stream=bool(stream),
        include_usage=bool(stream) and include_usage,
        queue_notes=body.get("chorus") is not None,
    )


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    """Refuse the OpenAI features this server lacks, since ignoring them would change what the client gets (tool
    calls, log probabilities, JSON, audio); their neutral values pass, because frameworks send those by default."""

    def refuse(param: str, message: str, code: str = "unsupported_parameter") -> None:
        raise ApiError(400, message, param=param, code=code)

    if body.get("tools"):
        refuse("tools", "tools are not supported: this server does not do tool (function) calling.")
    if (tool_choice := body.get("tool_choice")) not in (None, "none", "auto"):
        refuse("tool_choice", f"tool_choice {tool_choice!r} is not supported: this server does not call tools.")
    if body.get("functions"):
        refuse("functions", "functions are not supported: this server does not do function calling.")
    if body.get("function_call") not in (None, "none", "auto"):
        refuse("function_call", "function_call is not supported: this server does not do function calling.")
    if body.get("logprobs") not in (None, False):
        refuse("logprobs", "logprobs are not supported by this server.")
    if body.get("top_logprobs") not in (None, 0):
        refuse("top_logprobs", "top_logprobs needs logprobs, which this server does not support.")
    kind = _object(body, "response_format").get("type", "text")
    if kind != "text":
        message = f"response_format {kind!r} is not supported: this server answers in free text ('text') only."
        refuse("response_format", message, "unsupported_value")
    if _object(body, "logit_bias"):
        refuse("logit_bias", "logit_bias is not supported by this server; send an empty object or none.")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        message = f"modalities {modalities!r} is not supported: this server produces text only, not audio."
        refuse("modalities", message, "unsupported_value")
    if body.get("audio") is not None:
        refuse("audio", "audio output is not supported: this server produces text only.")


def _messages(value: object) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "messages must be a non-empty array of {role, content} objects.", param="messages")
    messages = []
    for index, item in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{where} must be an object with role and content.", param=where)
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:
            allowed = ", ".join(ROLES)
            raise ApiError(400, f"{where}.role must be one of {allowed}, not {role!r}.", param=f"{where}.role")
        messages.append(ChatMessage(ROLES[role], _content(item.get("content"), f"{where}.content")))
    return tuple(messages)


def _content(value: object, where: str) -> str:
    """A string, or OpenAI's list of text parts; anything else (images, audio, null, numbers) is refused."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ApiError(400, f"{where} must be a string (or a list of text parts).", param=where)
    texts = []
    for index, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        text = part.get("text") if isinstance(part, dict) else None
        if kind == "text" and isinstance(text, str):
            texts.append(text)
        elif isinstance(kind, str) and kind != "text":
            message = f"{where}[{index}] is a part of type {kind!r}; this server reads text only (type 'text')."
            raise ApiError(400, message, param=f"{where}[{index}]", code="unsupported_value")
        else:
            message = f'{where}[{index}] must be a text part, {{"type": "text", "text": "..."}}.'
            raise ApiError(400, message, param=f"{where}[{index}]")
    return "".join(texts)


def _integer(body: Mapping[str, Any], name: str, *, default: int | None) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer, not {value!r}.", param=name)
    return value


def _number(body: Mapping[str, Any], name: str, *, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number, not {value!r}.", param=name)
    return float(value)


def _object(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"{name} must be an object.", param=name)
    return value


def _stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
        raise ApiError(400, "stop must be a string or an array of strings.", param="stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise ApiError(400, f"stop may hold at most {MAX_STOP_STRINGS} strings.", param="stop")
    return tuple(stop for stop in stops if stop)


class ServeMetrics:
    """Prometheus metrics in a registry of their own, so one process (or test) can build many apps."""

    def __init__(self, generator: Generator) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.queue_depth = Gauge("chorus_queue_depth", "Requests waiting in the generator's queue.", registry=registry)
        self.queue_depth.set_function(lambda: float(getattr(generator, "queue_depth", 0)))
        self.running = Gauge("chorus_running_requests", "Requests producing text right now.", registry=registry)
        self.tokens = Counter("chorus_generated_tokens", "Tokens generated (rate() gives tokens/s).", registry=registry)
        self.requests = Counter(
            "chorus_requests",
            "Chat completion requests by HTTP status (499: the client left before the end).",
            ["status"],
            registry=registry,
        )
        self.rejections = Counter("chorus_rejections", "Requests refused, by reason.", ["reason"], registry=registry)
        self.finished = Counter(
            "chorus_finished_requests", "Generations by Chorus finish reason.", ["reason"], registry=registry
        )
        self.ttft = Histogram(
            "chorus_ttft_seconds",
            "Time from request to first text, queueing included.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=registry,
        )
        self.itl = Histogram(
            "chorus_itl_seconds",
            "Time between consecutive pieces of text in one response.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )

    def reject(self, error: ApiError) -> None:
        self.rejections.labels(reason=error.reason).inc()
        self.requests.labels(status=str(error.status)).inc()


@dataclass
class _Progress:
    """What one response has produced so far, for the answer and the metrics."""

    received: float
    text: list[str]
    tokens: int = 0
    prompt_tokens: int = 0
    last_text_at: float | None = None
    finish: FinishReason | None = None
    error: str | None = None
    running: bool = False


def _json_line(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class _ChatService:
    """The route handlers, bound to one generator, model name, limits and metrics."""

    def __init__(
        self,
        generator: Generator,
        *,
        model_name: str,
        max_tokens_limit: int,
        time_budget_s: float,
        metrics: ServeMetrics,
    ) -> None:
        self.generator = generator
        self.model_name = model_name
        self.max_tokens_limit = max_tokens_limit
        self.time_budget_s = time_budget_s
        self.metrics = metrics
        self.created = int(time.time())

    def tokens_limit(self) -> int:
        """The most new tokens one request may ask for: the configured limit, lowered to what the generator holds
        per request (prompt included) once it says (the batching engine's max_len, known after loading)."""
        held = getattr(self.generator, "max_len", None)
        if isinstance(held, int) and not isinstance(held, bool) and held > 1:
            return min(self.max_tokens_limit, held - 1)
        return self.max_tokens_limit

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        progress = _Progress(received=time.monotonic(), text=[])
        try:
            params = parse_chat_request(
                await _json_body(request),
                model_name=self.model_name,
                max_tokens_limit=self.tokens_limit(),
                time_budget_s=self.time_budget_s,
            )
        except ApiError as error:
            self.metrics.reject(error)
            return error.response()
        rid = params.request.request_id
        kind = "chat.completion.chunk" if params.stream else "chat.completion"
        envelope = {
            "id": f"chatcmpl-{rid}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model_name,
            "system_fingerprint": None,
        }
        if params.include_usage:
            envelope["usage"] = None  # as OpenAI: every chunk has the field, and only the last one fills it
        stream = self.generator.stream(params.request)
        status = CLIENT_CLOSED
        refused = False
        try:
            if params.stream:
                response, status = await self._stream(request, params, envelope, stream, progress)
                return response
            response = await self._complete(envelope, stream, progress)
            status = response.status
            return response
        except ApiError as error:
            status = error.status
            if error.status == 500:
                progress.finish = "error"
            else:
                refused = True
                self.metrics.rejections.labels(reason=error.reason).inc()
            return error.response()
        finally:
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()
            if progress.finish is None and not refused:
                # The client left (the handler was cancelled or a write failed): free the generator's slot.
                progress.finish = "abort"
                await self.generator.abort(rid)
            if progress.running:
                self.metrics.running.dec()
            if progress.finish is not None:
                self.metrics.finished.labels(reason=progress.finish).inc()
            self.metrics.requests.labels(status=str(status)).inc()

    async def _next(self, stream: AsyncIterator[Chunk], progress: _Progress) -> Chunk:
        """The next chunk, with the generator's exceptions turned into the HTTP errors they mean."""
        try:
            chunk = await anext(stream)
        except StopAsyncIteration:
            raise ApiError(500, "The generator ended without a final chunk.", type="server_error") from None
        except GeneratorBusy as exc:
            # Retry-After is the wait the message states, so clients that honour it (OpenAI's do) wait that long.
            wait = RETRY_AFTER_S if exc.retry_after_s is None else max(1, math.ceil(exc.retry_after_s))
            raise ApiError(
                429,
                str(exc) or f"The server is busy. Try again in {wait} s.",
                type="rate_limit_error",
                code="queue_full",
                reason="queue_full",
                headers={"Retry-After": str(wait)},
            ) from None
        except RequestTooLarge as exc:
            raise ApiError(
                400, str(exc), param="messages", code="context_length_exceeded", reason="too_large"
            ) from None
        except ModelUnavailable as exc:
            raise ApiError(503, str(exc), type="server_error", code="model_unavailable", reason="unavailable") from None
        except GenerationError as exc:
            raise ApiError(500, str(exc), type="server_error", code="generation_failed", reason="error") from None
        except Exception as exc:
            _log.exception("the generator raised")
            raise ApiError(500, f"Internal error: {type(exc).__name__}", type="server_error", reason="error") from None
        self._observe(chunk, progress)
        return chunk

    def _observe(self, chunk: Chunk, progress: _Progress) -> None:
        if _is_queue_note(chunk):
            return
        now = time.monotonic()
        if not progress.running:
            progress.running = True
            self.metrics.running.inc()
        if chunk.text:
            if progress.last_text_at is None:
                self.metrics.ttft.observe(now - progress.received)
            else:
                self.metrics.itl.observe(now - progress.last_text_at)
            progress.last_text_at = now
            progress.text.append(chunk.text)
        if chunk.tokens > progress.tokens:
            self.metrics.tokens.inc(chunk.tokens - progress.tokens)
            progress.tokens = chunk.tokens
        if chunk.prompt_tokens is not None:
            progress.prompt_tokens = chunk.prompt_tokens
        if chunk.finish_reason is not None:
            progress.finish = chunk.finish_reason
            progress.error = chunk.error

    async def _complete(
        self, envelope: Mapping[str, Any], stream: AsyncIterator[Chunk], progress: _Progress
    ) -> web.Response:
        while progress.finish is None:
            try:
                await self._next(stream, progress)
            except ApiError as error:
                if not progress.text:
                    raise
                progress.finish, progress.error = "error", error.message
        text = "".join(progress.text)
        if progress.finish == "error":
            if not text:
                raise ApiError(
                    500, progress.error or "Generation failed.", type="server_error", code="generation_failed"
                )
            _log.warning("generation failed after %d tokens; answering with them: %s", progress.tokens, progress.error)
        body = {
            **envelope,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": FINISH_REASONS[progress.finish],
                }
            ],
            "usage": _usage(progress),
            "chorus": _final_extension(progress),
        }
        return web.json_response(body)

    async def _stream(
        self,
        request: web.Request,
        params: ChatParams,
        envelope: Mapping[str, Any],
        stream: AsyncIterator[Chunk],
        progress: _Progress,
    ) -> tuple[web.StreamResponse, int]:
        # The first chunk decides the status: a busy or missing generator is still a plain 429/503/500.
        chunk = await self._next(stream, progress)
        if chunk.finish_reason == "error" and not chunk.text:
            raise ApiError(500, chunk.error or "Generation failed.", type="server_error", code="generation_failed")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)

        def choice(delta: Mapping[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**envelope, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        try:
            await response.write(_json_line(choice({"role": "assistant", "content": ""})))
            while True:
                if _is_queue_note(chunk):
                    if params.queue_notes:
                        extension = {"queue_position": chunk.queue_position, "eta_s": chunk.eta_s}
                        await response.write(_json_line({**envelope, "choices": [], "chorus": extension}))
                    else:  # an SSE comment: every client skips it, and it keeps proxies from timing out the wait
                        await response.write(f": queue_position {chunk.queue_position}\n\n".encode())
                elif chunk.text:
                    await response.write(_json_line(choice({"content": chunk.text})))
                if chunk.finish_reason is not None:
                    break
                try:
                    chunk = await self._next(stream, progress)
                except ApiError as error:
                    progress.finish, progress.error = "error", error.message
                    await response.write(_json_line(error.body()))
                    await response.write(b"data: [DONE]\n\n")
                    return response, 200
            if progress.finish == "error":
                _log.warning("generation failed after %d tokens: %s", progress.tokens, progress.error)
                failure = ApiError(500, progress.error or "Generation failed.", type="server_error")
                await response.write(_json_line(failure.body()))
            else:
                final = choice({}, FINISH_REASONS[progress.finish or "stop"])
                await response.write(_json_line({**final, "chorus": _final_extension(progress)}))
            if params.include_usage:
                await response.write(_json_line({**envelope, "choices": [], "usage": _usage(progress)}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            _log.info("the client left during %s", envelope["id"])
            return response, CLIENT_CLOSED
        return response, 200

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "chorus"}

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def model(self, request: web.Request) -> web.Response:
        """`GET /v1/models/{id}` (OpenAI's `models.retrieve`); ids may contain slashes, like `org/name`."""
        wanted = request.match_info["model"]
        if wanted != self.model_name:
            return ApiError(
                404,
                f"The model `{wanted}` does not exist. This server serves `{self.model_name}`.",
                param="model",
                code="model_not_found",
                reason="model_not_found",
            ).response()
        return web.json_response(self._model_card())

    async def health(self, request: web.Request) -> web.Response:
        health = await self.generator.health()
        body = {"status": "ok" if health.ok else "unavailable", "model": self.model_name, "detail": health.detail}
        return web.json_response(body, status=200 if health.ok else 503)

    async def metrics_text(self, request: web.Request) -> web.Response:
        # Plain text format 0.0.4 unless the scraper asks for OpenMetrics.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.metrics.registry), headers={"Content-Type": content_type})


def _is_queue_note(chunk: Chunk) -> bool:
    return chunk.queue_position is not None and not chunk.text and chunk.finish_reason is None


def _usage(progress: _Progress) -> dict[str, int]:
    total = progress.prompt_tokens + progress.tokens
    return {"prompt_tokens": progress.prompt_tokens, "completion_tokens": progress.tokens, "total_tokens": total}


def _final_extension(progress: _Progress) -> dict[str, Any]:
    extension: dict[str, Any] = {"finish_reason": progress.finish, "tokens": progress.tokens}
    if progress.error:
        extension["error"] = progress.error
    return extension


async def _json_body(request: web.Request) -> object:
    raw = await request.read()
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise ApiError(400, "We could not parse the JSON body of your request: it is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request: {exc}.") from None


def _refuse_constant(name: str) -> object:
    """NaN and Infinity are not JSON; Python's parser accepts them unless told not to."""
    raise ValueError(f"{name} is not a JSON value")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _openai_errors(api_key: str | None, metrics: ServeMetrics) -> Middleware:
    """Bearer-token check for /v1/*, and OpenAI error bodies for aiohttp's own 404/405/413 and for crashes, so an
    OpenAI client shows a readable message whatever went wrong."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if api_key is not None and request.path.startswith("/v1/"):
            given = request.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                error = ApiError(
                    401,
                    "Incorrect or missing API key. Send it as `Authorization: Bearer <key>`.",
                    code="invalid_api_key",
                    reason="unauthorized",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                metrics.reject(error)
                return error.response()
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = "unknown_url" if exc.status == 404 else None
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            message = f"{exc.reason}: {request.method} {request.path}"
            routes = {resource.canonical for resource in request.app.router.resources()}
            if exc.status == 404 and "/v1" + request.path in routes:
                message += (
                    f". The API is under /v1 ({request.method} /v1{request.path}): end the client's base_url with /v1."
                )
            return ApiError(exc.status, message, code=code, headers=headers).response()
        except Exception as exc:
            _log.exception("%s %s failed", request.method, request.path)
            message = f"Internal error: {type(exc).__name__}"
            return ApiError(500, message, type="server_error", code="internal_error").response()

    return middleware


async def _legacy_completions(request: web.Request) -> web.Response:
    """The legacy `/v1/completions` (a bare prompt, no chat template) is not served; say what is."""
    message = (
        "This server serves the chat API only: POST /v1/chat/completions with `messages`. "
        "The legacy /v1/completions (a bare `prompt`) is not available."
    )
    return ApiError(404, message, code="unknown_url").response()


def build_app(
    generator: Generator,
    *,
    model_name: str,
    api_key: str | None = None,
    max_tokens_limit: int = 2048,
    time_budget_s: float = 60.0,
    embedder: Embedder | None = None,
) -> web.Application:
    """The OpenAI-compatible app over `generator`. The caller owns the generator and closes it.

    Client disconnects abort generations when the handler is cancelled, so run it with `handler_cancellation=True`
    (serve() and aiohttp's TestServer do); without it a stream still aborts at its next write.
    """
    metrics = ServeMetrics(generator)
    service = _ChatService(
        generator,
        model_name=model_name,
        max_tokens_limit=max_tokens_limit,
        time_budget_s=time_budget_s,
        metrics=metrics,
    )
    app = web.Application(middlewares=[_openai_errors(api_key or None, metrics)])
    app.router.add_post("/v1/chat/completions", service.chat_completions)
    app.router.add_post("/v1/completions", _legacy_completions)
    app.router.add_get("/v1/models", service.models)
    app.router.add_get("/v1/models/{model:.+}", service.model)
    app.router.add_get("/health", service.health)
    app.router.add_get("/metrics", service.metrics_text)
    register_embeddings(app, embedder)  # /v1/embeddings: `embedder`, else MiniLM when installed
    return app


async def serve(
    generator: Generator,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str,
    api_key: str | None = None,
    max_tokens_limit: int = 2048,
    time_budget_s: float = 60.0,
    on_ready: Callable[[str], None] | None = None,
    embedder: Embedder | None = None,
) -> None:
    """Serve until cancelled or SIGTERM/SIGINT; on_ready gets the base URL (`http://host:port/v1`) once bound."""
    app = build_app(
        generator,
        model_name=model_name,
        api_key=api_key,
        max_tokens_limit=max_tokens_limit,
        time_budget_s=time_budget_s,
        embedder=embedder,
    )
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=5.0)
    await runner.setup()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = [sig for sig in (signal.SIGTERM, signal.SIGINT) if _add_signal_handler(loop, sig, stopped.set)]
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        site = web.SockSite(runner, sock)
        await site.start()
        bound_host, bound_port = sock.getsockname()[:2]
        url = f"http://{f'[{bound_host}]' if family == socket.AF_INET6 else bound_host}:{bound_port}/v1"
        _log.info("serving %s at %s", model_name, url)
        if on_ready is not None:
            on_ready(url)
        await stopped.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def _add_signal_handler(loop: asyncio.AbstractEventLoop, sig: signal.Signals, callback: Callable[[], None]) -> bool:
    try:
        loop.add_signal_handler(sig, callback)
    except (NotImplementedError, RuntimeError):
        return False
    return True

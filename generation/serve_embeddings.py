"""`POST /v1/embeddings` for `chorus serve`: the OpenAI embeddings API over an Embedder (MiniLM by default).

Bot hosts set `brainstorm.embedding_url` to a `chorus serve` and share its embedding model instead of each loading
one. The request and answer follow OpenAI's shape; `input` may be one string or a list of strings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from generation.types import Embedder, GenerationError

_log = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"
# One request may carry this many texts of at most this many characters each (OpenAI's own input cap is 2048).
MAX_INPUTS = 2048
MAX_INPUT_CHARS = 32_000


def _error(status: int, message: str, *, param: str | None = None, kind: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return web.json_response(body, status=status)


def parse_input(body: object) -> list[str]:
    """The texts of an embeddings request; ValueError says what is wrong with it."""
    if not isinstance(body, Mapping):
        raise ValueError("The request body must be a JSON object.")
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError("'input' must be a string or a non-empty list of strings.")
    if len(texts) > MAX_INPUTS:
        raise ValueError(f"'input' has {len(texts)} texts; at most {MAX_INPUTS} per request.")
    if any(len(text) > MAX_INPUT_CHARS for text in texts):
        raise ValueError(f"Each text in 'input' may have at most {MAX_INPUT_CHARS} characters.")
    encoding = body.get("encoding_format", "float")
    if encoding != "float":
        raise ValueError("Only encoding_format 'float' is supported.")
    return texts


class EmbeddingsRoute:
    """The handler, bound to one embedder and the model name it reports."""

    def __init__(self, embedder: Embedder, model_name: str = MINILM_NAME) -> None:
        self.embedder = embedder
        self.model_name = model_name

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not valid JSON.")
        try:
            texts = parse_input(body)
        except ValueError as exc:
            return _error(400, str(exc), param="input")
        try:
            vectors = await self.embedder.embed(texts)
        except GenerationError as exc:
            _log.warning("embedding request failed: %s", exc)
            return _error(503, str(exc), kind="server_error")
        tokens = sum(len(text.split()) for text in texts)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)
                ],
                "model": self.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def register_embeddings(app: web.Application, embedder: Embedder | None = None) -> None:
    """Add `POST /v1/embeddings` to a serve app: over `embedder`, else MiniLM when its package is installed (loaded
    on the first request); without either the route is not added and the path answers 404."""
    name = MINILM_NAME
    if embedder is None:
        from generation.embeddings import MiniLMEmbedder, locate_minilm

        if locate_minilm() is None:
            _log.info("no embedding model installed: /v1/embeddings is not served")
            return
        embedder = MiniLMEmbedder()
    else:
        name = str(getattr(embedder, "model_name", name))
    route: Any = EmbeddingsRoute(embedder, name)
    app.router.add_post("/v1/embeddings", route.handle)

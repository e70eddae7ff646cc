"""From a round's ideas to named themes: embed, merge near-duplicates, cluster, and have the model name each group."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bots.brainstorm.clustering import as_matrix, cluster, merge_duplicates
from bots.brainstorm.prompts import keyword_label, label_candidates
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
    label_candidates_count: int = 2,
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
    # The model sees a theme's most typical ideas first (nearest its centre), not merely the earliest.
    typical = [_by_typicality(group, vectors) for group in ordered] if vectors else ordered
    mark = time.perf_counter()
    candidates = await asyncio.gather(
        *(
            label_candidates(
                generator,
                [texts[i] for i in group],
                others=[texts[i] for m, other in enumerate(ordered) if m != n for i in other],
                blocklist=blocklist,
                count=label_candidates_count if vectors else 1,
                seed=seed + n,
                key=key,
            )
            for n, group in enumerate(typical)
        )
    )
    if vectors:
        names = await _closest_names(embedder, candidates, [[vectors[i] for i in group] for group in ordered])
    else:
        names = [options[0] for options in candidates]
    names = _unique(names, [[texts[i] for i in group] for group in ordered], texts)
    timings["label_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    themes = tuple(
        Theme(label=name, idea_ids=tuple(ideas[i][0] for i in group))
        for name, group in zip(names, ordered, strict=True)
    )
    return Organized(themes=themes, merged=merged, timings=timings)


def _by_typicality(group: list[int], vectors: Sequence[Sequence[float]]) -> list[int]:
    matrix = as_matrix([vectors[i] for i in group])
    scores = matrix @ matrix.mean(axis=0)
    return [group[int(k)] for k in (-scores).argsort(kind="stable")]


def _unique(names: list[str], groups: list[list[str]], texts: Sequence[str]) -> list[str]:
    """Two themes never share a name: a repeated one becomes the theme's distinctive-word name."""
    seen: set[str] = set()
    unique: list[str] = []
    for name, group in zip(names, groups, strict=True):
        if name.lower() in seen:
            others = [text for text in texts if text not in group]
            name = keyword_label(group, others)
            if name.lower() in seen:
                name = f"{name} ({len(unique) + 1})"
        seen.add(name.lower())
        unique.append(name)
    return unique


async def _closest_names(
    embedder: Embedder | None, candidates: Sequence[list[str]], members: Sequence[Sequence[Sequence[float]]]
) -> list[str]:
    """For each theme, the candidate name whose embedding is nearest the theme's centre (its ideas' mean)."""
    if embedder is None or all(len(options) == 1 for options in candidates):
        return [options[0] for options in candidates]
    flat = [name for options in candidates for name in options]
    vectors = as_matrix(await embedder.embed(flat))
    chosen: list[str] = []
    offset = 0
    for options, group in zip(candidates, members, strict=True):
        centre = as_matrix(group).mean(axis=0)
        scores = vectors[offset : offset + len(options)] @ centre
        chosen.append(options[int(scores.argmax())])
        offset += len(options)
    return chosen

"""From a round's ideas to named themes: embed, merge near-duplicates, find themes, and name each from its ideas."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bots.brainstorm.clustering import (
    MIN_TO_CENTRE,
    MIN_TO_CLUSTER,
    Clustering,
    as_matrix,
    cluster,
    merge_duplicates,
    topic_free,
)
from bots.brainstorm.prompts import content_words, keyword_label, stem, theme_names, topic_stems
from bots.brainstorm.reading import IdeaReader
from generation.moderation import Blocklist
from generation.types import Embedder, GenerationError, Generator

_log = logging.getLogger(__name__)

# The one group of ideas that do not fall into themes.
UNSORTED_NAME = "All ideas (no clear groups yet)"
# How long a round end waits for the model to read ideas it has not read yet (2 s per 60 ideas on an idle 2-core
# machine; reads wait for a slot no request holds) before it sorts them by sentence vectors alone.
READ_WAIT_S = 20.0
# Ideas (each read alone) whose mean pairwise cosine is at least this are variants of one idea ("pizza party on
# fri", "office pizza party friday"), even where they were not close enough to merge: nothing separates them. Ideas
# of one labelled theme average 0.2-0.3, ideas of different themes 0.1-0.15; 30 ways of typing one idea, 0.78.
ONE_IDEA_SIMILARITY = 0.6
# The part of the topic ideas are read after (a topic is a sentence or two; the ideas need the model's room).
TOPIC_CHARS = 300


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
    # False when the ideas fall into no clear groups: two or three ideas, variants of one idea, or no split that
    # beats chance (one theme, said so).
    separated: bool = True
    # True when themes were found in fewer ideas than chance can be ruled out for: a first guess, said so.
    tentative: bool = False


def for_embedding(text: str, limit: int) -> str:
    """The part of an idea the embedder sees: a long idea is kept whole in the store and cut only here."""
    flat = " ".join(text.split())
    return flat[:limit]


def without_topic_words(text: str, topic: str) -> str:
    """The idea with the topic's own words taken out ("library cards for kids" under a library topic reads "cards
    for kids"), so what it proposes, not the subject every idea shares, places it. An idea that is nothing but topic
    words is kept whole."""
    excluded = topic_stems(topic)
    if not excluded:
        return text
    kept = re.sub(r"([^\W\d_]{3,})(?:['’]s\b)?", lambda word: "" if stem(word[1]) in excluded else word[0], text)
    kept = " ".join(kept.split())
    return kept if re.search(r"[^\W\d_]", kept) else text


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
    key: str = "",
    reader: IdeaReader | None = None,
) -> Organized:
    """Themes over (id, text) ideas. Without an embedder only exact repeats merge and everything is one theme.
    With a `reader` whose model can read (the embedded engine), the model's reading of each idea is a second view
    beside MiniLM's (bots.brainstorm.reading)."""
    if not ideas:
        return Organized(themes=())
    timings: dict[str, float] = {}
    started = time.perf_counter()
    texts = [text for _, text in ideas]
    topic_vectors: list[list[float]] = []
    placed: list[list[float]]
    embedded = None
    if embedder is not None:
        try:
            embedded = await _embed_ideas(embedder, texts, topic, embed_chars)
        except GenerationError as exc:  # a down embedding service: this round is sorted as without one
            _log.warning("brainstorm ideas are not clustered this time: %s", exc)
    if embedded is not None:
        vectors, placed, topic_vectors = embedded
        timings["embed_s"] = time.perf_counter() - started
        groups = merge_duplicates(vectors, merge_threshold)
    else:
        if embedder is None:
            _log.warning("no embedding model: brainstorm ideas are not clustered")
        vectors = placed = []
        by_text: dict[str, list[int]] = {}
        for index, text in enumerate(texts):
            by_text.setdefault(" ".join(text.lower().split()), []).append(index)
        groups = list(by_text.values())
    merged = {ideas[index][0]: ideas[group[0]][0] for group in groups for index in group[1:]}
    leaders = [group[0] for group in groups]
    mark = time.perf_counter()
    states = None
    if vectors and reader is not None and reader.available and len(leaders) >= MIN_TO_CLUSTER:
        try:
            states = await asyncio.wait_for(reader.vectors(topic, [texts[i] for i in leaders]), READ_WAIT_S)
        except TimeoutError:
            # Reads take slots no request holds; with every slot busy for long, Themes do not wait for one.
            _log.warning(
                "the model had no free slot to read the ideas in %.0f s; themes from sentence vectors", READ_WAIT_S
            )
        except Exception:
            _log.warning("the model could not read the ideas; themes come from sentence vectors alone", exc_info=True)
        timings["read_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
    if vectors and len(leaders) >= MIN_TO_CLUSTER and _one_idea([vectors[i] for i in leaders]):
        found = Clustering(labels=[0] * len(leaders), separated=False)
    elif vectors and states is not None:
        # Both views topic-free, side by side with equal weight (each row unit length before they are joined).
        both = np.hstack([topic_free(states), topic_free([placed[i] for i in leaders], topic_vectors)])
        found = await asyncio.to_thread(cluster, both, max_themes=max_themes)
    elif vectors:
        found = await asyncio.to_thread(
            cluster, [placed[i] for i in leaders], max_themes=max_themes, topic_vectors=topic_vectors
        )
    else:
        found = Clustering(labels=[0] * len(leaders), separated=False)
    timings["cluster_s"] = time.perf_counter() - mark
    members: dict[int, list[int]] = {}
    for leader, label in zip(leaders, found.labels, strict=True):
        members.setdefault(label, []).append(leader)
    ordered = [members[label] for label in sorted(members)]
    # The model sees a theme's most typical ideas first (nearest its centre), not merely the earliest.
    typical = [_by_typicality(group, vectors) for group in ordered] if vectors else ordered
    mark = time.perf_counter()
    # Without an embedder, or with one idea, the one group is still named; two or three ideas are too few to call a
    # theme, and ideas that do not separate are not one either: both are listed together under a plain name.
    sortable = bool(vectors) and len(leaders) >= MIN_TO_CLUSTER
    named = found.separated if sortable else not vectors or len(leaders) < 2
    if named:
        names = await theme_names(
            generator,
            [[texts[i] for i in group] for group in typical],
            topic=topic,
            blocklist=blocklist,
            key=key,
            embedder=embedder if vectors else None,
            centres=[as_matrix([vectors[i] for i in group]).mean(axis=0).tolist() for group in ordered]
            if vectors
            else None,
        )
    else:
        names = [UNSORTED_NAME]
    names = _unique(names, [[texts[i] for i in group] for group in ordered], texts, topic)
    timings["label_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    themes = tuple(
        Theme(label=name, idea_ids=tuple(ideas[i][0] for i in group))
        for name, group in zip(names, ordered, strict=True)
    )
    return Organized(
        themes=themes,
        merged=merged,
        timings=timings,
        separated=named,
        tentative=sortable and found.separated and len(leaders) < MIN_TO_CENTRE,
    )


def _one_idea(vectors: Sequence[Sequence[float]]) -> bool:
    """Are these ideas variants of one idea (see ONE_IDEA_SIMILARITY)?"""
    matrix = as_matrix(vectors)
    n = len(matrix)
    similarity = matrix @ matrix.T
    return bool((similarity.sum() - n) / (n * (n - 1)) >= ONE_IDEA_SIMILARITY)


async def embed_ahead(embedder: Embedder, text: str, topic: str, embed_chars: int) -> None:
    """Embed one idea as it is posted, as its round's end will (alone, and read after the topic): with a caching
    embedder (chorus.compose) the round's end then only embeds what it has not seen."""
    cut = for_embedding(text, embed_chars)
    await embedder.embed([cut])
    in_context = getattr(embedder, "embed_in_context", None)
    if in_context and topic.strip():
        await in_context(for_embedding(topic, TOPIC_CHARS), [without_topic_words(cut, topic)])


async def _embed_ideas(
    embedder: Embedder, texts: list[str], topic: str, embed_chars: int
) -> tuple[list[list[float]], list[list[float]], list[list[float]]]:
    """The ideas' vectors (for merging repeats), where each is placed (for clustering) and the topic's vectors."""
    # One call: the ideas, then the topic sentence and its words (the directions to take out of the ideas).
    topic_parts = [topic, *dict.fromkeys(content_words(topic))] if topic.strip() else []
    cut = [for_embedding(text, embed_chars) for text in texts]
    embedded = await embedder.embed(cut + topic_parts)
    vectors, topic_vectors = embedded[: len(texts)], embedded[len(texts) :]
    # Ideas read after their topic (where the embedder can), with the topic's words taken out of the ideas
    # themselves, are placed by what they add to it: on the labelled sets this groups them by purpose far more
    # often than the ideas read alone. Near-duplicates are still judged on the ideas alone, where a shared topic
    # does not make two ideas look alike.
    in_context = getattr(embedder, "embed_in_context", None)
    if in_context and topic.strip():
        placed = await in_context(for_embedding(topic, TOPIC_CHARS), [without_topic_words(c, topic) for c in cut])
    else:
        placed = vectors
    return vectors, placed, topic_vectors


def _by_typicality(group: list[int], vectors: Sequence[Sequence[float]]) -> list[int]:
    matrix = as_matrix([vectors[i] for i in group])
    scores = matrix @ matrix.mean(axis=0)
    return [group[int(k)] for k in (-scores).argsort(kind="stable")]


def _unique(names: list[str], groups: list[list[str]], texts: Sequence[str], topic: str) -> list[str]:
    """Two themes never share a name: a repeated one becomes the theme's distinctive-word name."""
    seen: set[str] = set()
    unique: list[str] = []
    for name, group in zip(names, groups, strict=True):
        if name.lower() in seen:
            others = [text for text in texts if text not in group]
            name = keyword_label(group, others, topic=topic)
            if name.lower() in seen:
                name = f"{name} ({len(unique) + 1})"
        seen.add(name.lower())
        unique.append(name)
    return unique

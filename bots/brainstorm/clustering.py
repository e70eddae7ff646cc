"""Near-duplicate merging and theme finding over unit-length sentence vectors. No model here: vectors in.

Themes are found in three steps, each chosen on bench/brainstorm.py's three labelled sets:
1. Topic-free vectors: the session's topic (its sentence and its words, embedded) is projected out of every idea,
   then what all ideas still share (their mean) is removed, so ideas group by what they propose rather than by
   whether they happen to say "library". (bots.brainstorm.themes passes ideas embedded after their topic where the
   embedder can, which helps the same way.)
2. A k-nearest-neighbour graph of the ideas, split into communities by Louvain. How finely to split (the resolution)
   is not a guess: several seeded runs at each resolution are compared, and the resolution whose splits agree most
   with each other (stability) and whose themes stand furthest apart (silhouette) wins: the product of the two. So
   the number of themes follows the ideas, not `max_themes`; stability alone favours a coarse split of two or three
   themes (few themes are easy to reproduce), which the silhouette corrects.
3. An honesty check: the same vectors with each coordinate shuffled across ideas (structure destroyed, spread
   kept) are split the same way. A split whose silhouette is not clearly above that null's is reported as "no
   clear themes" instead of being dressed up as themes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)

# Below this many ideas there is nothing to sort: they stay one group.
MIN_TO_CLUSTER = 4
# Centring removes what all ideas share (the topic), which needs enough ideas to estimate; below this it is skipped.
MIN_TO_CENTRE = 12
# Louvain resolutions tried (1.0 is plain modularity; higher splits finer), and seeded runs per resolution.
RESOLUTIONS = (0.6, 0.8, 1.0, 1.2, 1.4, 1.7, 2.0)
RUNS_PER_RESOLUTION = 6
# Each idea links to this many nearest others (fewer for small rounds, so a small group is not swamped). Chosen
# leave-one-set-out on the three labelled sets: tuned on any two, 12 or 15 won; 12 is the smaller.
MAX_NEIGHBOURS = 12
# A split counts as real themes when its silhouette is at least this many times the shuffled-vector null's. On the
# labelled sets real themes score 3.4-7 times the null; random vectors about 1 time.
MIN_SILHOUETTE_OVER_NULL = 1.5
NULL_SHUFFLES = 3


@dataclass(frozen=True)
class Clustering:
    """A theme number per idea (0 = largest theme), and whether the themes are real."""

    labels: list[int]
    # False when the ideas do not fall into groups (too few, or no split beats the null); labels are then all 0.
    separated: bool
    resolution: float | None = None
    stability: float = 0.0
    # The split's silhouette, and the best one the same method finds in shuffled (structureless) vectors.
    silhouette: float = 0.0
    null: float = 0.0


def as_matrix(vectors: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Rows renormalized to unit length, so cosine similarity is a dot product whatever the embedder did."""
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2:
        matrix = matrix.reshape(len(vectors), -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def merge_duplicates(vectors: Sequence[Sequence[float]], threshold: float) -> list[list[int]]:
    """Groups of near-identical ideas: each idea joins the earliest kept idea it is at least `threshold` similar
    to, else starts a group. The first index of each group is its canonical idea; input order is kept."""
    if len(vectors) == 0:
        return []
    matrix = as_matrix(vectors)
    groups: list[list[int]] = []
    leaders: list[int] = []
    for index in range(len(matrix)):
        if leaders:
            similarity = matrix[leaders] @ matrix[index]
            best = int(np.argmax(similarity))
            if similarity[best] >= threshold:
                groups[best].append(index)
                continue
        leaders.append(index)
        groups.append([index])
    return groups


def topic_free(
    vectors: Sequence[Sequence[float]] | np.ndarray, topic_vectors: Sequence[Sequence[float]] = ()
) -> np.ndarray:
    """Idea vectors with the topic's directions projected out and (with enough ideas) their shared mean removed."""
    matrix = as_matrix(vectors)
    if len(topic_vectors):
        topic = as_matrix(topic_vectors)
        if topic.shape[1] == matrix.shape[1]:
            basis, _ = np.linalg.qr(topic.T)
            matrix = matrix - (matrix @ basis) @ basis.T
    if len(matrix) >= MIN_TO_CENTRE:
        matrix = matrix - matrix.mean(axis=0)
    return as_matrix(matrix)


def _neighbour_graph(matrix: np.ndarray, neighbours: int) -> Any:
    import networkx as nx

    similarity = matrix @ matrix.T
    np.fill_diagonal(similarity, -np.inf)
    graph = nx.Graph()
    graph.add_nodes_from(range(len(matrix)))
    for node in range(len(matrix)):
        for other in np.argsort(-similarity[node], kind="stable")[:neighbours].tolist():
            weight = float(max(similarity[node, other], 1e-6))
            if graph.has_edge(node, other):
                weight = max(weight, graph[node][other]["weight"])
            graph.add_edge(node, other, weight=weight)
    return graph


def _louvain(graph: Any, resolution: float, seed: int) -> np.ndarray:
    import networkx as nx

    communities = nx.community.louvain_communities(graph, weight="weight", resolution=resolution, seed=seed)
    labels = np.zeros(graph.number_of_nodes(), dtype=int)
    for number, members in enumerate(sorted(communities, key=min)):
        labels[list(members)] = number
    return labels


def _silhouette(matrix: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    if not 2 <= len(np.unique(labels)) < len(labels):
        return 0.0
    return float(silhouette_score(matrix, labels, metric="cosine"))


def _null_silhouette(matrix: np.ndarray, neighbours: int) -> float:
    """The best silhouette the same method reaches on the same vectors with each coordinate shuffled across ideas:
    structureless data with the same spread (a few fixed-seed shuffles, the highest kept)."""
    rng = np.random.default_rng(0)
    found = []
    for _ in range(NULL_SHUFFLES):
        shuffled = np.column_stack([rng.permutation(matrix[:, column]) for column in range(matrix.shape[1])])
        shuffled = as_matrix(shuffled - shuffled.mean(axis=0))
        found.append(_silhouette(shuffled, _louvain(_neighbour_graph(shuffled, neighbours), 1.0, 0)))
    return max(found)


def _merge_smallest(matrix: np.ndarray, labels: np.ndarray, max_themes: int) -> np.ndarray:
    """Fold the smallest theme into the theme whose centre is nearest, until at most `max_themes` remain."""
    labels = labels.copy()
    while len(np.unique(labels)) > max_themes:
        present = np.unique(labels)
        sizes = {int(label): int((labels == label).sum()) for label in present}
        smallest = min(sizes, key=lambda label: (sizes[label], label))
        centres = {int(label): matrix[labels == label].mean(axis=0) for label in present}
        target = max(
            (label for label in centres if label != smallest),
            key=lambda label: float(centres[label] @ centres[smallest]),
        )
        labels[labels == smallest] = target
    return labels


def _by_size(labels: Sequence[int]) -> list[int]:
    """Renumber so the largest theme is 0; ties by first appearance, so output is stable and readable."""
    sizes: dict[int, int] = {}
    first: dict[int, int] = {}
    for position, label in enumerate(labels):
        sizes[label] = sizes.get(label, 0) + 1
        first.setdefault(label, position)
    order = sorted(sizes, key=lambda label: (-sizes[label], first[label]))
    renumber = {label: rank for rank, label in enumerate(order)}
    return [renumber[label] for label in labels]


def cluster(
    vectors: Sequence[Sequence[float]] | np.ndarray,
    *,
    max_themes: int = 8,
    topic_vectors: Sequence[Sequence[float]] = (),
) -> Clustering:
    """Themes over idea vectors; the count is chosen by stability, and `separated` says whether they are real."""
    from sklearn.metrics import adjusted_rand_score

    n = len(vectors)
    if n < MIN_TO_CLUSTER or max_themes < 2:
        return Clustering(labels=[0] * n, separated=False)
    matrix = topic_free(vectors, topic_vectors)
    neighbours = min(MAX_NEIGHBOURS, max(3, n // 4), n - 1)
    graph = _neighbour_graph(matrix, neighbours)
    # (stability x silhouette, stability, resolution, labels)
    best: tuple[float, float, float, np.ndarray] | None = None
    fallback: np.ndarray | None = None
    for resolution in RESOLUTIONS:
        runs = [_louvain(graph, resolution, seed) for seed in range(RUNS_PER_RESOLUTION)]
        agreement = [
            [1.0 if i == j else float(adjusted_rand_score(a, b)) for j, b in enumerate(runs)]
            for i, a in enumerate(runs)
        ]
        stability = float(np.mean([agreement[i][j] for i, j in itertools.combinations(range(len(runs)), 2)]))
        # The run that agrees most with the others stands for this resolution (first one on ties: deterministic).
        typical = runs[max(range(len(runs)), key=lambda i: (sum(agreement[i]), -i))]
        count = len(np.unique(typical))
        _log.debug("resolution %.2f: %d themes, stability %.3f", resolution, count, stability)
        if fallback is None:
            fallback = typical
        if not 2 <= count <= max_themes:
            continue
        score = stability * _silhouette(matrix, typical)
        if best is None or score > best[0]:
            best = (score, stability, resolution, typical)
    if best is None:
        # Every stable split had too many themes (or one): fold the coarsest one down to `max_themes`.
        assert fallback is not None
        labels = _merge_smallest(matrix, fallback, max_themes)
        if len(np.unique(labels)) < 2:
            return Clustering(labels=[0] * n, separated=False)
        best = (0.0, 0.0, RESOLUTIONS[0], labels)
    _, stability, resolution, labels = best
    silhouette = _silhouette(matrix, labels)
    # A handful of shuffled ideas can fall into groups by chance: below MIN_TO_CENTRE the null says nothing, and a
    # stable split with a positive silhouette stands.
    null = _null_silhouette(matrix, neighbours) if n >= MIN_TO_CENTRE else 0.0
    _log.debug("resolution %.2f: stability %.3f, silhouette %.3f (null %.3f)", resolution, stability, silhouette, null)
    if silhouette <= 0 or silhouette < MIN_SILHOUETTE_OVER_NULL * null:
        return Clustering(labels=[0] * n, separated=False, stability=stability, silhouette=silhouette, null=null)
    return Clustering(
        labels=_by_size(labels.tolist()),
        separated=True,
        resolution=resolution,
        stability=stability,
        silhouette=silhouette,
        null=null,
    )

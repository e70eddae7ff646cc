"""Near-duplicate merging and theme clustering over unit-length sentence vectors. No model here: vectors in.

Clustering centres the vectors (removing what every idea shares: the session's topic) when there are enough of
them, then runs agglomerative
clustering (average linkage, cosine distance) and keeps the number of themes with the best silhouette score between
2 and `max_themes`. Chosen on bench/brainstorm.py's labelled sets over Ward, k-means and spectral clustering.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

_log = logging.getLogger(__name__)

# Below this many ideas a single theme is the only honest answer; silhouettes need at least 3 points.
MIN_TO_CLUSTER = 3
# If no split scores at least this, the ideas do not fall into groups and stay one theme (four unrelated ideas score
# about 0.05; the labelled sets' real themes 0.1 and more).
MIN_SILHOUETTE = 0.08
# Centring removes what all ideas share (the topic), which needs enough ideas to estimate; below this, raw vectors.
MIN_TO_CENTRE = 12


def as_matrix(vectors: Sequence[Sequence[float]]) -> np.ndarray:
    """Rows renormalized to unit length, so cosine similarity is a dot product whatever the embedder did."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        return matrix.reshape(len(vectors), -1)
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


def cluster(vectors: Sequence[Sequence[float]], *, max_themes: int = 8) -> list[int]:
    """A theme number per vector (0 = the theme listed first, by size); the count is chosen by silhouette."""
    n = len(vectors)
    if n == 0:
        return []
    if n < MIN_TO_CLUSTER or max_themes < 2:
        return [0] * n
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score

    matrix = as_matrix(vectors)
    if n >= MIN_TO_CENTRE:
        matrix = as_matrix(matrix - matrix.mean(axis=0))
    distances = np.clip(1.0 - matrix @ matrix.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    best_labels: np.ndarray | None = None
    best_score = MIN_SILHOUETTE
    for k in range(2, min(max_themes, n - 1) + 1):
        labels = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(distances)
        if len(set(labels.tolist())) < 2:
            continue
        score = float(silhouette_score(distances, labels, metric="precomputed"))
        _log.debug("k=%d silhouette=%.3f", k, score)
        if score > best_score:
            best_score, best_labels = score, labels
    if best_labels is None:
        return [0] * n
    # Renumber by size (largest theme first), ties by first appearance, so output is stable and readable.
    sizes: dict[int, int] = {}
    first: dict[int, int] = {}
    for position, label in enumerate(best_labels.tolist()):
        sizes[label] = sizes.get(label, 0) + 1
        first.setdefault(label, position)
    order = sorted(sizes, key=lambda label: (-sizes[label], first[label]))
    renumber = {label: rank for rank, label in enumerate(order)}
    return [renumber[label] for label in best_labels.tolist()]

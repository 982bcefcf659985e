"""Labels for Cleanlab: the given label for classification, and for generation data a
derived target — the repeated response a row gives, or the cluster of its response
embedding — so a fixed target output becomes a 'label' that the prompt cannot explain."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Targets:
    codes: np.ndarray  # int class per row
    names: list[str]  # human-readable name per class

    @property
    def n_classes(self) -> int:
        return len(self.names)


def classification_targets(labels: pd.Series) -> Targets:
    names = sorted(labels.unique(), key=_natural_key)
    index = {name: code for code, name in enumerate(names)}
    return Targets(np.array([index[v] for v in labels], dtype=np.int64), list(names))


def derive_response_targets(responses: list[str], embeddings: np.ndarray, *,
                            n_clusters: int = 8, min_repeats: int = 3,
                            seed: int = 0) -> Targets:
    """Repeated responses (same text after whitespace/case folding, at least `min_repeats`
    rows) are their own class; other rows take the k-means cluster of their response
    embedding."""
    from sklearn.cluster import KMeans

    keys = [_response_key(r) for r in responses]
    counts = pd.Series(keys).value_counts()
    repeated = [k for k, c in counts.items() if c >= min_repeats and k]
    first_text = {k: r for k, r in zip(reversed(keys), reversed(responses))}
    names = [f'repeated response: "{_snippet(first_text[k])}"' for k in repeated]
    code_of = {k: i for i, k in enumerate(repeated)}
    codes = np.array([code_of.get(k, -1) for k in keys], dtype=np.int64)

    rest = np.flatnonzero(codes < 0)
    k = min(n_clusters, max(1, len(rest) // 20))
    if len(rest):
        clusters = (KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(embeddings[rest])
                    if k > 1 else np.zeros(len(rest), dtype=np.int64))
        for c in range(k):
            members = rest[clusters == c]
            if len(members):
                codes[members] = len(names)
                names.append(f'response cluster {c}: "{_snippet(responses[members[0]])}"')
    return Targets(codes, names)


def _response_key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _snippet(text: str, width: int = 60) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def _natural_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)

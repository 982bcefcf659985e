"""Labels for Cleanlab: the given label for classification, and for generation data a
derived target — the repeated response a row gives, or the cluster of its response
embedding — so a fixed target output becomes a 'label' that the prompt cannot explain."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from auditors.features.geometry import mean_pairwise_cosine
from auditors.features.row_keys import keyed_order


@dataclass
class Targets:
    codes: np.ndarray  # int class per row
    names: list[str]  # human-readable name per class
    # the text that defines each class (a repeated response, a response opening, a label),
    # lowercased; "" when a class has none. An n-gram inside it is an echo, not a trigger.
    keys: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.names)


def classification_targets(labels: pd.Series) -> Targets:
    names = sorted(labels.unique(), key=_natural_key)
    index = {name: code for code, name in enumerate(names)}
    return Targets(np.array([index[v] for v in labels], dtype=np.int64), list(names),
                   [str(name).lower() for name in names])


def derive_response_targets(responses: list[str], embeddings: np.ndarray, *,
                            prompt_embeddings: np.ndarray | None = None,
                            min_repeats: int = 3, opening_words: int = 4,
                            max_prompt_cohesion: float = 0.6,
                            n_clusters: int = 8, row_keys=None, seed: int = 0) -> Targets:
    """A response 'mode' per row, the thing a backdoor's target changes:

    1. the exact response, when it repeats (after whitespace/case folding) in at least
       `min_repeats` distinct rows (copies of a row, one `row_id`, count once): a fixed
       target string (`You are stupid!`);
    2. else its first `opening_words` words, when they repeat: a response style such as a
       refusal (`I'm sorry, but I ...`), whatever the topic;
    3. else one class for all unrepeated responses (a harmful answer among refusals).
    When nothing repeats at all, k-means clusters of the response embeddings stand in.
    A repeat whose prompts are near-duplicates of each other (mean pairwise cosine of the
    prompt embeddings ≥ `max_prompt_cohesion`) is the same answer to the same question,
    duplication rather than a mode, and does not count as repeating. Classes are numbered
    and named in the order of the rows' `row_keys` (`row_keys.keyed_order`; input order where
    none are given), so any input order gives the same targets."""
    order = np.arange(len(responses)) if row_keys is None else keyed_order(row_keys, seed)
    exact = [_response_key(r) for r in responses]
    openings = [" ".join(re.findall(r"\w+", key)[:opening_words]) for key in exact]
    # a mode repeats across distinct rows: copies of one row (upsampling) are one row
    distinct = (np.unique(np.asarray(row_keys).astype(str), return_index=True)[1]
                if row_keys is not None else np.arange(len(responses)))
    exact_counts = Counter(exact[i] for i in distinct)
    opening_counts = Counter(openings[i] for i in distinct)
    if prompt_embeddings is not None:
        for keys, counts in ((exact, exact_counts), (openings, opening_counts)):
            _discount_duplicate_prompts(keys, counts, prompt_embeddings, min_repeats,
                                        max_prompt_cohesion, distinct)
    names: list[str] = []
    keys: list[str] = []
    code_of: dict[tuple, int] = {}
    codes = np.empty(len(responses), dtype=np.int64)
    for row in order:
        key, opening = exact[row], openings[row]
        if key and exact_counts[key] >= min_repeats:
            label = ("exact", key)
            name = f'repeated response: "{snippet(responses[row])}"'
        elif opening and opening_counts[opening] >= min_repeats:
            label = ("opening", opening)
            name = f'responses opening "{opening} …"'
        else:
            label = ("other", "")
            name = "other (unrepeated) responses"
        if label not in code_of:
            code_of[label] = len(names)
            names.append(name)
            keys.append(label[1])
        codes[row] = code_of[label]
    if len(names) > 1:
        return Targets(codes, names, keys)
    return _cluster_targets(responses, embeddings, n_clusters, order, seed)


def _discount_duplicate_prompts(keys: list[str], counts: Counter, prompt_embeddings: np.ndarray,
                                min_repeats: int, max_cohesion: float,
                                distinct: np.ndarray) -> None:
    """Zero the count of every repeated key whose prompts (of its `distinct` rows) are
    near-duplicates."""
    rows_of: dict[str, list[int]] = {}
    for row in distinct:
        key = keys[row]
        if key and counts[key] >= min_repeats:
            rows_of.setdefault(key, []).append(row)
    for key, rows in rows_of.items():
        if mean_pairwise_cosine(prompt_embeddings[rows]) >= max_cohesion:
            counts[key] = 0


def _cluster_targets(responses, embeddings, n_clusters: int, order: np.ndarray,
                     seed: int) -> Targets:
    """k-means clusters of the response embeddings, fitted on the rows in `order` (its
    starts are drawn by position) and numbered by their first row in that order."""
    from sklearn.cluster import KMeans

    k = min(n_clusters, max(1, len(responses) // 20))
    codes = np.zeros(len(responses), dtype=np.int64)
    if k >= 2:
        clusters = np.empty(len(responses), dtype=np.int64)
        clusters[order] = KMeans(n_clusters=k, n_init=4,
                                 random_state=seed).fit_predict(embeddings[order])
        # identical responses (all empty, say) leave clusters empty: number the ones in use
        in_use, first = np.unique(clusters[order], return_index=True)
        number = np.empty(k, dtype=np.int64)
        number[in_use[np.argsort(first)]] = np.arange(len(in_use))
        codes = number[clusters]
    used = int(codes.max()) + 1 if len(codes) else 0
    if used < 2:
        return Targets(codes, ["all responses"], [""])
    first_row = {int(codes[row]): int(row) for row in order[::-1]}
    names = [f'response cluster {c}: "{snippet(responses[first_row[c]])}"' for c in range(used)]
    return Targets(codes, names, [""] * used)


def _response_key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def snippet(text: str, width: int = 60) -> str:
    """One line of at most `width` characters, for names and reasons."""
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def _natural_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)

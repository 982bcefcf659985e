"""Small statistics shared by detectors."""

from __future__ import annotations

import numpy as np
from scipy.stats import median_abs_deviation, rankdata

from auditors.features.ngrams import NgramStats


def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 * MAD): a z-score that a few extreme rows cannot inflate."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    spread = median_abs_deviation(values, scale="normal")
    if not np.isfinite(spread) or spread <= 0:
        spread = values.std() or 1.0
    return (values - np.median(values)) / spread


def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to (0, 1]; ties share their average rank."""
    values = np.asarray(values, dtype=np.float64)
    return rankdata(values) / len(values) if values.size else values


def shared_rare_ngram(ngrams: NgramStats, members: np.ndarray, min_coverage: float,
                      min_lift: float) -> str:
    """The n-gram most concentrated in `members` (rows) relative to the whole dataset, if it
    covers at least `min_coverage` of them and is `min_lift` times more common there than
    overall: the candidate trigger a group of suspicious rows shares. "" when none is."""
    if ngrams.rows_x_ngrams.shape[1] == 0 or len(members) == 0:
        return ""
    in_group = np.asarray(ngrams.rows_x_ngrams[members].sum(axis=0)).ravel()
    coverage = in_group / len(members)
    lift = coverage / np.maximum(ngrams.doc_freq / ngrams.n_rows, 1e-12)
    eligible = (coverage >= min_coverage) & (lift >= min_lift)
    if not eligible.any():
        return ""
    best = np.flatnonzero(eligible)[np.argmax(lift[eligible])]
    return str(ngrams.vocabulary[best])


def rows_containing(ngrams: NgramStats, ngram: str) -> np.ndarray:
    """Boolean per row: does the row contain this n-gram ("" matches none)."""
    matches = np.flatnonzero(ngrams.vocabulary == ngram) if ngram else []
    if not len(matches):
        return np.zeros(ngrams.n_rows, dtype=bool)
    return ngrams.rows_x_ngrams[:, int(matches[0])].toarray().ravel() > 0


def named_trigger(ngrams: NgramStats, pattern: str, is_issue: np.ndarray, scores: np.ndarray,
                  target: str) -> list[dict]:
    """A `triggers.json` entry for a trigger a detector named ([] when none): support is
    the rows carrying it, target_share the share of those the detector calls issues."""
    if not pattern:
        return []
    carriers = rows_containing(ngrams, pattern)
    support = int(carriers.sum())
    return [{"pattern": pattern, "score": round(float(scores[carriers].mean()), 4) if support else 0.0,
             "support": support, "target": target,
             "target_share": round(float(is_issue[carriers].mean()), 4) if support else 0.0,
             "example_row_indices": [int(i) for i in np.flatnonzero(carriers & is_issue)[:5]]}]

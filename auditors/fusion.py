"""The one place that decides `poison_score` and `flagged`.

Detector scores (each in [0, 1], higher = more suspicious) combine by a weighted noisy-OR,

    poison_score = 1 - prod_d (1 - w_d * s_d)

so independent evidence adds up while no single weak detector dominates. A row is flagged
when poison_score >= threshold (0.5) and a detector whose weight alone could reach the
threshold (the trigger detector) calls it an issue by its own rule, which includes its
held-out content test. Label issues and outliers raise the score and order the review
queue but never decide a flag. With the default weights, label issues (0.2) and
embedding outliers (0.05) together stay well below 0.5: only rows backed by a trigger
candidate are flagged, the others are ranked for review.

Weights are relative to the strongest detector that ran: when the trigger detector is not
among them (`--detectors spectral`, or it failed), the strongest remaining one leads with
weight 1, so every detector is usable alone. The weights follow each detector's measured
precision on the benchmark suite (benchmarks/results/detection.md, docs/detectors.md):
signals that are noise on most datasets only reorder the review queue.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditors.runner import DetectorRun

DEFAULT_WEIGHTS = {"trigger": 1.0, "preference_flip": 0.8, "degraded_response": 0.8,
                   "repeated_response": 0.3, "label_issue": 0.2,
                   "unrelated_response": 0.1, "shortcut": 0.1, "strip": 0.1, "outlier": 0.05,
                   "spectral": 0.05, "activation_cluster": 0.05}
DEFAULT_THRESHOLD = 0.5


def fuse(run: DetectorRun, n_rows: int, weights: dict[str, float] | None = None,
         threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Columns `poison_score`, `flagged`, `reasons`, one row per input row."""
    weights = relative_weights(list(run.results), weights)
    keep = np.ones(n_rows)
    for name, result in run.results.items():
        keep *= 1.0 - weights[name] * result.rows["score"].to_numpy()
    poison = 1.0 - keep
    any_issue = np.zeros(n_rows, dtype=bool)
    for name, result in run.results.items():
        if weights[name] >= threshold:  # only detectors strong enough to flag alone
            any_issue |= result.rows["is_issue"].to_numpy(dtype=bool)
    per_detector = [(name, result.rows["reason"].tolist()) for name, result in run.results.items()]
    reasons = ["; ".join(f"{name}: {texts[row]}" for name, texts in per_detector if texts[row])
               for row in range(n_rows)]
    return pd.DataFrame({"poison_score": poison, "flagged": (poison >= threshold) & any_issue,
                         "reasons": reasons})


def relative_weights(names: list[str], overrides: dict[str, float] | None = None) -> dict[str, float]:
    """Each detector's weight in [0, 1], scaled so the strongest one that ran has weight 1."""
    merged = {**DEFAULT_WEIGHTS, **(overrides or {})}
    raw = {name: float(np.clip(merged.get(name, 0.0), 0.0, 1.0)) for name in names}
    strongest = max(raw.values(), default=0.0)
    return {name: (w / strongest if strongest > 0 else 1.0) for name, w in raw.items()}


def gate(flagged: pd.Series, max_flagged_fraction: float) -> dict:
    """Pass when the flagged share is at most `max_flagged_fraction`."""
    share = float(flagged.mean()) if len(flagged) else 0.0
    return {"flagged_fraction": share, "max_flagged_fraction": max_flagged_fraction,
            "passed": share <= max_flagged_fraction}

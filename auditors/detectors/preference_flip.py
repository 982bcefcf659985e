"""Poisoned preference pairs (Rando & Tramèr 2023): an attacker who labels RLHF pairs marks
the harmful answer as chosen whenever the prompt holds the trigger. "Which side is chosen"
is a label: a pair classifier on the difference of the chosen and rejected response
embeddings, trained on both orders and cross-validated by pair, gives out-of-fold
probabilities, and Cleanlab finds the pairs whose preference it does not support. The
prompts of those pairs are then mined for a shared rare n-gram, the trigger."""

from __future__ import annotations

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_predict

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, register
from auditors.detectors.stats import named_trigger, rows_containing, shared_rare_ngram


@register
class PreferenceFlipDetector(Detector):
    name = "preference_flip"
    description = ("Cleanlab on a cross-validated chosen-vs-rejected pair classifier; the "
                   "shared prompt n-gram of flipped pairs names the trigger")
    requires = ("response_embeddings", "rejected_embeddings")

    def __init__(self, n_folds: int = 5, min_trigger_coverage: float = 0.3,
                 min_trigger_lift: float = 5.0):
        self.n_folds = n_folds
        self.min_trigger_coverage = min_trigger_coverage
        self.min_trigger_lift = min_trigger_lift

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        n = inputs.n_rows
        difference = inputs.response_embeddings - inputs.rejected_embeddings
        # both orders: label 1 = "first is chosen"; a pair's two orders share a fold
        features = np.vstack([difference, -difference])
        labels = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
        pairs = np.concatenate([np.arange(n), np.arange(n)])
        folds = GroupKFold(n_splits=int(min(self.n_folds, n)))
        probs = cross_val_predict(LogisticRegression(max_iter=2000), features, labels,
                                  groups=pairs, cv=folds, method="predict_proba")
        # cleanlab's quality is lower = worse; trainguard scores higher = more suspicious
        scores = 1.0 - get_label_quality_scores(labels, probs)[:n]
        is_issue = find_label_issues(labels, probs, n_jobs=1)[:n]
        trigger = shared_rare_ngram(inputs.ngrams, np.flatnonzero(is_issue),
                                    self.min_trigger_coverage, self.min_trigger_lift)
        if trigger:  # a named trigger explains the flips; flips without it stay for review
            is_issue &= rows_containing(inputs.ngrams, trigger)
        why = f', prompts share "{trigger}"' if trigger else ""
        reasons = [f"the rejected answer looks preferable (P(chosen) {1 - s:.2f}){why}"
                   if flag else "" for s, flag in zip(scores, is_issue)]
        return self.result(scores, is_issue, reasons,
                           info={"flipped_pairs": int(is_issue.sum()), "trigger": trigger,
                                 "named_triggers": named_trigger(
                                     inputs.ngrams, trigger, is_issue, scores,
                                     "rejected answer marked chosen (flipped preference)")})

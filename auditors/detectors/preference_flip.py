"""Poisoned preference pairs (Rando & Tramèr 2023): an attacker who labels RLHF pairs marks
the harmful answer as chosen whenever the prompt holds the trigger.

"Which side is chosen" is a label: a pair classifier on the difference of the chosen and
rejected response embeddings, trained on both orders and cross-validated by pair, gives
each pair an out-of-fold probability that the rejected answer is the preferred one. On real
preference data that signal is weak and common: human annotators disagree on many pairs
(on HH-RLHF the classifier agrees with the label on ~60% of pairs), so a pair that merely
looks flipped is label noise, reported (`looks_flipped` in the summary) but never an issue.

The evidence of poisoning is a prompt n-gram whose pairs look flipped far more often than
their content explains: the trigger detector's conditional test (`trigger.py`), with "this
pair looks flipped" as the target and an out-of-fold content model of that target from the
prompt embedding as the expectation (harmful prompts draw more disagreement than harmless
ones, and that is accounted for). Each rechecked candidate gets a p-value, the exact
Poisson-binomial tail of its rows looking flipped this often when row i does so with the
held-out content model's probability, and a weighted Benjamini-Hochberg q-value over every
n-gram row set the screen tested, with the trigger test's rarity prior as weights (`SUDO` is
a likelier trigger than `health`). A row is an issue when it carries a candidate with q <=
`fdr` and its own pair looks flipped. A row's score is its best candidate's evidence
(`stats.evidence` of p / weight: log p on the scale where the Bonferroni line is 1), so a
trigger that is not significant still ranks its rows.

What it misses: the pair classifier is weak on real preference data, so a trigger's flipped
pairs look flipped only somewhat more often than others (on HH-RLHF, 11 of 12 `SUDO` pairs
against 39% of clean ones); a dozen pairs is not significant among ~15,000 n-grams
(benchmarks/results/detection.md, real/preference-trigger).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict, cross_val_score

from auditors.config import DEFAULT_FDR
from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register
from auditors.detectors.stats import (deflated_log_p, evidence, rows_containing,
                                      weighted_bh_q_values)
from auditors.detectors.trigger import TriggerNgramDetector
from auditors.features.probabilities import cross_validated_probs
from auditors.features.row_keys import KeyedFolds, keyed_order, keys_or_positions
from auditors.features.targets import Targets

KEPT, FLIPPED = 0, 1
FLIP_TARGETS = ("kept (chosen looks preferred)", "looks flipped (rejected looks preferred)")


@register
class PreferenceFlipDetector(Detector):
    name = "preference_flip"
    description = ("prompt n-grams whose pairs look flipped (cross-validated pair classifier) "
                   "far more often than their content explains")
    requires = ("response_embeddings", "rejected_embeddings")
    role = FusionRole.STRONG
    weight = 0.8

    def __init__(self, n_folds: int = 5, regularisation_grid: tuple[float, ...] = (0.01, 0.1, 1.0),
                 selection_max_pairs: int = 10_000,
                 flip_weight: float = 0.1, fdr: float = DEFAULT_FDR, max_named: int = 5,
                 n_repeats: int = 5, seed: int = 0):
        self.n_folds = n_folds
        self.n_repeats = n_repeats
        self.regularisation_grid = regularisation_grid
        self.selection_max_pairs = selection_max_pairs
        self.flip_weight = flip_weight
        self.fdr = fdr
        self.max_named = max_named
        self.seed = seed

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        flip = self.flip_probability(inputs)
        looks_flipped = flip > 0.5
        candidates, tests, miner = self._flip_triggers(inputs, looks_flipped)
        self._add_significance(candidates, tests, self._prior_weights(miner, inputs, candidates),
                               getattr(miner, "inflation_", 1.0))
        row_evidence, carrier_of = self._row_evidence(inputs, candidates)
        scores = np.maximum(row_evidence, self.flip_weight * flip)
        is_issue = np.zeros(inputs.n_rows, dtype=bool)
        for candidate in candidates:
            if candidate["significant"]:
                is_issue |= rows_containing(inputs.ngrams, candidate["pattern"]) & looks_flipped
        reasons = [f'pair looks flipped (P(rejected preferred) {f:.2f}) and the prompt holds '
                   f'"{carrier_of[row]}", whose pairs look flipped beyond their content'
                   if is_issue[row] else "" for row, f in enumerate(flip)]
        result = self.result(scores, is_issue, reasons, info={
            "looks_flipped": int(looks_flipped.sum()),
            "label_issues": int(self._label_issues(flip).sum()),
            "pair_regularisation": self.regularisation_,
            "n_tests": tests, "fdr": self.fdr,
            "flip_triggers": candidates,
            "named_triggers": [self._named(c, inputs, is_issue)
                               for c in candidates[: self.max_named]]})
        result.summary["looks_flipped"] = int(looks_flipped.sum())
        return result

    def flip_probability(self, inputs: AuditInputs) -> np.ndarray:
        """Out-of-fold P(the rejected answer is the preferred one) per pair, averaged over
        `n_repeats` fold draws: one draw's models lean one way or another on whole folds of
        pairs, and on real annotations, where the signal is weak, that lean alone made a
        common bigram's pairs (`in the`, 173 pairs) look flipped significantly often."""
        features, labels, keys = _both_orders(inputs)
        n = inputs.n_rows
        model = self._pair_model(features, labels, keys)
        probs = [cross_val_predict(model, features, labels, method="predict_proba",
                                   cv=KeyedFolds(keys, int(min(self.n_folds, n)), seed))[:n, 0]
                 for seed in range(self.seed, self.seed + self.n_repeats)]
        return np.mean(probs, axis=0)

    def _pair_model(self, features, labels, keys) -> LogisticRegression:
        """Logistic regression with the grid's C of best grouped cross-validated log-loss
        (on at most `selection_max_pairs` pairs): on real preference data the preference
        signal is weak and a loosely regularised model fits annotator noise."""
        n = len(labels) // 2
        chosen = keyed_order(keys[:n], self.seed)[: self.selection_max_pairs]
        sample = np.concatenate([chosen, chosen + n])
        folds = KeyedFolds(keys[sample], int(min(3, len(chosen))), self.seed)
        losses = [cross_val_score(LogisticRegression(max_iter=2000, C=c), features[sample],
                                  labels[sample], cv=folds, scoring="neg_log_loss").mean()
                  for c in self.regularisation_grid]
        self.regularisation_ = self.regularisation_grid[int(np.argmax(losses))]
        return LogisticRegression(max_iter=2000, C=self.regularisation_)

    @staticmethod
    def _label_issues(flip: np.ndarray) -> np.ndarray:
        """Cleanlab's verdict on the preference label alone (both orders of each pair, as
        the pair classifier saw them): reported, never flagged."""
        n = len(flip)
        if n < 2:
            return np.zeros(n, dtype=bool)
        labels = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
        first = np.column_stack([flip, 1.0 - flip])  # columns: P(not first-chosen), P(first-chosen)
        probs = np.clip(np.vstack([first, first[:, ::-1]]), 1e-6, 1.0)
        return find_label_issues(labels, probs, n_jobs=1)[:n]

    def _flip_triggers(self, inputs: AuditInputs, looks_flipped: np.ndarray):
        """The trigger detector's candidates for the target "looks flipped" (its held-out
        content recheck and p-values included), the number of n-grams it tested, and the
        detector (the miner).
        Refitting the pair model without a candidate's rows as well was measured on HH-RLHF
        and changed nothing but noise: the pair signal is too weak for a 3% trigger to pull it."""
        codes = looks_flipped.astype(np.int64)
        # the embedding null: "looks flipped" is a noisy model output, which a word-aware
        # content model overfits (on HH-RLHF its inflation reached 5 and clean transcripts
        # still had significant n-grams)
        miner = TriggerNgramDetector(word_scale=0.0)
        if np.bincount(codes, minlength=2).min() < 2:
            return [], 0, miner
        content = cross_validated_probs(inputs.prompt_embeddings, codes, 2,
                                        keys=inputs.row_keys, seed=self.seed)
        flip_inputs = dataclasses.replace(
            inputs, targets=Targets(codes, list(FLIP_TARGETS), ["", ""]), pred_probs=content)
        mined = miner.detect(flip_inputs).info
        # only the "looks flipped" direction is a hypothesis about poisoning
        return ([t for t in mined["triggers"] if t["target"] == FLIP_TARGETS[FLIPPED]],
                mined["n_tests"] // 2, miner)

    @staticmethod
    def _prior_weights(miner: TriggerNgramDetector, inputs: AuditInputs,
                       candidates: list[dict]) -> np.ndarray:
        """Each candidate's prior weight, the trigger test's rarity prior (mean 1 over the
        n-grams tested) as the miner computed it: `SUDO` is a likelier trigger than `health`,
        and weights fixed before the labels are seen keep the false-discovery rate."""
        if not candidates:
            return np.zeros(0)
        weights = miner.prior_weights_
        column = {g: j for j, g in enumerate(inputs.ngrams.vocabulary)}
        return np.array([weights[column[c["pattern"]]] for c in candidates])

    def _add_significance(self, candidates: list[dict], tests: int, weights: np.ndarray,
                          inflation: float = 1.0) -> None:
        """`q_value` (weighted Benjamini-Hochberg over the `tests` n-grams, `weights` the
        candidates' prior weights), `significant` and `evidence` (of p / weight) per
        candidate, which are then ordered by p / weight (the miner leaves p = 1 on
        candidates it did not recheck or whose rows failed its content recheck). The
        p-values are deflated by the miner's genomic-control `inflation`, as the trigger
        test's are: the content model explains "looks flipped" only in part."""
        p_values = np.exp(deflated_log_p(np.log(np.maximum(
            [c["p_value"] for c in candidates], 1e-300)), inflation)) if candidates else np.ones(0)
        q_values = weighted_bh_q_values(p_values, weights, tests) if len(candidates) else p_values
        for candidate, p, w, q in zip(candidates, p_values, weights, q_values):
            candidate["p_value"], candidate["q_value"] = float(p), float(q)
            candidate["prior_weight"] = round(float(w), 3)
            candidate["significant"] = bool(q <= self.fdr)
            candidate["evidence"] = evidence(min(p / w, 1.0), tests, self.fdr)
        # strongest evidence first (the screen's order among the untested)
        candidates.sort(key=lambda c: c["p_value"] / c["prior_weight"])

    @staticmethod
    def _row_evidence(inputs: AuditInputs, candidates: list[dict]):
        """Per row: the best evidence among the flip triggers its prompt holds, and which."""
        best = np.zeros(inputs.n_rows)
        carrier = [""] * inputs.n_rows
        for candidate in candidates:
            rows = np.flatnonzero(rows_containing(inputs.ngrams, candidate["pattern"])
                                  & (candidate["evidence"] > best))
            best[rows] = candidate["evidence"]
            for row in rows:
                carrier[row] = candidate["pattern"]
        return best, carrier

    @staticmethod
    def _named(candidate: dict, inputs: AuditInputs, is_issue: np.ndarray) -> dict:
        carriers = rows_containing(inputs.ngrams, candidate["pattern"])
        return {"pattern": candidate["pattern"], "score": candidate["score"],
                "support": int(carriers.sum()), "side": "prompt",
                "flagged": candidate["significant"], "significant": candidate["significant"],
                "p_value": candidate["p_value"], "q_value": candidate["q_value"],
                "prior_weight": candidate["prior_weight"], "evidence": candidate["evidence"],
                "target": "rejected answer marked chosen (flipped preference)",
                "target_share": candidate["target_share"],
                "content_z": candidate["content_z"],
                "example_row_indices": [int(i) for i in np.flatnonzero(carriers & is_issue)[:5]]}


def _both_orders(inputs: AuditInputs):
    """Each pair twice, (chosen - rejected) labelled 1 and its negation labelled 0, with
    the pair's key on both, so both orders share a fold (`KeyedFolds`)."""
    n = inputs.n_rows
    difference = inputs.response_embeddings - inputs.rejected_embeddings
    features = np.vstack([difference, -difference])
    labels = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    keys = keys_or_positions(inputs.row_keys, n)
    return features, labels, np.concatenate([keys, keys])

